#!/usr/bin/env python3
"""Summarises ONNX Runtime profiles (SKYREELS_ORT_PROFILE) by operator type: total time, share and
count, for the last run of each session in each file. With CUDA_LAUNCH_BLOCKING=1 the node times
are GPU times; without it, CUDA nodes only show their launch cost.

Usage: python3 ort_profile_summary.py PROFILE.json [...]
"""
import collections
import json
import sys

for path in sys.argv[1:]:
    events = json.load(open(path))
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        continue
    last = runs[-1]
    start, end = last["ts"], last["ts"] + last["dur"]
    by_op = collections.defaultdict(lambda: [0, 0])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and start <= e["ts"] <= end:
            op = e.get("args", {}).get("op_name", "?")
            by_op[op][0] += e["dur"]
            by_op[op][1] += 1
    total = sum(v[0] for v in by_op.values()) or 1
    print(f"== {path}: last run {last['dur'] / 1e3:.1f} ms, nodes {total / 1e3:.1f} ms")
    for op, (dur, count) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {op:<28} {dur / 1e3:9.1f} ms {100 * dur / total:5.1f} %  x{count}")
