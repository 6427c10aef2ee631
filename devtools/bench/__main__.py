"""`python -m devtools.bench [SUBCOMMAND] [ARGS...]`: runs devtools.bench.<SUBCOMMAND>.main(ARGS)."""

from __future__ import annotations

import importlib
import importlib.util
import sys

from devtools.bench import DEFAULT_SUBCOMMAND, SUBCOMMANDS


def usage() -> str:
    lines = ["usage: scripts/bench [SUBCOMMAND] [ARGS...]  (default: local; SUBCOMMAND --help for more)", ""]
    for name, what in SUBCOMMANDS.items():
        ready = importlib.util.find_spec(f"devtools.bench.{name}") is not None
        lines.append(f"  {name:<8}{what}{'' if ready else '  (not available yet)'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = args.pop(0) if args and not args[0].startswith("-") else DEFAULT_SUBCOMMAND
    if name not in SUBCOMMANDS or importlib.util.find_spec(f"devtools.bench.{name}") is None:
        print(f"unknown or unavailable benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"devtools.bench.{name}")
    return int(module.main(args))


if __name__ == "__main__":
    sys.exit(main())
