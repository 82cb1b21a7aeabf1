#!/usr/bin/env bash
# Build .gpu/, the folder a bare GPU machine needs to run scripts/gpu-check.sh
# (no Node, no Bun, no network there): name it in the device call's `carry`.
#
#   scripts/gpu-carry.sh            (after npm ci; needs xz, and apt-get for the loader packages)
#
#   .gpu/bun.xz          node_modules/bun/bin/bun.exe, xz -6 (107 MB -> ~39 MB)
#   .gpu/dawn.node.xz    webgpu's linux-x64 dawn.node (~21 MB -> ~5 MB); .gpu/dawn.path says where it goes
#   .gpu/js.tar.xz       the rest of node_modules that the project runs with (no other platforms'
#                        binaries, no type packages, no TypeScript, no TF.js: gpu-check runs no peers)
#   .gpu/debs/*.deb      the Vulkan loader (libvulkan1, amd64) for images without it
#
# Fails when what travels (the working tree git does not ignore, plus .gpu/)
# is over the 64 MiB a call may carry. .gpu/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[gpu-carry] %s\n' "$*" >&2; }
LIMIT=$((64 * 1024 * 1024))

[ -x node_modules/bun/bin/bun.exe ] || { say "node_modules/bun/bin/bun.exe missing: run npm ci first"; exit 1; }
command -v xz >/dev/null || { say "xz missing (apt-get install xz-utils)"; exit 1; }
dawn=$(cd node_modules/webgpu && { ls dist/linux-x64.dawn.node dist/linux-x64/dawn.node 2>/dev/null || true; } | head -1)
[ -n "$dawn" ] || { say "no linux-x64 dawn.node under node_modules/webgpu/dist"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-carry.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say "bun: xz -6 (about a minute)"
xz -6 -T0 -c node_modules/bun/bin/bun.exe >"$tmp/bun.xz"
say "dawn.node: $dawn"
xz -6 -T0 -c "node_modules/webgpu/$dawn" >"$tmp/dawn.node.xz"
printf '%s\n' "$dawn" >"$tmp/dawn.path"
say "JS dependencies"
tar -C node_modules -cJf "$tmp/js.tar.xz" \
  --exclude='./bun' --exclude='./@oven' --exclude='./.bin' --exclude='./typescript' --exclude='./@typescript' \
  --exclude='./bun-types' --exclude='./@types' --exclude='./@webgpu' --exclude='./@tensorflow' \
  --exclude='./webgpu/dist/*' .
mkdir -p "$tmp/debs"
if [ -n "${GPU_CARRY_DEBS:-}" ]; then
  cp "$GPU_CARRY_DEBS"/*.deb "$tmp/debs/"
else
  say "Vulkan loader packages (apt-get download, amd64)"
  o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$tmp/lists"
  mkdir -p "$tmp/lists/partial"
  apt-get $o update -qq
  (cd "$tmp/debs" && apt-get $o download libvulkan1 >/dev/null)
  rm -rf "$tmp/lists"
fi
(cd "$tmp" && sha256sum bun.xz dawn.node.xz js.tar.xz debs/*.deb >MANIFEST)

carry=$(du -sb "$tmp" | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total=$((carry + tree))
say "carry $((carry / 1048576)) MiB + working tree $((tree / 1048576)) MiB = $((total / 1048576)) MiB (limit 64 MiB)"
if [ "$total" -gt "$LIMIT" ]; then say "over the limit: not installed"; exit 1; fi
rm -rf .gpu && mv "$tmp" .gpu && chmod 755 .gpu && trap - EXIT
ls -l .gpu .gpu/debs >&2
say "ok: carry .gpu (then run: scripts/gpu-check.sh \$OUT/gpu-check)"
