#!/usr/bin/env bash
# Multi-GPU generation against one GPU (issues 11 and 12): the same `skyreels generate` call on 1
# GPU, with --cfg-parallel (2 GPUs), --ulysses-degree 2 (2 GPUs) and, when the host has them,
# --ulysses-degree 2 --cfg-parallel (4) and --ulysses-degree 4 --cfg-parallel (8); then the
# asynchronous block-causal call on 1 GPU and with --ulysses-degree 2. Prints one JSON line per run
# (mode, GPUs, seconds, the summary's stage timings, max-abs of the final latents against the
# 1-GPU run) and keeps every log under WORK_DIR/logs (each rank's "sequence parallel: … all-to-all
# … s, head gather … s" line is the communication time). A second 1-GPU run with other attention
# kernels (SKYREELS_CUDA_SDPA_KERNEL=2, memory-efficient) gives the bf16 drift the multi-GPU
# differences are to stay within.
# Models: SIZE=1.3b (default) or 14b, random bf16 weights of the real shapes (write_random_dit,
# write_random_vae wan21, write_random_umt5 with UMT5_LAYERS layers, default 2: the text encoder's
# time is not what is measured); SIZE=tiny runs the built-in tiny model (a smoke test of the
# NCCL path in seconds). 544x960, 97 frames, 30 steps, guidance 6 unless FRAMES/HEIGHT/WIDTH/STEPS.
# Needs: release `skyreels`, `skyreels-export` and the writers in BIN (default .carry/bin;
# tools/bench/prepare_carry.sh), ONNX Runtime GPU (ORT_DYLIB_PATH) as for tools/bench/gpu_e2e.sh,
# NCCL as for tools/bench/gpu_nccl.sh, 2 GPUs at least (nvidia-h200-x2; x4 and x8 add rows).
# One GPU (ONE_GPU=1): only the world-size-1 rows through NCCL, plain and with the sequence path
# forced (SKYREELS_ULYSSES_AT_ONE=1), which must reproduce the plain run's latents; their time
# against the plain run is what the path costs.
# Usage: tools/bench/gpu_ulysses.sh [WORK_DIR]
set -euo pipefail
work="${1:-/tmp/skyreels-ulysses}"
bin="${BIN:-.carry/bin}"
size="${SIZE:-1.3b}"
frames="${FRAMES:-97}"; height="${HEIGHT:-544}"; width="${WIDTH:-960}"; steps="${STEPS:-30}"
export NCCL_NVLS_ENABLE=0
mkdir -p "$work/logs"
gpus=$(nvidia-smi --list-gpus | wc -l)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "$gpus" -lt 2 ] && [ "${ONE_GPU:-}" != 1 ]; then
  echo "gpu_ulysses.sh needs 2 GPUs at least; this host has $gpus (ONE_GPU=1: the world-size-1 NCCL rows only)" >&2
  exit 1
fi

engine="$work/engine-$size"
if [ "$size" = tiny ]; then
  "$bin/skyreels-export" tiny --out "$engine" --target cuda --force
  [ -z "${HEIGHT:-}" ] && height=64 && width=64
  [ -z "${FRAMES:-}" ] && frames=17
  [ -z "${STEPS:-}" ] && steps=6
else
  source_dir="$work/dit-$size"
  if [ ! -f "$source_dir/model.safetensors" ]; then
    "$bin/write_random_dit" "$size" "$source_dir"
    "$bin/write_random_vae" wan21 "$source_dir"
    "$bin/write_random_umt5" "${UMT5_LAYERS:-2}" "$source_dir"
  fi
  "$bin/skyreels-export" "$source_dir" --out "$engine" --target cuda --dtype bf16 --force
fi

# run NAME [ENV=VALUE...] -- FLAGS...: one generate call; prints its JSON line.
run() {
  local name="$1"; shift
  local environment=()
  while [ "$1" != -- ]; do environment+=("$1"); shift; done
  shift
  local started ended
  started=$(date +%s.%N)
  env "${environment[@]}" "$bin/skyreels" generate --engines "$engine" --backend cuda \
    --prompt "a red fox running through fresh snow" --num-frames "$frames" --height "$height" \
    --width "$width" --steps "$steps" --guidance 6 --seed 7 \
    --out "$work/$name.mp4" --save-latents "$work/$name.safetensors" --json "$@" \
    > "$work/logs/$name.json" 2> "$work/logs/$name.log" || {
      echo "{\"mode\": \"$name\", \"failed\": true, \"log\": \"$work/logs/$name.log\"}"
      tail -n 20 "$work/logs/$name.log" >&2
      return 0
    }
  ended=$(date +%s.%N)
  python3 - "$work" "$name" "$started" "$ended" "$*" <<'PY'
import json, struct, sys, array, re
work, name, started, ended, flags = sys.argv[1:]
def latents(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    start, end = header["latents"]["data_offsets"]
    values = array.array("f")
    values.frombytes(data[8 + n + start:8 + n + end])
    return values
reference = "one-causal" if name.endswith("causal") else "one"
mine = latents(f"{work}/{name}.safetensors")
base = latents(f"{work}/{reference}.safetensors")
summary = json.load(open(f"{work}/logs/{name}.json"))
exchange = [line.split("] ", 1)[-1].strip() for line in open(f"{work}/logs/{name}.log")
            if "sequence parallel:" in line and "forwards" in line]
ranks = 1
for match in re.finditer(r"--ulysses-degree (\d+)", flags):
    ranks = int(match.group(1))
if "--cfg-parallel" in flags:
    ranks *= 2
print(json.dumps({
    "mode": name, "flags": flags, "gpus": ranks,
    "seconds": round(float(ended) - float(started), 3),
    "timings": summary.get("timings"),
    "max_abs_vs_one_gpu": max(abs(a - b) for a, b in zip(mine, base)) if name != reference else 0.0,
    "exchange": exchange,
}))
PY
}

# World size 1 through NCCL (issue 11 item 6): a rank placed by torchrun's variables (NCCL loaded,
# the prompt broadcast on its stream), then with the sequence-parallel path forced in its Ulysses
# group of one (SKYREELS_ULYSSES_AT_ONE=1: every layer's two all-to-alls and the head's gather go
# through NCCL); both against the plain run, whose latents they must reproduce.
nccl_one=(RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517)
causal=(--ar-step 5 --causal-block-size 5 --causal-attention)
[ "$size" = tiny ] && causal=(--ar-step 2 --causal-block-size 1 --causal-attention)
if [ "$gpus" -lt 2 ]; then
  run one --
  run nccl-1 "${nccl_one[@]}" --
  run nccl-1-sequence "${nccl_one[@]}" SKYREELS_ULYSSES_AT_ONE=1 --
  run one-causal -- "${causal[@]}"
  run nccl-1-sequence-causal "${nccl_one[@]}" SKYREELS_ULYSSES_AT_ONE=1 -- "${causal[@]}"
  exit 0
fi
run one --
run one-other-kernels SKYREELS_CUDA_SDPA_KERNEL=2 --
run cfg-parallel -- --cfg-parallel --devices 0,1
run ulysses-2 -- --ulysses-degree 2 --devices 0,1
if [ "$gpus" -ge 4 ]; then
  run ulysses-2-cfg -- --ulysses-degree 2 --cfg-parallel --devices 0,1,2,3
fi
if [ "$gpus" -ge 8 ]; then
  run ulysses-4-cfg -- --ulysses-degree 4 --cfg-parallel --devices 0,1,2,3,4,5,6,7
fi
run one-causal -- "${causal[@]}"
run ulysses-2-causal -- "${causal[@]}" --ulysses-degree 2 --devices 0,1
