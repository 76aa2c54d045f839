#!/usr/bin/env bash
# Run a command while holding the machine-wide lock for heavy work (notebook
# execution, book builds), so that two of them never share the two cores.
#
#   tools/locked.sh CMD [ARGS...]
#
# The lock file is $LLMCOURSE_LOCK (default /tmp/llmcourse-heavy.lock). If the
# lock is already held by this process tree (a make target called from another
# one, or `flock /tmp/llmcourse-heavy.lock make test`), the command runs
# directly instead of waiting for itself forever.
set -euo pipefail
lock=${LLMCOURSE_LOCK:-/tmp/llmcourse-heavy.lock}

if [ -n "${LLMCOURSE_LOCK_HELD:-}" ] || ! command -v flock >/dev/null 2>&1; then
  exec "$@"
fi
pid=$PPID
while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
  args=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null || true)
  if [ "$(basename -- "$(head -n 1 <<<"$args")")" = flock ] && grep -qxF -- "$lock" <<<"$args"; then
    exec "$@"
  fi
  pid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
done
export LLMCOURSE_LOCK_HELD=1
exec flock "$lock" "$@"
