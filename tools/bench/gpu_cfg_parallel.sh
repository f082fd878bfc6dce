#!/usr/bin/env bash
# `generate --cfg-parallel` on two GPUs against one GPU (issue 11): the built-in tiny model exported
# for CUDA, one rank vs two supervised ranks (one guidance branch each, velocities exchanged through
# NCCL); prints both --json summaries and the largest difference of the final latents.
# Needs: 2 GPUs (nvidia-h200-x2), release `skyreels` and `skyreels-export` in BIN (default
# .carry/bin), ONNX Runtime GPU as for tools/bench/gpu_e2e.sh, NCCL as for tools/bench/gpu_nccl.sh.
# Usage: tools/bench/gpu_cfg_parallel.sh [WORK_DIR]
set -euo pipefail
work="${1:-/tmp/skyreels-cfg-parallel}"
bin="${BIN:-.carry/bin}"
export NCCL_NVLS_ENABLE=0
mkdir -p "$work"
"$bin/skyreels-export" tiny --out "$work/engine" --target cuda --force
for mode in one pair; do
  flags=()
  [ "$mode" = pair ] && flags=(--cfg-parallel --devices 0,1)
  echo "== generate ($mode)"
  "$bin/skyreels" generate --engines "$work/engine" --backend cuda --prompt "a red fox in snow" \
    --num-frames 17 --height 64 --width 64 --steps 6 --ar-step 2 --causal-block-size 1 \
    --out "$work/$mode.mp4" --save-latents "$work/$mode.safetensors" --json "${flags[@]}"
done
python3 - "$work" <<'PY'
import json, struct, sys, array
def latents(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    start, end = header["latents"]["data_offsets"]
    values = array.array("f")
    values.frombytes(data[8 + n + start:8 + n + end])
    return values
a, b = (latents(f"{sys.argv[1]}/{m}.safetensors") for m in ("one", "pair"))
print(json.dumps({"latents": len(a), "max_abs_difference": max(abs(x - y) for x, y in zip(a, b))}))
PY
