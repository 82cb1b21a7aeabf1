#!/usr/bin/env bash
# One-time, idempotent set-up for this project on a fresh machine.
#   1. npm dependencies (including Bun itself, from the `bun` npm package)
#   2. rsvg-convert (librsvg2-bin on Debian, as root) for the plot render tests
#   3. a WebGPU adapter: when Dawn finds none on Debian and we are root, install
#      Mesa's lavapipe (software Vulkan) from bookworm-backports. Debian 12's own
#      Mesa 22.3 lavapipe is rejected by Dawn (missing
#      shaderUniform*ArrayDynamicIndexing); Mesa 25 from backports works.
#   3. redis-server (the broker of `siri train --broker` / `siri worker`; the
#      broker tests start their own): apt-get install redis-server when root.
# Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

# The lock file, not package.json, says what is installed: a change to package.json's
# scripts alone needs no reinstall.
if [ ! -x node_modules/.bin/bun ] || [ ! -f node_modules/webgpu/dist/linux-x64.dawn.node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies (npm ci)"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
else
  say "npm dependencies already installed"
fi
BUN=node_modules/.bin/bun
"$BUN" --version >/dev/null

if command -v redis-server >/dev/null 2>&1; then
  say "redis-server found: $(redis-server --version | head -c 60)"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  say "installing redis-server (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
else
  say "no redis-server and cannot install it here (not root with apt-get): the broker tests will be skipped (they fail with CI=true)"
fi

# rsvg-convert renders the plots to PNG in tests/plots.test.ts (Debian: librsvg2-bin).
if command -v rsvg-convert >/dev/null 2>&1; then
  say "rsvg-convert found"
elif [ -r /etc/os-release ] && grep -q '^ID=debian' /etc/os-release && [ "$(id -u)" = 0 ]; then
  say "installing librsvg2-bin (rsvg-convert, for the plot render tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librsvg2-bin >/dev/null
else
  say "rsvg-convert not found: install librsvg2-bin (or your system's librsvg tools); the plot render tests need it under CI=true"
fi

probe() { "$BUN" src/gpu/probe.ts 2>/dev/null; }

if found="$(probe)"; then
  say "WebGPU adapter found: $found"
  exit 0
fi

say "no WebGPU adapter found"
if [ -r /etc/os-release ] && grep -q '^VERSION_CODENAME=bookworm' /etc/os-release && [ "$(id -u)" = 0 ]; then
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "adding the bookworm-backports suite to /etc/apt/sources.list.d/bookworm-backports.list"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list
  fi
  say "apt-get update"
  apt-get update -qq
  say "installing Mesa lavapipe (mesa-vulkan-drivers, libvulkan1) from bookworm-backports"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
  if found="$(probe)"; then
    say "WebGPU adapter found after install: $found"
    exit 0
  fi
  say "still no WebGPU adapter after installing lavapipe"
  exit 1
fi

cat >&2 <<'MSG'
[setup] No WebGPU adapter, and this is not Debian 12 as root, so nothing was installed.
[setup] Install a Vulkan driver that Dawn accepts, then run this again:
[setup]   - a GPU: the vendor's Vulkan driver (NVIDIA: the proprietary driver with its Vulkan ICD; AMD/Intel: Mesa >= 24 mesa-vulkan-drivers)
[setup]   - no GPU: Mesa >= 24 lavapipe. On Debian 12 (as root):
[setup]       echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list
[setup]       apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1
[setup]     On Ubuntu 24.04+: apt-get install mesa-vulkan-drivers libvulkan1
MSG
exit 1
