#!/usr/bin/env bash
# The NCCL transport on GPUs (issue 11): loads libnccl.so.2 (PyTorch's nvidia-nccl-cu13 wheel is
# found through python3, or set SKYREELS_NCCL_LIBRARY), checks every collective queued on the
# communicator's stream against exact expectations, runs Ulysses attention and the guidance
# exchange against one rank, and times the Ulysses all-to-all and the sequence gather of one DiT
# layer at 544x960x97 (51,000 tokens, bf16, 128 channels per head; 12 heads = 1.3B, 40 = 14B).
# Needs: a release `skyreels` in BIN (default .carry/bin). No model, no ONNX Runtime.
# Usage: tools/bench/gpu_nccl.sh [ULYSSES_DEGREE] [--cfg-parallel]
#   one H200:  tools/bench/gpu_nccl.sh           (world size 1)
#   x2:        tools/bench/gpu_nccl.sh 2  |  tools/bench/gpu_nccl.sh 1 --cfg-parallel
#   x8:        tools/bench/gpu_nccl.sh 4 --cfg-parallel
set -euo pipefail
bin="${BIN:-.carry/bin}"
degree="${1:-1}"
shift || true
export NCCL_NVLS_ENABLE=0 NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c 'import nvidia.nccl, os; p = list(nvidia.nccl.__path__)[0]; print("nccl wheel:", p, os.listdir(os.path.join(p, "lib")))' || true
for heads in 12 40; do
  [ $((heads % degree)) -eq 0 ] || continue
  echo "== parallel-check --backend cuda --ulysses-degree $degree $* (timed exchange: $heads heads)"
  "$bin/skyreels" parallel-check --backend cuda --ulysses-degree "$degree" "$@" \
    --bench-tokens 51000 --bench-heads "$heads" --bench-head-dim 128 --bench-iterations 20
done
echo "== a missing library is refused with its fix"
SKYREELS_NCCL_LIBRARY=/nonexistent/libnccl.so.2 "$bin/skyreels" parallel-check --backend cuda && exit 1 || true
