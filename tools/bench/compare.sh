#!/usr/bin/env bash
# Ours against PyTorch (diffusers) on one GPU, in one call, each side in its own environment:
#   - PyTorch runs with the environment this script was started with, untouched: nothing is put on
#     LD_LIBRARY_PATH for it. Only PYTHONPATH gains --site, where the carried wheels (diffusers and
#     what the machine lacks for it, in --wheels) are installed if they are not there yet.
#   - Our binaries run as the README deploys them: ORT_DYLIB_PATH and LD_LIBRARY_PATH (ONNX Runtime
#     GPU, CUDA 13, cuDNN 9) are given to each of our processes alone, through `env`.
# Every group runs ours -> PyTorch -> ours, so drift between the two of ours shows. Each process
# runs under tools/bench/measure.py (nvidia-smi sampling per process and per device, the same for
# both sides) and appends its JSON lines to the results file; each line also carries what the
# process itself loaded (/proc/self/maps), the GPU, the driver and the library versions.
# tools/bench/summarise.py turns the results into the docs/STATUS.md table.
#
# Usage: tools/bench/compare.sh [--only GROUPS] [--results FILE] [--work DIR] [--bin DIR]
#                               [--ort DIR] [--iterations N] [--causal-block-size N] [--once]
#                               [--wheels DIR] [--site DIR] [--ort-parts DIR]
#                               [--timeout S] [--smoke] [--dry-run]
# Defaults: --work /tmp/skyreels-bench, --bin .carry/bin, --ort /opt/ortgpu/ortlib (unpacked from
# the parts that ../shared/tools/gpu-carry.sh split, in --ort-parts /opt/ortgpu, if missing),
# --wheels .whl, --site /tmp/site, --results $OUT/results.jsonl (else WORK/results.jsonl),
# --iterations 3, --causal-block-size 5 (1 with --smoke), --timeout 420 (seconds per process).
# GROUPS (comma-separated, run in this order; default dit,vae):
#   dit      DiT 1.3B forward 544x960x97 (25x68x120 latents): ours non-causal and block-causal,
#            diffusers non-causal and block-causal, diffusers + torch.compile (non-causal)
#   vae      VAE decode, 97 frames: ours (fp16, the cuda default) and diffusers (bf16)
#   dit14b   DiT 14B forward, ours and diffusers, non-causal
#   e2e      97-frame DF generation, 30 steps, CFG 6: ours and diffusers, prompt embeddings given
#   user     ours only: a 257-frame long video (3 windows of 97, overlap 17) with the real-size
#            umT5-XXL text encoder (random weights), every model's load time, seconds and peak
#            memory per window
#   offload  ours only, weight streaming (issue 10): the DiT 1.3B forward resident and with
#            --offload under --max-gpu-memory 8GiB (OFFLOAD_SMALL_BUDGET), each also as one guided
#            row (both CFG branches through each layer); then the 97-frame generation (e2e's)
#            resident and with --offload
#   offload14b  ours only: the DiT 14B forward resident and streamed because its weights do not
#            fit --max-gpu-memory 24GiB (OFFLOAD_LARGE_BUDGET); tools/bench/gpu_offload.sh runs
#            these two groups and checks streaming against the resident forward first
# --once runs our side once (before PyTorch) instead of before and after it.
# STEPS=N sets the sampling steps of the e2e, user and offload generations (default 30).
# OURS_SETTINGS="VAR=VALUE ..." gives our processes (only) runtime settings, e.g.
# OURS_SETTINGS=SKYREELS_CUDA_ARENA=direct.
# --smoke runs tiny shapes on the CPU (our ORT CPU build, torch CPU fp32) to check the plumbing.
# --dry-run prints what would run and runs nothing.
# Our causal forward is `dit_bench ... ITERATIONS $OURS_CAUSAL_ARGS` (default
# `--causal-block-size N`); a dit_bench without that option fails at once, and its line says so.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
groups="dit,vae"
results=""
work="/tmp/skyreels-bench"
bin=".carry/bin"
ort="/opt/ortgpu/ortlib"
ort_parts="/opt/ortgpu"
wheels=".whl"
site="/tmp/site"
iterations=3
causal_block_size=""
once=false
timeout=420
smoke=false
dry_run=false
python="${PYTHON:-python3}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
fail() { printf 'compare.sh: %s\n' "$1" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --only) groups="${2:?--only needs GROUPS}"; shift 2 ;;
    --results) results="${2:?}"; shift 2 ;;
    --work) work="${2:?}"; shift 2 ;;
    --bin) bin="${2:?}"; shift 2 ;;
    --ort) ort="${2:?}"; shift 2 ;;
    --ort-parts) ort_parts="${2:?}"; shift 2 ;;
    --wheels) wheels="${2:?}"; shift 2 ;;
    --site) site="${2:?}"; shift 2 ;;
    --iterations) iterations="${2:?}"; shift 2 ;;
    --causal-block-size) causal_block_size="${2:?}"; shift 2 ;;
    --timeout) timeout="${2:?}"; shift 2 ;;
    --once) once=true; shift ;;
    --smoke) smoke=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) fail "unknown option $1
  fix: see tools/bench/compare.sh --help" ;;
  esac
done
for group in ${groups//,/ }; do
  case "$group" in dit|vae|dit14b|e2e|user|offload|offload14b) ;; *) fail "unknown group $group
  fix: --only takes a comma-separated list of dit, vae, dit14b, e2e, user, offload, offload14b" ;; esac
done
wants() { case ",$groups," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
results="${results:-${OUT:-$work}/results.jsonl}"
# Block-causal over 5 latent frames; --smoke's 3 latent frames take blocks of 1.
if [ -z "$causal_block_size" ]; then
  if $smoke; then causal_block_size=1; else causal_block_size=5; fi
fi
ours_causal_args="${OURS_CAUSAL_ARGS:---causal-block-size $causal_block_size}"
offload_small_budget="${OFFLOAD_SMALL_BUDGET:-8GiB}"
offload_large_budget="${OFFLOAD_LARGE_BUDGET:-24GiB}"

case ":${LD_LIBRARY_PATH:-}:" in
  *":$ort:"*|*ortgpu*|*onnxruntime*)
    fail "LD_LIBRARY_PATH holds ONNX Runtime's folder ($LD_LIBRARY_PATH): PyTorch would load CUDA libraries it was not built with
  fix: start compare.sh without exporting it; the script gives it to our binaries alone" ;;
esac

if $smoke; then
  # Tiny shapes on the CPU: the tiny DiT (2 heads x 16, 2 layers) and VAE (base width 8).
  target=cpu dtype=fp32 backend=cpu device=cpu dit_size=tiny vae_size=tiny
  frames=3 height=8 width=12 pixel_frames=9 pixel_height=64 pixel_width=96 steps=2
  long_frames=25 long_base=13 long_overlap=5
  text_encoder_args=(--text-encoder)
  ours_env=()
else
  target=cuda dtype=bf16 backend=cuda device=cuda dit_size=1.3b vae_size=wan21
  frames=25 height=68 width=120 pixel_frames=97 pixel_height=544 pixel_width=960 steps="${STEPS:-30}"
  long_frames=257 long_base=97 long_overlap=17 umt5_layers=24
  text_encoder_args=(--text-encoder)
  # The README's deployment, for our processes only: ONNX Runtime GPU, then CUDA 13 and cuDNN 9
  # (system CUDA, then the nvidia-*-cu13 wheels of PyTorch's venv: ../shared/tools/gpu-carry.sh's
  # order), and the wheels' cuDNN folder last, for a machine whose system folders hold none.
  wheels_nvidia=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
  ours_library_path="${OURS_LD_LIBRARY_PATH:-$ort:/usr/local/cuda-13.0/targets/x86_64-linux/lib:$wheels_nvidia/cu13/lib:/usr/lib/x86_64-linux-gnu:$wheels_nvidia/cudnn/lib}"
  ours_env=(env "ORT_DYLIB_PATH=$ort/libonnxruntime.so" "LD_LIBRARY_PATH=$ours_library_path")
fi

show() { printf '%q ' "$@"; printf '\n'; }
step() { printf '\n== %s\n' "$*"; }
# measure LABEL SIDE COMMAND...: one process under the sampler.
measure() {
  local label="$1" side="$2"; shift 2
  if $dry_run; then printf '[%s] ' "$side"; show "$@"; return 0; fi
  "$python" "$here/measure.py" --label "$label" --side "$side" --results "$results" --timeout "$timeout" -- "$@" || true
}
prepare() {
  if $dry_run; then show "$@"; return 0; fi
  "$@"
}
# OURS_SETTINGS="VAR=VALUE ..." adds our runtime's settings (e.g. SKYREELS_CUDA_ARENA=direct) to
# our processes alone; they are in each result line's argv.
# shellcheck disable=SC2206  # a list of VAR=VALUE words
ours_settings=(${OURS_SETTINGS:-})
ours() {
  local label="$1"; shift
  if [ ${#ours_env[@]} -gt 0 ]; then
    measure "$label" ours "${ours_env[@]}" "${ours_settings[@]}" "$@"
  else
    measure "$label" ours env "${ours_settings[@]}" "$@"
  fi
}
torch_side() {
  local label="$1"; shift
  measure "$label" torch env "PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}" "$python" "$here/torch_bench.py" --device "$device" --dtype "$dtype" "$@"
}
ours_dit() {
  ours "dit-$1" "$bin/dit_bench" "$work/engine-$1" "$backend" "$frames" "$height" "$width" "$iterations"
  if [ "$1" = "$dit_size" ] && wants dit; then
    # shellcheck disable=SC2086  # OURS_CAUSAL_ARGS is a list of words
    ours "dit-$1-causal" "$bin/dit_bench" "$work/engine-$1" "$backend" "$frames" "$height" "$width" "$iterations" $ours_causal_args
  fi
}

# The carried pieces: wheels for the PyTorch side, ONNX Runtime GPU for ours.
if [ -d "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1 && { $dry_run || [ ! -d "$site/diffusers" ]; }; then
  prepare "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
fi
if ! $smoke && { $dry_run || [ ! -e "$ort/libonnxruntime.so" ]; } && ls "$ort_parts"/part* >/dev/null 2>&1; then
  if $dry_run; then echo "(cd $ort_parts && cat part* | xz -d | tar -xf -)"; else (cd "$ort_parts" && cat part* | xz -d | tar -xf -); fi
fi
if ! $smoke && ! $dry_run && [ ! -e "$ort/libonnxruntime.so" ]; then
  fail "no ONNX Runtime GPU at $ort/libonnxruntime.so
  fix: send the parts of ../shared/tools/gpu-carry.sh to $ort_parts first, or pass --ort DIR"
fi
for program in dit_bench vae_bench e2e_bench write_random_dit write_random_vae write_random_umt5 skyreels-export; do
  $dry_run || [ -x "$bin/$program" ] || fail "no $bin/$program
  fix: carry the release builds (tools/bench/prepare_carry.sh puts them in .carry/bin), or pass --bin DIR"
done

if ! $dry_run; then
  mkdir -p "$work" "$(dirname "$results")"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: peaks will be null"
fi
echo "results: $results"

# Models with random weights of the real shapes, then their engines (the umT5 only for `user`).
source_dir="$work/dit-$dit_size"
if wants dit || wants vae || wants e2e || wants user || wants offload; then
  # Each writer only where its file is missing: gpu_offload.sh check writes the DiT alone.
  if $dry_run || [ ! -f "$source_dir/model.safetensors" ]; then
    prepare "$bin/write_random_dit" "$dit_size" "$source_dir"
  fi
  if $dry_run || [ ! -f "$source_dir/Wan2.1_VAE.safetensors" ]; then
    prepare "$bin/write_random_vae" "$vae_size" "$source_dir"
  fi
  if wants user && { $dry_run || [ ! -d "$source_dir/text_encoder" ]; }; then
    if $smoke; then
      # The umT5 writer has XXL width only (2 GB even at 2 layers): the tiny fixture encoder (width 32).
      prepare mkdir -p "$source_dir/text_encoder" "$source_dir/tokenizer"
      prepare cp tests/fixtures/text/hf/config.json tests/fixtures/text/hf/model.safetensors "$source_dir/text_encoder/"
      prepare cp tests/fixtures/text/tokenizer.json "$source_dir/tokenizer/"
    else
      prepare "$bin/write_random_umt5" "$umt5_layers" "$source_dir"
    fi
  fi
  # Only `user` writes a text encoder; the other groups export the DiT and the VAE alone.
  require=dit
  if wants user; then require=all; fi
  prepare "$bin/skyreels-export" "$source_dir" --out "$work/engine-$dit_size" --target "$target" --dtype "$dtype" --require "$require" --force
fi
if wants dit14b || wants offload14b; then
  if $dry_run || [ ! -f "$work/dit-14b/model.safetensors" ]; then
    prepare "$bin/write_random_dit" 14b "$work/dit-14b"
  fi
  prepare "$bin/skyreels-export" "$work/dit-14b" --out "$work/engine-14b" --target "$target" --dtype "$dtype" --require dit --force
fi

if wants dit; then
  step "DiT $dit_size forward: ours, diffusers (plain, block-causal, torch.compile), ours"
  ours_dit "$dit_size"
  torch_side "dit-$dit_size" dit "$dit_size" "$frames" "$height" "$width" "$iterations"
  torch_side "dit-$dit_size-causal" dit "$dit_size" "$frames" "$height" "$width" "$iterations" --causal-block-size "$causal_block_size"
  torch_side "dit-$dit_size-compile" dit "$dit_size" "$frames" "$height" "$width" "$iterations" --compile
  $once || ours_dit "$dit_size"
fi
if wants vae; then
  step "VAE decode, $pixel_frames frames: ours, diffusers, ours"
  ours vae "$bin/vae_bench" "$work/engine-$dit_size" "$backend" "$frames" "$height" "$width"
  torch_side vae vae "$frames" "$height" "$width" --size "$vae_size"
  $once || ours vae "$bin/vae_bench" "$work/engine-$dit_size" "$backend" "$frames" "$height" "$width"
fi
if wants dit14b; then
  step "DiT 14B forward: ours, diffusers, ours"
  ours_dit 14b
  torch_side dit-14b dit 14b "$frames" "$height" "$width" "$iterations"
  $once || ours_dit 14b
fi
if wants e2e; then
  step "DF generation, $pixel_frames frames, $steps steps, CFG 6: ours, diffusers, ours"
  ours e2e "$bin/e2e_bench" "$work/engine-$dit_size" "$backend" "$pixel_frames" "$pixel_height" "$pixel_width" "$steps"
  torch_side e2e e2e "$dit_size" "$pixel_frames" "$pixel_height" "$pixel_width" "$steps"
  $once || ours e2e "$bin/e2e_bench" "$work/engine-$dit_size" "$backend" "$pixel_frames" "$pixel_height" "$pixel_width" "$steps"
fi
if wants user; then
  step "A user's run: $long_frames frames in windows of $long_base (overlap $long_overlap), umT5 text encoder, ours"
  ours user "$bin/e2e_bench" "$work/engine-$dit_size" "$backend" "$long_frames" "$pixel_height" "$pixel_width" "$steps" \
    "${text_encoder_args[@]}" --base-num-frames "$long_base" --overlap-history "$long_overlap"
fi
offload_bench() {
  local label="$1" size="$2"; shift 2
  ours "$label" "$bin/dit_bench" "$work/engine-$size" "$backend" "$frames" "$height" "$width" "$iterations" "$@"
}
if wants offload; then
  step "DiT $dit_size weight streaming: resident, then --offload under --max-gpu-memory $offload_small_budget; one forward, then one guided row (ours)"
  offload_bench "dit-$dit_size-resident" "$dit_size"
  offload_bench "dit-$dit_size-offload" "$dit_size" --offload --max-gpu-memory "$offload_small_budget"
  offload_bench "dit-$dit_size-resident-guided" "$dit_size" --guided
  offload_bench "dit-$dit_size-offload-guided" "$dit_size" --guided --offload --max-gpu-memory "$offload_small_budget"
  # OFFLOAD_E2E=0 leaves out the two generations (about 3.5 minutes) when a call is short.
  if [ "${OFFLOAD_E2E:-1}" != 0 ]; then
  ours e2e-resident "$bin/e2e_bench" "$work/engine-$dit_size" "$backend" "$pixel_frames" "$pixel_height" "$pixel_width" "$steps"
  ours e2e-offload "$bin/e2e_bench" "$work/engine-$dit_size" "$backend" "$pixel_frames" "$pixel_height" "$pixel_width" "$steps" \
    --offload --max-gpu-memory "$offload_small_budget"
  fi
fi
if wants offload14b; then
  # The 14B DiT's 28 GB of weights do not fit the budget: the plan streams them by itself.
  step "DiT 14B weight streaming: resident, then under --max-gpu-memory $offload_large_budget (ours)"
  offload_bench dit-14b-resident 14b
  offload_bench dit-14b-offload 14b --max-gpu-memory "$offload_large_budget"
fi
if ! $dry_run; then
  step "summary"
  "$python" "$here/summarise.py" "$results" || true
fi
