"""Runs one benchmark process while sampling GPU memory with nvidia-smi, the same way for every
side, and appends its JSON result lines, with what was measured around it, to a JSONL file.

Usage: python3 measure.py --label NAME --side ours|torch --results FILE [--timeout S] [--sample-ms MS] -- COMMAND ARGS...

The command runs with this script's environment and argv unchanged (give it `env VAR=... program`
to set variables for it alone). Two `nvidia-smi -lms` loops run beside it: per process
(`--query-compute-apps=pid,used_memory`) and for the whole device (`--query-gpu=memory.used`).
Each result line gains `label`, `side`, `argv` and `measured`:
- `peak_process_mib`: the largest use of the command's own PID;
- `peak_processes_mib`: the largest sum over every process that appeared on the GPU after the start
  (the command and any children, such as torch.compile's workers);
- `peak_device_mib` and `baseline_device_mib`: the device's used memory at its peak and before
  the start (the fallback where per-process figures are not reported);
- `wall_s`, `exit_code`, `samples`;
- `window_peak_process_mib` / `window_peak_device_mib` when the line has `generate_started_unix`
  and `window_seconds` (peak within each window's span).
A command that fails, times out or prints no JSON still gets a line, with `error` and the first
and last lines of its stderr (`stderr_head`, `stderr_tail`); its stderr is relayed to this script's as it comes.
Without nvidia-smi (a CPU smoke test) the peaks are null.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time


class Sampler:
    """One `nvidia-smi -lms` loop; keeps (unix time, fields) for each line. The time is the one
    nvidia-smi stamps on the line (its `timestamp` field), or the arrival time where the driver
    rejects that field; `stdbuf -oL` keeps lines from being held in a pipe buffer."""

    def __init__(self, flag, fields, interval_ms):
        self.samples = []
        self.process = None
        if shutil.which("nvidia-smi") is None:
            return
        prefix = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        for stamped in (True, False):
            query = ("timestamp," if stamped else "") + fields
            command = prefix + ["nvidia-smi", f"{flag}={query}", "--format=csv,noheader,nounits", "-lms", str(interval_ms)]
            self.stamped = stamped
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
            try:
                self.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                break
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            arrived = time.time()
            fields = [f.strip() for f in line.split(",")]
            if self.stamped and fields:
                stamp = parse_timestamp(fields.pop(0))
                arrived = stamp if stamp is not None else arrived
            self.samples.append((arrived, fields))

    def wait_first(self, timeout):
        end = time.time() + timeout
        while self.process is not None and not self.samples and time.time() < end:
            time.sleep(0.01)

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.thread.join(timeout=5)


def parse_timestamp(text):
    """nvidia-smi's `2026/12/03 10:15:42.123` (local time) as Unix seconds."""
    try:
        whole, _, milliseconds = text.partition(".")
        return time.mktime(time.strptime(whole, "%Y/%m/%d %H:%M:%S")) + float("0." + (milliseconds or "0"))
    except ValueError:
        return None


def number(text):
    try:
        return int(float(text))
    except ValueError:
        return None


def process_series(samples, pids_before, pid):
    """(time, own MiB, MiB of every new process) after each per-process sample line."""
    latest, series = {}, []
    for stamp, fields in samples:
        if len(fields) < 2:
            continue
        other, used = number(fields[0]), number(fields[1])
        if other is None or used is None or other in pids_before:
            continue
        latest[other] = used
        series.append((stamp, latest.get(pid, 0), sum(latest.values())))
    return series


def device_series(samples):
    return [(stamp, number(fields[0])) for stamp, fields in samples if fields and number(fields[0]) is not None]


def peak(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def window_peaks(series, start, seconds, column):
    peaks, begin = [], start
    for length in seconds:
        end = begin + length
        peaks.append(peak(row[column] for row in series if begin <= row[0] <= end))
        begin = end
    return peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--side", required=True, choices=["ours", "torch"])
    parser.add_argument("--results", required=True)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--sample-ms", type=int, default=50)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")

    apps_before = Sampler("--query-compute-apps", "pid,used_memory", args.sample_ms)
    apps_before.wait_first(1.0)
    time.sleep(0.2)
    apps_before.stop()
    pids_before = {number(f[0]) for _, f in apps_before.samples if f}
    processes = Sampler("--query-compute-apps", "pid,used_memory", args.sample_ms)
    device = Sampler("--query-gpu", "memory.used", args.sample_ms)
    device.wait_first(5.0)
    baseline = peak(v for _, v in device_series(device.samples))

    started = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
    stderr_head, stderr_tail = [], []

    def relay_stderr():
        for line in child.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            if len(stderr_head) < 10:
                stderr_head.append(line.rstrip("\n"))
            stderr_tail.append(line.rstrip("\n"))
            del stderr_tail[:-20]

    relay = threading.Thread(target=relay_stderr, daemon=True)
    relay.start()
    lines, error = [], None
    timer = None
    if args.timeout:
        def expire():
            nonlocal error
            error = f"timed out after {args.timeout:.0f} s"
            os.killpg(child.pid, signal.SIGKILL)
        timer = threading.Timer(args.timeout, expire)
        timer.start()
    for line in child.stdout:
        text = line.strip()
        if text.startswith("{"):
            try:
                lines.append(json.loads(text))
                continue
            except json.JSONDecodeError:
                pass
        print(line, end="", flush=True)
    code = child.wait()
    relay.join(timeout=5)
    if timer:
        timer.cancel()
    wall = time.time() - started
    time.sleep(3 * args.sample_ms / 1000)
    processes.stop()
    device.stop()

    per_process = process_series(processes.samples, pids_before, child.pid)
    per_device = device_series(device.samples)
    measured = {"peak_process_mib": peak(r[1] for r in per_process) if per_process else None,
                "peak_processes_mib": peak(r[2] for r in per_process) if per_process else None,
                "peak_device_mib": peak(v for t, v in per_device if t >= started),
                "baseline_device_mib": baseline, "wall_s": wall, "exit_code": code,
                "samples": {"process": len(processes.samples), "device": len(per_device)}, "sample_ms": args.sample_ms}
    if code != 0 and error is None:
        error = f"exit code {code}"
    if not lines:
        lines = [{"bench": None}]
        error = error or "printed no JSON line"
    with open(args.results, "a", encoding="utf-8") as results:
        for record in lines:
            entry = {"label": args.label, "side": args.side, "argv": command, **record, "measured": dict(measured)}
            if error:
                entry["error"] = error
                entry["stderr_head"] = stderr_head
                entry["stderr_tail"] = stderr_tail
            if "generate_started_unix" in record and record.get("window_seconds"):
                start, seconds = record["generate_started_unix"], record["window_seconds"]
                entry["measured"]["window_peak_process_mib"] = window_peaks(per_process, start, seconds, 1)
                entry["measured"]["window_peak_device_mib"] = window_peaks(per_device, start, seconds, 1)
            results.write(json.dumps(entry) + "\n")
            shown = {k: v for k, v in entry.items() if k not in ("process", "argv")}
            print(json.dumps(shown), flush=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
