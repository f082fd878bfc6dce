#!/usr/bin/env bash
# DiT weight streaming on the GPU (issue 10 item 3), in three device calls of under 10 minutes:
#   check  correctness first: `skyreels dit-forward --backend cuda` resident and with --offload on
#          every DiT fixture case (fp32 engines, 2 layers; the block-causal case included), then on
#          the 1.3B engine (random bf16 weights, 30 layers, so both slots are refilled many times)
#          at 5 latent frames of 68x120, full and block-causal. Streamed weights are the same bytes
#          run by the same kernels, so the velocities should be bitwise equal; prints the max-abs
#          difference and fails above 1e-6 (and, for the fixtures, above 2e-3 against the
#          recorded velocity, gpu_dit_forward_check.sh's bound).
#   1.3b   compare.sh --only offload: the 1.3B forward at 544x960x97 resident and under
#          --max-gpu-memory 8GiB (--offload), one forward and one guided row each, then the
#          97-frame generation (30 steps, CFG 6) resident and with --offload.
#   14b    compare.sh --only offload14b: the 14B forward resident and streamed under 24GiB.
#   debug  one streamed forward of the 1.3B at 5 latent frames with --log-level trace; if it has
#          not finished after DEBUG_WAIT seconds (default 60), every thread's stack (cuda-gdb, which
#          the device image has) goes to stdout and the process is killed; else the 1.3B
#          comparison of `check` follows.
# The last two append to compare.sh's results file, whose summary (tools/bench/summarise.py) has a
# "Weight streaming" table: times, ratio to resident, whole-process peaks (nvidia-smi), budget and
# whether the goals (peak within the budget, time within 1.25x resident) were met. The budget is
# what the plan may give the DiT's weights; activations and the CUDA context come on top, so the
# peak can exceed it: the table shows by how much.
# Needs: what compare.sh needs (tools/bench/prepare_carry.sh), plus for `check` the `skyreels`
# binary in BIN (prepare_carry.sh puts it there) and python3 with numpy and safetensors.
# Usage: tools/bench/gpu_offload.sh check|1.3b|14b [compare.sh options, e.g. --work DIR]
# Environment: WORK (default /tmp/skyreels-bench), BIN (default .carry/bin), ORT (default
# /opt/ortgpu/ortlib) for `check`; compare.sh reads its own options.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
part="${1:-}"
[ $# -gt 0 ] && shift
case "$part" in
  1.3b) exec "$here/compare.sh" --only offload "$@" ;;
  14b) exec "$here/compare.sh" --only offload14b "$@" ;;
  check|debug) ;;
  *) printf 'gpu_offload.sh: which part? (got %q)\n  fix: tools/bench/gpu_offload.sh check, then 1.3b, then 14b\n' "$part" >&2; exit 2 ;;
esac

work="${WORK:-/tmp/skyreels-bench}"
bin="${BIN:-.carry/bin}"
ort="${ORT:-/opt/ortgpu/ortlib}"
ort_parts="${ORT_PARTS:-/opt/ortgpu}"
wheels_nvidia=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
if [ ! -e "$ort/libonnxruntime.so" ] && ls "$ort_parts"/part* >/dev/null 2>&1; then
  (cd "$ort_parts" && cat part* | xz -d | tar -xf -)
fi
ours_env=(env "ORT_DYLIB_PATH=$ort/libonnxruntime.so"
  "LD_LIBRARY_PATH=${OURS_LD_LIBRARY_PATH:-$ort:/usr/local/cuda-13.0/targets/x86_64-linux/lib:$wheels_nvidia/cu13/lib:/usr/lib/x86_64-linux-gnu:$wheels_nvidia/cudnn/lib}")
for program in skyreels skyreels-export write_random_dit; do
  [ -x "$bin/$program" ] || { echo "gpu_offload.sh: no $bin/$program
  fix: run tools/bench/prepare_carry.sh and carry .carry/bin" >&2; exit 2; }
done
mkdir -p "$work/offload-check"
status=0

# compare EXPECTED GOT [FIXTURE]: max-abs between the resident and streamed velocity (and the
# fixture's recorded one).
compare() {
  python3 - "$@" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
resident = load_file(sys.argv[1])["velocity"]
streamed = load_file(sys.argv[2])["velocity"]
difference = float(np.abs(resident.astype(np.float64) - streamed).max())
bitwise = resident.tobytes() == streamed.tobytes()
line = f"streamed vs resident: max-abs {difference:.3e} ({'bitwise equal' if bitwise else 'not bitwise'})"
ok = difference <= 1e-6
if len(sys.argv) > 3:
    recorded = load_file(sys.argv[3])["velocity"]
    error = float(np.abs(recorded - streamed).max())
    line += f"; streamed vs fixture: max-abs {error:.3e}"
    ok = ok and error <= 2e-3
print(line)
sys.exit(0 if ok else 1)
PY
}

# forward NAME ENGINE INPUTS [FLAGS...]: resident and streamed dit-forward, compared.
forward() {
  local name="$1" engine="$2" inputs="$3"; shift 3
  local resident="$work/offload-check/$name-resident.safetensors" streamed="$work/offload-check/$name-streamed.safetensors"
  printf '%s: ' "$name"
  "${ours_env[@]}" "$bin/skyreels" --log-level warn dit-forward --engines "$engine" --inputs "$inputs" --out "$resident" --backend cuda "$@"
  "${ours_env[@]}" "$bin/skyreels" --log-level warn dit-forward --engines "$engine" --inputs "$inputs" --out "$streamed" --backend cuda --offload "$@"
  compare "$resident" "$streamed" ${FIXTURE:+"$FIXTURE"} || status=1
}

[ "$part" = check ] && echo "== the DiT fixtures (fp32, 2 layers), resident and --offload"
[ "$part" = check ] && for model in df t2v i2v; do
  engine="$work/offload-check/$model-fp32"
  "$bin/skyreels-export" "tests/fixtures/dit/$model/diffusers" --out "$engine" --target cuda --dtype fp32 --require dit --force >/dev/null
  for case in tests/fixtures/dit/$model/cases/*.safetensors; do
    block=$(python3 -c "from safetensors.numpy import load_file; t = load_file('$case'); print(int(t['causal_block_size'][0]) if 'causal_block_size' in t else '')")
    FIXTURE="$case" forward "$(basename "$case" .safetensors)" "$engine" "$case" ${block:+--causal-block-size "$block"}
  done
done

echo "== the 1.3B DiT (bf16, 30 layers) at 5 latent frames of 68x120, resident and --offload"
if [ ! -f "$work/dit-1.3b/model.safetensors" ]; then
  "$bin/write_random_dit" 1.3b "$work/dit-1.3b"
fi
[ -f "$work/engine-1.3b/manifest.yaml" ] || \
  "$bin/skyreels-export" "$work/dit-1.3b" --out "$work/engine-1.3b" --target cuda --dtype bf16 --require dit --force >/dev/null
inputs="$work/offload-check/inputs-1.3b.safetensors"
python3 - "$inputs" <<'PY'
import sys
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
frames = 5
save_file({
    "latents": rng.standard_normal((1, 16, frames, 68, 120), dtype=np.float32),
    "timesteps": np.linspace(999, 500, frames, dtype=np.float32)[None],
    "context": rng.standard_normal((1, 512, 4096), dtype=np.float32),
    "fps": np.array([1], dtype=np.int64),
}, sys.argv[1])
PY
if [ "$part" = debug ]; then
  "${ours_env[@]}" "$bin/skyreels" --log-level trace dit-forward --engines "$work/engine-1.3b" --inputs "$inputs" \
    --out "$work/offload-check/debug.safetensors" --backend cuda --offload &
  pid=$!
  for _ in $(seq "${DEBUG_WAIT:-60}"); do kill -0 $pid 2>/dev/null || break; sleep 1; done
  if kill -0 $pid 2>/dev/null; then
    echo "!! still running after ${DEBUG_WAIT:-60} s; stacks:"
    cuda-gdb -p $pid -batch -ex "info threads" -ex "thread apply all bt 30" 2>&1 | grep -v "^\[New Thread\|^warning" || true
    kill -9 $pid
    exit 1
  fi
  wait $pid
fi
forward 1.3b "$work/engine-1.3b" "$inputs"
forward 1.3b-causal "$work/engine-1.3b" "$inputs" --causal-block-size 1
exit $status
