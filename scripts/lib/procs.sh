# Shared by scripts/*: stopping processes listed in a pids file ("PID NAME" lines, as
# devtools/launcher/process.py writes them). Only processes that still run swarm-llm's node
# (python -m node.cli) are signalled, so a recycled pid is never hit.
# Usage: source scripts/lib/procs.sh; stop_listed_processes FILE

# _running PID: true while PID exists and is not a zombie
_running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != "Z" ]
}

stop_listed_processes() {
  local file=$1 pid _name left=() still
  [ -f "$file" ] || return 0
  while read -r pid _name; do
    if _running "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "node.cli"; then
      kill -TERM "$pid" 2>/dev/null && left+=("$pid")
    fi
  done <"$file"
  [ ${#left[@]} -eq 0 ] && return 0
  echo "==> Stopping ${#left[@]} leftover swarm processes ..." >&2
  for _ in $(seq 100); do
    still=()
    for pid in "${left[@]}"; do _running "$pid" && still+=("$pid"); done
    [ ${#still[@]} -eq 0 ] && return 0
    sleep 0.2
  done
  kill -KILL "${still[@]}" 2>/dev/null || true
}
