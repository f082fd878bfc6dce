#!/usr/bin/env bash
# The short GPU correctness checks in one call, after tools/bench/compare.sh has unpacked ONNX
# Runtime GPU into /opt/ortgpu/ortlib: the DiT block graphs against the fixtures
# (gpu_dit_forward_check.sh), the component commands and generate with --backend cuda
# (gpu_components.sh), the NCCL transport at world size 1 (gpu_nccl.sh), and weight streaming
# against the resident run (gpu_offload.sh check). Our binaries get the
# README's deployment environment (as compare.sh gives it); nothing else is changed.
# Usage: tools/bench/gpu_checks.sh [LOG_DIR]        (BIN: the binaries, default .carry/bin)
set -uo pipefail
logs="${1:-${OUT:-/tmp}}"
export BIN="${BIN:-.carry/bin}"
ort=/opt/ortgpu/ortlib
nvidia=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export ORT_DYLIB_PATH="$ort/libonnxruntime.so"
export LD_LIBRARY_PATH="$ort:/usr/local/cuda-13.0/targets/x86_64-linux/lib:$nvidia/cu13/lib:/usr/lib/x86_64-linux-gnu:$nvidia/cudnn/lib"
status=0
for check in gpu_dit_forward_check gpu_components gpu_nccl; do
  echo "== $check"
  timeout 240 "$(dirname "$0")/$check.sh" 2>&1 | tee "$logs/$check.log" || { status=1; echo "!! $check failed"; }
done
# Weight streaming against the resident run (fixtures, then the 1.3B engine at 5 latent frames).
echo "== gpu_offload check"
timeout 300 "$(dirname "$0")/gpu_offload.sh" check 2>&1 | tee "$logs/gpu_offload_check.log" || { status=1; echo "!! gpu_offload check failed"; }
exit $status
