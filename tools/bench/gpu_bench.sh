#!/usr/bin/env bash
# GPU benchmark, ours vs diffusers, on one machine: DiT forward (1.3B or 14B, random bf16 weights of
# the real shapes) and VAE decode at 544x960, 97 frames (25 latent frames of 68x120).
# Needs: ONNX Runtime GPU (ORT_DYLIB_PATH), release builds of skyreels-export and the runtime
# examples in BIN (default .carry/bin), diffusers importable by python3.
# Usage: tools/bench/gpu_bench.sh 1.3b|14b [WORK_DIR]   (SIDES=ours or SIDES=torch runs one side only)
set -euo pipefail
size="${1:-1.3b}"
work="${2:-/tmp/skyreels-bench}"
bin="${BIN:-.carry/bin}"
sides="${SIDES:-both}"
ours() { [ "$sides" != torch ]; }
torch() { [ "$sides" != ours ]; }
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$work"
frames=25; height=68; width=120; iterations=3
if [ ! -f "$work/dit-$size/model.safetensors" ]; then
  "$bin/write_random_dit" "$size" "$work/dit-$size"
  # The VAE sits next to the DiT, as in an original-layout model folder, and is exported with it.
  [ "$size" = "1.3b" ] && "$bin/write_random_vae" wan21 "$work/dit-$size"
fi
"$bin/skyreels-export" "$work/dit-$size" --out "$work/engine-$size" --target cuda --dtype bf16 --no-causal --require dit --force
if [ "$size" = "1.3b" ]; then
  "$bin/skyreels-export" "$work/dit-$size" --out "$work/engine-$size-vae32" --target cuda --dtype bf16 --vae-dtype fp32 --no-causal --require dit --force
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# Runs a command while sampling the GPU's used memory; prints its peak as JSON after it.
with_peak() {
  "$@" & local pid=$! peak=0 m
  while kill -0 $pid 2>/dev/null; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
    [ "$m" -gt "$peak" ] && peak=$m
    sleep 0.5
  done
  wait $pid
  echo "{\"peak_device_mib\": $peak, \"command\": \"$(basename "$1") ${*:2}\"}"
}
if ours; then
  echo "== ours: DiT $size forward"
  with_peak "$bin/dit_bench" "$work/engine-$size" cuda $frames $height $width $iterations
  if [ "$size" = "1.3b" ]; then
    echo "== ours: VAE decode (fp16, the cuda default)"
    with_peak "$bin/vae_bench" "$work/engine-$size" cuda $frames $height $width
    echo "== ours: VAE decode (fp16, cuDNN workspace capped: SKYREELS_CUDNN_MAX_WORKSPACE=0)"
    with_peak env SKYREELS_CUDNN_MAX_WORKSPACE=0 "$bin/vae_bench" "$work/engine-$size" cuda $frames $height $width
    echo "== ours: VAE decode (fp32)"
    with_peak "$bin/vae_bench" "$work/engine-$size-vae32" cuda $frames $height $width
  fi
fi
if torch; then
echo "== diffusers: DiT $size forward"
python3 "$here/torch_bench.py" dit "$size" $frames $height $width $iterations
if [ "$size" = "1.3b" ]; then
  echo "== diffusers: VAE decode"
  python3 "$here/torch_bench.py" vae $frames $height $width
fi
fi
