#!/usr/bin/env bash
# The model load time a job saves on a server: one `skyreels generate` process per job (it loads
# every model, then generates) against `skyreels-serve` (models loaded once at start-up; each job
# only generates). Prints the one-shot job's stage timings, the server's load time and each server
# job's timings, and the server's /metrics (GPU memory included).
# Usage: tools/bench/gpu_serve_load.sh ENGINE [SIZE] [FRAMES] [STEPS] [WORK_DIR]
#   ENGINE: a full engine (DiT, VAE, text encoder), e.g. skyreels-export of SkyReels-V2-DF-1.3B-540P
#   --target cuda. BIN as in gpu_bench.sh (skyreels, skyreels-serve); needs curl and python3.
set -euo pipefail
engine="$1"; size="${2:-960x544}"; frames="${3:-17}"; steps="${4:-2}"
work="${5:-/tmp/skyreels-serve-load}"
bin="${BIN:-.carry/bin}"
mkdir -p "$work"
request="{\"prompt\": \"a red fox running through fresh snow\", \"size\": \"$size\", \"num_frames\": $frames, \"steps\": $steps, \"seed\": 1}"

echo "== one process per job: skyreels generate"
for run in 1 2; do
  "$bin/skyreels" generate --engines "$engine" --backend cuda --prompt "a red fox running through fresh snow" \
    --size "$size" --num-frames "$frames" --steps "$steps" --seed 1 --out "$work/one-$run.mp4" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"timings": d["timings"], "seconds": d["seconds"]}))'
done

echo "== skyreels-serve: models loaded once"
"$bin/skyreels-serve" --engines "$engine" --backend cuda --listen 127.0.0.1:0 --videos "$work/videos" 2>"$work/serve.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
until grep -q '^listening on ' "$work/serve.log"; do
  kill -0 $server 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.5
done
base=$(sed -n 's/^listening on //p' "$work/serve.log")
grep '^loaded ' "$work/serve.log"
for run in 1 2 3; do
  id=$(curl -s -X POST "$base/v1/videos" -H 'Content-Type: application/json' -d "$request" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    job=$(curl -s "$base/v1/videos/$id")
    status=$(echo "$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [ "$status" = completed ] || [ "$status" = failed ] && break
    sleep 0.5
  done
  echo "$job" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"job": d["id"], "status": d["status"], "timings": d["timings"]}))'
done
curl -s "$base/metrics" | grep -E '^skyreels_(model_load_seconds|gpu_memory_bytes|stage_seconds)'
kill -TERM $server
wait $server || true
trap - EXIT
