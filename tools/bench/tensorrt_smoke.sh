#!/usr/bin/env bash
# First run of the TensorRT path on a machine that has it (never run on this project's machines):
# the tiny model exported in the TensorRT form, built with skyreels-build --target tensorrt, then
# generated with --backend tensorrt and --backend cuda from the same seed; prints the largest pixel
# difference between the two videos.
# Needs: onnxruntime-gpu 1.31.1 (ORT_DYLIB_PATH), TensorRT 10 + cuDNN 9 + CUDA 13 on
# LD_LIBRARY_PATH, an NVIDIA GPU, and release builds of skyreels-export, skyreels-build, skyreels.
# Usage: tools/bench/tensorrt_smoke.sh [WORK_DIR]   (BIN: folder of the binaries, default .carry/bin)
set -euo pipefail
work="${1:-/tmp/skyreels-tensorrt}"
bin="${BIN:-.carry/bin}"
mkdir -p "$work"
request=(--prompt "a fox in the snow" --num-frames 9 --height 64 --width 64 --steps 4 --seed 7)
"$bin/skyreels-export" tiny --out "$work/trt" --target tensorrt --dtype fp32 --vae-dtype fp32 --force
"$bin/skyreels-export" tiny --out "$work/cuda" --target cuda --dtype fp32 --vae-dtype fp32 --force
"$bin/skyreels-build" "$work/trt" --target tensorrt
"$bin/skyreels-build" "$work/cuda" --target cuda
"$bin/skyreels" generate --engines "$work/trt" --backend tensorrt "${request[@]}" --out "$work/trt.mp4"
"$bin/skyreels" generate --engines "$work/cuda" --backend cuda "${request[@]}" --out "$work/cuda.mp4"
ls -l "$work"/trt/*.engine "$work"/trt/tensorrt_cache 2>/dev/null || true
python3 - "$work/trt.mp4" "$work/cuda.mp4" <<'PY' || echo "(install imageio[ffmpeg] to compare the videos)"
import sys
import imageio.v3 as iio
import numpy as np
a, b = (iio.imread(p).astype(np.int16) for p in sys.argv[1:3])
print(f"frames {a.shape} vs {b.shape}; max pixel difference {np.abs(a - b).max()}")
PY
