# shellcheck shell=bash disable=SC2034,SC2154  # sourced: the caller uses `ours` and the paths, and sets `results`
# Sourced by the tools/bench scripts that run our binaries alone on the GPU machine:
#   ours                the README's deployment environment, given to one process
#                       ("${ours[@]}" program args); never exported to the calling shell
#   ensure_engine_1_3b  the 1.3B engine (random bf16 weights of the real shapes plus the real-size
#                       VAE) in $work/engine-1.3b, made where it is missing
#   measure LABEL [VAR=VALUE...] PROGRAM ARGS...
#                       runs PROGRAM in that environment under measure.py (whole-process peak from
#                       nvidia-smi), appending its result line to $results; at most
#                       $measure_timeout seconds (default 150); skipped unless ROWS is empty or
#                       lists LABEL with its spaces as dashes
#   arena_rows FILE     one table row per result line of FILE: seconds, whole-process peak, and
#                       the arena's own statistics
# Environment: BIN (default .carry/bin), ORT (/opt/ortgpu/ortlib), WORK (/tmp/skyreels-bench), ROWS.
bin="${BIN:-.carry/bin}"
ort="${ORT:-/opt/ortgpu/ortlib}"
work="${WORK:-/tmp/skyreels-bench}"
nvidia=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
ours=(env "ORT_DYLIB_PATH=$ort/libonnxruntime.so"
  "LD_LIBRARY_PATH=$ort:/usr/local/cuda-13.0/targets/x86_64-linux/lib:$nvidia/cu13/lib:/usr/lib/x86_64-linux-gnu:$nvidia/cudnn/lib")

ensure_engine_1_3b() {
  [ -f "$work/engine-1.3b/manifest.yaml" ] && return 0
  mkdir -p "$work"
  [ -f "$work/dit-1.3b/model.safetensors" ] || "$bin/write_random_dit" 1.3b "$work/dit-1.3b" >/dev/null
  [ -f "$work/dit-1.3b/Wan2.1_VAE.safetensors" ] || "$bin/write_random_vae" wan21 "$work/dit-1.3b" >/dev/null
  "$bin/skyreels-export" "$work/dit-1.3b" --out "$work/engine-1.3b" --target cuda --dtype bf16 --require dit --force >/dev/null
}

measure() {
  local label="$1"; shift
  [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" ${label// /-} "* ]] || return 0
  timeout "${measure_timeout:-150}" python3 "$(dirname "${BASH_SOURCE[0]}")/measure.py" --label "$label" --side ours \
    --results "$results" -- "${ours[@]}" "$@" >/dev/null
}

arena_rows() {
  python3 - "$1" <<'PY'
import json, sys
gib = lambda b: f"{b / 2**30:.2f}" if b is not None else "-"
print("| variant | seconds | peak (nvidia-smi) GiB | arena live at most GiB | reserved GiB | largest block GiB | extensions |")
print("|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    d = json.loads(line)
    arena = d.get("arena") or d.get("arena_after_decode") or {}
    peak = (d.get("measured") or {}).get("peak_process_mib")
    seconds = d.get("median_s") or d.get("decode_s") or d.get("generate_s") or d.get("error")
    peak_gib = f"{peak / 1024:.2f}" if peak else "-"
    print(f"| {d['label']} | {seconds} | {peak_gib} | {gib(arena.get('max_in_use'))} | "
          f"{gib(arena.get('reserved'))} | {gib(arena.get('max_allocation'))} | {arena.get('extensions', '-')} |")
PY
}
