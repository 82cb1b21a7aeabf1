#!/usr/bin/env bash
# One run that tells us everything a GPU machine can: the adapter, the test
# suite on it, every kernel at the 1.5B model's shapes against its reference
# and timed, a random 1.5B-shaped checkpoint's generation and training speed,
# and its logits against Hugging Face transformers.
#
#   scripts/gpu-check.sh OUTDIR [--dry-run] [--budget-s S] [--skip a,b] [--only a,b]
#
# Writes OUTDIR/report.json, OUTDIR/report.md, OUTDIR/gpu-check.log; exit 1
# when a step failed. The steps are in scripts/gpu_check.ts. `--dry-run`
# runs the same pipeline at small shapes (the software adapter; CI runs it).
#
# On a machine without node_modules (a bare GPU machine: no Node, no Bun, no
# network) it first unpacks the carry folder .gpu/ that scripts/gpu-carry.sh
# builds: Bun, dawn.node, the JS dependencies and the Vulkan loader packages.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[gpu-check] %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }
[ $# -ge 1 ] || die "usage: scripts/gpu-check.sh OUTDIR [--dry-run] [--budget-s S] [--skip a,b] [--only a,b]"

# xz -d to stdout, with Python's lzma where the xz tool is missing.
unxz_to() {
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
}

unpack_carry() {
  local c=.gpu
  for f in bun.xz dawn.node.xz dawn.path js.tar.xz; do
    [ -f "$c/$f" ] || die "$c/$f missing: rebuild the carry folder with scripts/gpu-carry.sh"
  done
  say "unpacking $c/ into node_modules/"
  mkdir -p node_modules/bun/bin node_modules/.bin
  if command -v xz >/dev/null; then tar -xJf "$c/js.tar.xz" -C node_modules
  else python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$c/js.tar.xz" node_modules; fi
  unxz_to "$c/bun.xz" node_modules/bun/bin/bun.exe
  chmod +x node_modules/bun/bin/bun.exe
  ln -sf ../bun/bin/bun.exe node_modules/.bin/bun
  local dawn; dawn="node_modules/webgpu/$(cat "$c/dawn.path")"
  mkdir -p "$(dirname "$dawn")"
  unxz_to "$c/dawn.node.xz" "$dawn"
  # scripts/setup.sh reinstalls when package.json is newer than this stamp; there is no npm here.
  touch node_modules/.package-lock.json
}

if [ ! -x node_modules/.bin/bun ]; then
  [ -d .gpu ] || die "no node_modules/.bin/bun and no .gpu/ carry folder: run npm ci (or scripts/gpu-carry.sh where the tools are installed, and carry .gpu/)"
  unpack_carry
fi

# Dawn needs the Vulkan loader; a bare GPU image may lack it (root can unpack the carried packages).
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  if [ -d .gpu/debs ] && [ "$(id -u)" = 0 ]; then
    say "no Vulkan loader: unpacking .gpu/debs/*.deb"
    for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    say "warning: no libvulkan.so.1 found and no carried loader packages (or not root)"
  fi
fi
# NVIDIA's ICD where the container keeps it outside the loader's search path.
nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nv_icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$nv_icd
  say "using the NVIDIA Vulkan driver at $nv_icd"
fi

exec node_modules/.bin/bun scripts/gpu_check.ts "$@"
