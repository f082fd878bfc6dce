#!/usr/bin/env bash
# What one more CUDA session costs in device memory outside the shared arena (every graph the
# runtime loads is one session): examples/session_cost.rs loads the VAE stage `decode_chunk.4`
# (the decoder's head) 8 times and runs each once, printing the device's used memory after each
# load and each first run; with ONNX Runtime's defaults, with cuDNN's heuristic algorithm choice,
# with cuDNN's workspace capped, and with CUDA's modules loaded eagerly instead of lazily.
# Needs: what compare.sh needs (prepare_carry.sh, which builds session_cost too).
# Usage: tools/bench/gpu_session_cost.sh   (BIN, default .carry/bin; ORT, /opt/ortgpu/ortlib;
#        WORK, /tmp/skyreels-bench, where the 1.3B engine is made if missing)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/bench/ours.sh
source "$here/ours.sh"
ensure_engine_1_3b || exit 1
for variant in "default:" "heuristic:SKYREELS_CUDNN_ALGO_SEARCH=heuristic" "ws0:SKYREELS_CUDNN_MAX_WORKSPACE=0" "eager:CUDA_MODULE_LOADING=EAGER"; do
  # shellcheck disable=SC2206  # a list of VAR=VALUE words
  settings=(${variant#*:})
  echo "${variant%%:*} $(timeout 60 "${ours[@]}" "${settings[@]}" "$bin/session_cost" "$work/engine-1.3b" decode_chunk.4 8 4 6 2>&1 | tail -n1)"
done
