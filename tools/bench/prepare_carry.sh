#!/usr/bin/env bash
# Prepares, in ignored folders of this checkout, what tools/bench/compare.sh needs on the device
# machine (which has CUDA 13, cuDNN 9, PyTorch and transformers, but no ONNX Runtime GPU, no
# diffusers, no Rust, and cannot download), then prints the device calls to make:
#   .carry/bin/     stripped release builds of the benchmark binaries, skyreels, skyreels-export
#                   and skyreels-serve
#   .whl/           diffusers 0.42.1 (the reference's version, tools/reference/requirements.txt)
#                   and what the machine lacks for it (KINDS.md lists its packages): importlib_metadata
#                   and lazy-importer
#   .carry/ortgpu/  ONNX Runtime GPU (libonnxruntime + CUDA provider from the onnxruntime-gpu wheel,
#                   xz-compressed, ../shared/tools/gpu-carry.sh's recipe) split into parts small
#                   enough to travel with the working tree (one device call carries at most 64 MiB)
# Usage (from the checkout the device calls send, i.e. the lead's): tools/bench/prepare_carry.sh [--no-build]
set -euo pipefail
root="$(git rev-parse --show-toplevel)"
cd "$root"
build=true
[ "${1:-}" = "--no-build" ] && build=false
ort_version="${ORT_VERSION:-1.31.1}"
limit_mib=64
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
for path in /.carry/ /.whl/; do
  grep -qx "$path" "$exclude" 2>/dev/null || echo "$path" >> "$exclude"
done

programs=(dit_bench dit_case vae_bench e2e_bench session_cost write_random_dit write_random_vae write_random_umt5)
if $build; then
  examples=()
  for program in "${programs[@]}"; do examples+=(--example "$program"); done
  cargo build --release --locked -p skyreels-runtime -p skyreels-exporter -p skyreels-serve \
    --bin skyreels --bin skyreels-export --bin skyreels-serve "${examples[@]}"
fi
mkdir -p .carry/bin
for program in "${programs[@]}"; do
  strip -o ".carry/bin/$program" "target/release/examples/$program"
done
for binary in skyreels skyreels-export skyreels-serve; do
  strip -o ".carry/bin/$binary" "target/release/$binary"
done

pip_download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$@"
}
mkdir -p .whl
pip_download diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0

cache="${XDG_CACHE_HOME:-$HOME/.cache}/ortgpu-$ort_version"
if [ ! -s "$cache/ortlib.tar.xz" ]; then
  mkdir -p "$cache"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$cache" "onnxruntime-gpu==$ort_version"
  tmp="$(mktemp -d)"
  (cd "$tmp" && python3 -m zipfile -e "$cache"/onnxruntime_gpu-"$ort_version"-*.whl . >/dev/null)
  mkdir -p "$tmp/ortlib"
  cp "$tmp"/onnxruntime/capi/libonnxruntime.so.* "$tmp"/onnxruntime/capi/libonnxruntime_providers_*.so "$tmp/ortlib/"
  (cd "$tmp/ortlib" && ln -sf libonnxruntime.so.* libonnxruntime.so)
  tar -C "$tmp" -cf - ortlib | xz -T2 -6 > "$cache/ortlib.tar.xz.partial"
  mv "$cache/ortlib.tar.xz.partial" "$cache/ortlib.tar.xz"
  rm -rf "$tmp"
fi

mib() { du -cm "$@" 2>/dev/null | tail -n1 | cut -f1; }
# What every call sends besides its carry list: tracked and untracked-not-ignored files.
tree_mib=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print int((s + 1048575) / 1048576)}')
part_mib=$(( limit_mib - tree_mib - 2 ))
rm -rf .carry/ortgpu && mkdir -p .carry/ortgpu
split -b "${part_mib}M" -d "$cache/ortlib.tar.xz" .carry/ortgpu/part
bin_mib=$(mib .carry/bin)
whl_mib=$(mib .whl)
parts=(.carry/ortgpu/part*)

cat <<EOF
working tree that every call sends: ${tree_mib} MiB; binaries ${bin_mib} MiB; wheels ${whl_mib} MiB;
ONNX Runtime GPU $ort_version: ${#parts[@]} parts of at most ${part_mib} MiB.

Device calls, back to back (the machine keeps /opt only while it stays warm; a call that answers
warm: false means it went back: start again from the first):
EOF
n=1
for part in "${parts[@]}"; do
  echo "  $n. run carry=[\"$part\"] timeout_s=120 command: mkdir -p /opt/ortgpu && cp $part /opt/ortgpu/ && ls -la /opt/ortgpu"
  n=$((n + 1))
done
if [ $((tree_mib + bin_mib + whl_mib)) -gt $limit_mib ]; then
  echo "  !! binaries + wheels + tree = $((tree_mib + bin_mib + whl_mib)) MiB, over $limit_mib MiB: carry .carry/bin in a call of its own first (cp -r .carry/bin /opt/skyreels-bin) and pass --bin /opt/skyreels-bin"
fi
cat <<EOF
  $n. run carry=[".carry/bin", ".whl"] timeout_s=600 command:
       set -o pipefail; tools/bench/compare.sh --only dit,vae 2>&1 | tee \$OUT/compare.log
  $((n + 1)). run carry=[".carry/bin", ".whl"] timeout_s=600 command:
       set -o pipefail; tools/bench/compare.sh --only dit14b,e2e --once 2>&1 | tee \$OUT/compare.log
  $((n + 2)). run carry=[".carry/bin", ".whl"] timeout_s=600 command:
       set -o pipefail; tools/bench/compare.sh --only user 2>&1 | tee \$OUT/compare.log
  $((n + 3)). weight streaming, three calls (carry=[".carry/bin", ".whl"] timeout_s=600 each):
       set -o pipefail; tools/bench/gpu_offload.sh check 2>&1 | tee \$OUT/offload-check.log
       set -o pipefail; tools/bench/gpu_offload.sh 1.3b 2>&1 | tee \$OUT/compare.log
       set -o pipefail; tools/bench/gpu_offload.sh 14b 2>&1 | tee \$OUT/compare.log
Fetch \$OUT/results.jsonl and compare.log after each call (the next call empties \$OUT), keep them
in docs/bench/, and run python3 tools/bench/summarise.py on them.
Never export LD_LIBRARY_PATH in these commands: compare.sh gives it to our binaries alone.
EOF
