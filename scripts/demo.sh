#!/usr/bin/env bash
# The main job on a fresh machine: export the built-in tiny model and generate a video on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin skyreels-export --bin skyreels-build --bin skyreels
./target/release/skyreels-export tiny --out out/tiny-engine --force
./target/release/skyreels generate --engines out/tiny-engine --prompt "a red fox running through fresh snow" \
  --num-frames 17 --size 96x64 --steps 10 --seed 42 --out out/tiny.mp4
