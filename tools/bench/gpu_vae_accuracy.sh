#!/usr/bin/env bash
# How far the GPU's fp16 VAE decode lands from the fp32 one, with ONNX Runtime's default (NCHW)
# convolutions and with channels-last ones (SKYREELS_CUDA_PREFER_NHWC=1), on the real-size Wan VAE
# (random weights): the same random latents decoded by `skyreels vae-decode` three ways, a
# float32 engine on the CPU (the reference: our CPU export matches diffusers' fp32 VAE within
# 3.6e-5 on the fixtures) and the float16 CUDA engine with each layout. Prints one JSON line per
# GPU layout: max-abs and mean-abs against the CPU decode, the decode's value range and the share
# of values the final clamp to [-1, 1] cut (the command writes clamped video).
# Usage: tools/bench/gpu_vae_accuracy.sh [WORK_DIR]   (BIN, default .carry/bin; ORT, /opt/ortgpu/ortlib;
#        FRAMES, HEIGHT, WIDTH in latents, default 3 x 34 x 60, i.e. 9 frames at 272x480)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/bench/ours.sh
source "$here/ours.sh"
work="${1:-/tmp/skyreels-vae-accuracy}"
frames="${FRAMES:-3}" height="${HEIGHT:-34}" width="${WIDTH:-60}"
mkdir -p "$work"
[ -f "$work/model/model.safetensors" ] || "$bin/write_random_dit" tiny "$work/model" >/dev/null
[ -f "$work/model/Wan2.1_VAE.safetensors" ] || "$bin/write_random_vae" wan21 "$work/model" >/dev/null
"$bin/skyreels-export" "$work/model" --out "$work/engine-cpu" --target cpu --require dit --force >/dev/null
"$bin/skyreels-export" "$work/model" --out "$work/engine-cuda" --target cuda --require dit --force >/dev/null
# Latents: standard normal, float32, written as safetensors by hand (numpy is all it needs).
python3 - "$work/latents.safetensors" "$frames" "$height" "$width" <<'PY'
import json, struct, sys
import numpy as np
path, f, h, w = sys.argv[1], *map(int, sys.argv[2:])
data = np.random.default_rng(0).standard_normal((1, 16, f, h, w)).astype("<f4").tobytes()
header = json.dumps({"latents": {"dtype": "F32", "shape": [1, 16, f, h, w], "data_offsets": [0, len(data)]}}).encode()
header += b" " * (-len(header) % 8)
with open(path, "wb") as out:
    out.write(struct.pack("<Q", len(header)) + header + data)
PY
decode() {
  local engine="$1" backend="$2" out="$3"; shift 3
  "${ours[@]}" "$@" "$bin/skyreels" vae-decode --engines "$engine" --backend "$backend" \
    --latents "$work/latents.safetensors" --out "$out" --log-level warn
}
decode "$work/engine-cpu" cpu "$work/cpu.safetensors"
decode "$work/engine-cuda" cuda "$work/cuda-nchw.safetensors"
decode "$work/engine-cuda" cuda "$work/cuda-nhwc.safetensors" SKYREELS_CUDA_PREFER_NHWC=1
python3 - "$work" <<'PY'
import json, struct, sys
import numpy as np
def read(path):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    entry = header["video"]
    start, end = entry["data_offsets"]
    return np.frombuffer(data[start:end], dtype="<f4").reshape(entry["shape"])
work = sys.argv[1]
reference = read(f"{work}/cpu.safetensors")
for layout in ("nchw", "nhwc"):
    video = read(f"{work}/cuda-{layout}.safetensors")
    error = np.abs(video.astype(np.float64) - reference)
    print(json.dumps({"bench": "vae_accuracy", "layout": layout, "shape": list(video.shape),
        "max_abs": float(error.max()), "mean_abs": float(error.mean()),
        "reference_range": [float(reference.min()), float(reference.max())],
        "reference_clamped_fraction": float((np.abs(reference) >= 1.0).mean()),
        "finite": bool(np.isfinite(video).all())}))
PY
