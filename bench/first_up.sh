#!/usr/bin/env bash
# The first `make up` on a fresh clone with a cold uv cache: seconds until "AgentMesh is up",
# and the size of the .venv it installed. Usage: bench/first_up.sh [git-rev] [port]
# (downloads every locked wheel into a scratch cache; deletes the clone and cache after).
set -euo pipefail
rev="${1:-HEAD}"
port="${2:-18090}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'pkill -INT -f "agentmesh up --port $port" || true; sleep 5; rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
git checkout -q "$rev"
export UV_CACHE_DIR="$work/uv-cache"
start=$(date +%s.%N)
make up ARGS="--port $port" >"$work/up.log" 2>&1 &
pid=$!
until grep -q "AgentMesh is up" "$work/up.log"; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/up.log"; exit 1; }
  sleep 0.5
done
end=$(date +%s.%N)
printf 'first make up (%s): %.1f s to ready, .venv %s\n' "$rev" \
  "$(echo "$end - $start" | bc)" "$(du -sh .venv | cut -f1)"
