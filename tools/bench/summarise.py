"""Turns tools/bench/compare.sh's results (JSON lines written by measure.py) into the markdown
tables for docs/STATUS.md: times, ratios ours/diffusers and ours/diffusers+compile, whole-process
peaks (nvidia-smi, both sides) and torch's allocated peak, the libraries each side loaded, and a
user's run (load times, seconds and peak per window).

Usage: python3 summarise.py RESULTS.jsonl [...]
"""
import json
import os
import sys
from collections import OrderedDict

TIME_FIELD = {"dit_forward": "median_s", "vae_decode": "decode_s", "e2e_df": "generate_s"}
ROWS = ["dit-1.3b", "dit-1.3b-causal", "dit-14b", "dit-14b-causal", "vae", "e2e", "dit-tiny", "dit-tiny-causal"]


def title(label, runs):
    """The row's title, from what its successful runs report."""
    record = next((r for r in runs if not r.get("error") and r.get("bench")), {})
    causal = next((r.get("causal_block_size") for r in runs if r.get("causal_block_size")), None)
    if label.startswith("dit-"):
        size = label.split("-")[1].upper()
        tokens = f", {record['tokens']:,} tokens" if record.get("tokens") else ""
        mode = (f", block-causal (block {causal})" if causal else ", block-causal") if label.endswith("-causal") else ""
        return f"DiT {size} forward{tokens}{mode}"
    if label == "vae":
        frames = f", {record['video'][2]} frames" if record.get("video") else ""
        return f"VAE decode{frames}"
    if label == "e2e":
        if not record:
            return "DF generation"
        return f"DF generation, {record.get('frames')} frames, {record.get('steps')} steps, CFG"
    return label


def load(paths):
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            records.extend(json.loads(line) for line in lines if line.strip())
    return records


def seconds(record):
    if record.get("error"):
        return None
    return record.get(TIME_FIELD.get(record.get("bench"), ""))


def gib(mib):
    return None if mib is None else mib / 1024


def fmt(value, unit="", digits=3):
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def process_peak(record):
    """Whole-process peak in GiB: the process's own nvidia-smi figure, else the sum of every new
    process, else the device's rise over its baseline."""
    m = record.get("measured", {})
    for key in ("peak_process_mib", "peak_processes_mib"):
        if m.get(key):
            return gib(m[key]), "process"
    if m.get("peak_device_mib") is not None and m.get("baseline_device_mib") is not None:
        return gib(m["peak_device_mib"] - m["baseline_device_mib"]), "device rise"
    return None, None


def describe_failure(record):
    error = record.get("error")
    return f"failed ({error})" if error else None


def times_cell(runs):
    if not runs:
        return "not run"
    cells = []
    for run in runs:
        value = seconds(run)
        cells.append(describe_failure(run) if value is None else fmt(value, " s"))
    return " / ".join(cells)


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def ratio(ours, theirs):
    return None if ours is None or not theirs else ours / theirs


def peaks_cell(runs, with_torch):
    cells = []
    for run in runs:
        value, how = process_peak(run)
        text = fmt(value, " GiB", 1) + (" (device rise)" if how == "device rise" else "")
        if with_torch:
            allocated = run.get("peak_gib")
            text += f"; torch allocated {fmt(allocated, ' GiB', 1)}"
        cells.append(text)
    return " / ".join(cells) if cells else "—"


def main_table(records):
    by_label = OrderedDict()
    for record in records:
        by_label.setdefault(record["label"], []).append(record)
    lines = ["| | ours (before / after diffusers) | diffusers | diffusers + torch.compile (compile) | ours / diffusers | ours / compiled "
             "| ours peak (nvidia-smi) | diffusers peak (nvidia-smi; torch allocated) | compiled peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label in ROWS:
        runs = by_label.get(label, [])
        compiled = [r for r in by_label.get(label + "-compile", []) if r["side"] == "torch"]
        if not runs and not compiled:
            continue
        ours = [r for r in runs if r["side"] == "ours"]
        theirs = [r for r in runs if r["side"] == "torch"]
        ours_mean = mean(seconds(r) for r in ours)
        theirs_mean = mean(seconds(r) for r in theirs)
        compiled_mean = mean(seconds(r) for r in compiled)
        compile_cell = times_cell(compiled)
        if compiled and compiled[0].get("compile_s") is not None and seconds(compiled[0]) is not None:
            compile_cell += f" ({compiled[0]['compile_s']:.0f} s)"
        lines.append(f"| {title(label, runs + compiled)} | {times_cell(ours)} | {times_cell(theirs)} | {compile_cell if compiled else '—'} "
                     f"| **{fmt(ratio(ours_mean, theirs_mean))}** | {fmt(ratio(ours_mean, compiled_mean))} "
                     f"| {peaks_cell(ours, False)} | {peaks_cell(theirs, True)} | {peaks_cell(compiled, True) if compiled else '—'} |")
    return lines if len(lines) > 2 else []


def drift_lines(records):
    lines = []
    by_label = OrderedDict()
    for record in records:
        if record["side"] == "ours":
            by_label.setdefault(record["label"], []).append(seconds(record))
    for label, values in by_label.items():
        if len(values) >= 2 and None not in values[:2] and values[0]:
            lines.append(f"- `{label}`: ours after / before = {values[1] / values[0]:.3f}")
    return lines


def library_name(library):
    name = os.path.basename(library["path"])
    if library.get("distribution"):
        name += f" ({library['distribution']})"
    return name


def libraries_table(records):
    sides = OrderedDict()
    for record in records:
        process = record.get("process")
        if process and process.get("libraries") is not None and record["side"] not in sides:
            sides[record["side"]] = record
    if not sides:
        return []
    families = OrderedDict()
    for side, record in sides.items():
        for library in record["process"]["libraries"]:
            families.setdefault(library["family"], OrderedDict()).setdefault(side, []).append(library)
    header = "| library | " + " | ".join(f"{side} (`{sides[side]['label']}`)" for side in sides) + " |"
    lines = [header, "|---|" + "---|" * len(sides)]
    for family, by_side in families.items():
        cells = []
        for side in sides:
            libraries = by_side.get(side, [])
            folders = sorted({os.path.dirname(l["path"]) for l in libraries})
            names = ", ".join(library_name(l) for l in libraries)
            cells.append(f"{names} in `{', '.join(folders)}`" if libraries else "not loaded")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return lines


def environment_lines(records):
    lines = []
    for side in ("ours", "torch"):
        record = next((r for r in records if r["side"] == side and r.get("process")), None)
        if record is None:
            continue
        process = record["process"]
        parts = [f"GPU {process.get('gpu')}", f"driver {process.get('driver')}"]
        if process.get("onnxruntime_version"):
            parts.append(f"ONNX Runtime {process['onnxruntime_version']}")
        torch = process.get("torch")
        if torch:
            parts.append(f"torch {torch.get('version')} (CUDA {torch.get('cuda')}, cuDNN {torch.get('cudnn')}, NCCL {torch.get('nccl')})")
        for name, version in (process.get("packages") or {}).items():
            parts.append(f"{name} {version}")
        if "ld_library_path" in process:
            parts.append(f"LD_LIBRARY_PATH {process['ld_library_path'] or '(unset)'}")
        lines.append(f"- {side}: " + ", ".join(parts))
    return lines


def user_lines(records):
    lines = []
    for record in records:
        if record["label"] != "user":
            continue
        if record.get("error"):
            lines.append(f"- user run failed: {record['error']}")
            continue
        loads = ", ".join(f"{name} {value:.1f} s" for name, value in (record.get("load_seconds") or {}).items())
        measured = record.get("measured", {})
        windows = record.get("window_seconds") or []
        process_peaks = measured.get("window_peak_process_mib") or [None] * len(windows)
        device_peaks = measured.get("window_peak_device_mib") or [None] * len(windows)
        peak, _ = process_peak(record)
        lines.append(f"- {record.get('frames')} frames in {record.get('windows')} windows of {record.get('base_num_frames')} "
                     f"(overlap {record.get('overlap_history')}), text encoder: {record.get('text_encoder')}; "
                     f"load: {loads}; prompt encoding {fmt(record.get('text_encode_s'), ' s', 2)}; "
                     f"generation {fmt(record.get('generate_s'), ' s', 1)}; whole-process peak {fmt(peak, ' GiB', 1)}")
        lines.append("")
        lines.append("| window | seconds | peak (process, nvidia-smi) | peak (device) |")
        lines.append("|---|---|---|---|")
        for index, value in enumerate(windows):
            lines.append(f"| {index + 1} | {value:.1f} | {fmt(gib(process_peaks[index]), ' GiB', 1)} | {fmt(gib(device_peaks[index]), ' GiB', 1)} |")
    return lines


def offload_table(records):
    """Weight streaming (compare.sh's offload group): each streamed run against the resident run
    of the same shape, with the budget it ran under and whether the goals were met (whole-process
    peak within the budget, time within 1.25x the resident)."""
    by_label = OrderedDict()
    for record in records:
        if record["side"] == "ours":
            by_label.setdefault(record["label"], []).append(record)
    lines = ["| | resident | streamed | streamed / resident | budget | resident peak | streamed peak | goals (peak within budget; time within 1.25x) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, runs in by_label.items():
        if "-offload" not in label:
            continue
        resident = by_label.get(label.replace("-offload", "-resident"), [])
        streamed_time, resident_time = mean(seconds(r) for r in runs), mean(seconds(r) for r in resident)
        budget_bytes = next((r.get("max_gpu_memory") for r in runs if r.get("max_gpu_memory")), None)
        budget = None if budget_bytes is None else budget_bytes / (1 << 30)
        peaks = [process_peak(r)[0] for r in runs]
        peak = max((p for p in peaks if p is not None), default=None)
        placement = next((r.get("placement") for r in runs if r.get("placement")), "?")
        if label.startswith("e2e"):
            record = next((r for r in runs if r.get("frames")), {})
            what = f"DF generation, {record.get('frames')} frames, {record.get('steps')} steps, CFG"
        else:
            guided = ", one guided row (2 branches)" if label.endswith("-guided") else ""
            what = f"DiT {label.split('-')[1].upper()} forward{guided}"
        time_ratio = ratio(streamed_time, resident_time)
        goals = []
        if peak is not None and budget is not None:
            goals.append(f"peak {'met' if peak <= budget else 'missed'}")
        if time_ratio is not None:
            goals.append(f"time {'met' if time_ratio <= 1.25 else 'missed'}")
        lines.append(f"| {what} ({placement}) | {times_cell(resident)} | {times_cell(runs)} | **{fmt(time_ratio)}** "
                     f"| {fmt(budget, ' GiB', 0)} | {peaks_cell(resident, False)} | {peaks_cell(runs, False)} | {', '.join(goals) or '—'} |")
    return lines if len(lines) > 2 else []


def main(paths):
    records = load(paths)
    sections = [main_table(records), offload_table(records), drift_lines(records), environment_lines(records), libraries_table(records),
                user_lines(records)]
    titles = [None, "Weight streaming (ours, whole-process peaks from nvidia-smi):", "Drift between our two runs:", "Environments (read by each process):",
              "Loaded libraries (from /proc/self/maps, first process of each side):", "A user's run (ours):"]
    out = []
    for title, lines in zip(titles, sections):
        if not lines:
            continue
        if title:
            out.extend(["", title, ""])
        out.extend(lines)
    failures = [r for r in records if r.get("error")]
    if failures:
        out.extend(["", "Failures:", ""])
        for r in failures:
            lines = [line.strip() for line in (r.get("stderr_head") or []) + (r.get("stderr_tail") or []) if line.strip()]
            last = next((line for line in lines if line.startswith(("Error:", "error:"))), lines[-1] if lines else "")
            out.append(f"- `{r['label']}` ({r['side']}): {r['error']}" + (f": `{last.strip()}`" if last else ""))
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
