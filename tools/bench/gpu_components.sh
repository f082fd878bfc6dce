#!/usr/bin/env bash
# The component commands and `generate` on the GPU, with the tiny model exported for CUDA (bf16
# DiT, fp16 VAE, MultiHeadAttention): each must exit 0 with --backend cuda, and --backend cpu on the
# same engine must be refused naming --backend cuda. Prints one line per check; exits non-zero on
# the first failure. Needs the ONNX Runtime GPU libraries (see README, GPU set-up) and a GPU.
# Usage: tools/bench/gpu_components.sh [WORK_DIR] [DEVICE]      (BIN: where the binaries are)
set -euo pipefail
work="${1:-/tmp/skyreels-components}"
device="${2:-0}"
bin="${BIN:-target/release}"
rm -rf "$work" && mkdir -p "$work"
"$bin/skyreels-export" tiny --out "$work/engine" --target cuda
gpu=(--backend cuda --device "$device")
"$bin/skyreels" info --engines "$work/engine"
"$bin/skyreels" generate --engines "$work/engine" "${gpu[@]}" --prompt "a fox" --num-frames 9 \
  --size 64x64 --steps 4 --out "$work/fox.mp4" --save-latents "$work/latents.safetensors" --json \
  > "$work/summary.json"
echo "ok generate: $(head -c 300 "$work/summary.json")"
"$bin/skyreels" text-encode --engines "$work/engine" "${gpu[@]}" --prompt "a fox" --out "$work/context.safetensors"
echo "ok text-encode"
"$bin/skyreels" vae-decode --engines "$work/engine" "${gpu[@]}" --latents "$work/latents.safetensors" --out "$work/decoded.mp4"
echo "ok vae-decode"
"$bin/skyreels" vae-encode --engines "$work/engine" "${gpu[@]}" --video "$work/fox.mp4" --out "$work/encoded.safetensors"
echo "ok vae-encode"
if "$bin/skyreels" text-encode --engines "$work/engine" --backend cpu --prompt "a fox" \
  --out "$work/refused.safetensors" 2> "$work/refused.txt"; then
  echo "FAIL: --backend cpu ran a bf16 engine"; exit 1
fi
grep -q -- "--backend cuda" "$work/refused.txt" && echo "ok --backend cpu refused: $(head -n1 "$work/refused.txt")"
