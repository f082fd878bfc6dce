#!/usr/bin/env bash
# One-time set-up: fetches ONNX Runtime's CPU shared library from the official `onnxruntime`
# wheel on PyPI into the project cache, where the binaries find it (see crates/runtime/src/onnxruntime.rs).
# Needs python3 with pip (for `pip download`) and a Rust toolchain. Idempotent.
set -euo pipefail
version="1.31.1"
cache="${SKYREELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skyreels}"
dest="$cache/onnxruntime/$version"
lib="$dest/libonnxruntime.so.$version"
if [ ! -f "$lib" ]; then
  echo "setup: fetching onnxruntime $version (CPU) from PyPI into $dest" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$tmp" "onnxruntime==$version"
  whl=$(ls "$tmp"/onnxruntime-"$version"-*.whl | head -n1)
  (cd "$tmp" && python3 -m zipfile -e "$whl" unpacked >/dev/null)
  mkdir -p "$dest"
  cp "$tmp"/unpacked/onnxruntime/capi/libonnxruntime.so."$version" "$lib.partial"
  mv "$lib.partial" "$lib"
fi
echo "setup: ONNX Runtime ready at $lib" >&2
