#!/usr/bin/env bash
# Manual check, not part of `bun test`: does Bun still crash with dawn.node?
# Runs tests/fixtures/dawn_long_wait.ts N times (default 10) in three modes and
# counts clean exits:
#   device-layer   what src/gpu/device.ts does (event pump, wrappers kept alive);
#                  must be N/N. `bun test` runs this mode (tests/cli_gpu.test.ts).
#   raw            dawn.node objects held only by locals (the old canary);
#                  crashed in most runs on a loaded machine with Bun 1.4.5.
#   raw, no pump   SIRI_NO_EVENT_PUMP=1; crashed in every run seen with Bun 1.4.5.
# If "raw, no pump" comes out N/N on a new Bun, the pump may be removable:
# check with long runs (`siri train --preset demo`) before removing it.
# The outcome of the last two modes is random, which is why no test asserts it.
set -uo pipefail
cd "$(dirname "$0")/.."
N="${1:-10}"
BUN="${BUN:-node_modules/.bin/bun}"
count() { # label, then env assignments; fixture args come from ARGS
  local label="$1"; shift
  local ok=0 i
  for ((i = 0; i < N; i++)); do
    if env "$@" timeout 300 "$BUN" tests/fixtures/dawn_long_wait.ts "${ARGS[@]}" >/dev/null 2>&1; then ok=$((ok + 1)); fi
  done
  printf '%-14s %d/%d clean exits\n' "$label" "$ok" "$N"
}
ARGS=(); count "device-layer" SIRI_DAWN_CANARY=1
ARGS=(--raw); count "raw" SIRI_DAWN_CANARY=1
ARGS=(--raw); count "raw, no pump" SIRI_NO_EVENT_PUMP=1
