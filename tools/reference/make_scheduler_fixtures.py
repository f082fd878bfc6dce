#!/usr/bin/env python3
"""Writes the scheduler and timestep-matrix fixtures under tests/fixtures/scheduler/.

The oracle is diffusers 0.42.1: `UniPCMultistepScheduler(use_flow_sigmas=True,
prediction_type="flow_prediction", flow_shift=shift)` with its defaults (order 2, bh2, x0
prediction, lower order at the last step, final sigma zero, no corrector disabled), and
`SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix` (SPEC.md §3.1, §3.7, §5).

    tests/fixtures/scheduler/schedules.json          per (steps, shift): diffusers sigmas (f32) and timesteps (i64)
    tests/fixtures/scheduler/trajectories.json       index of the trajectory cases (steps, shift, shape, loop)
    tests/fixtures/scheduler/<case>.safetensors      samples [N+1, ...] (samples[0] is the start) and velocities [N, ...]
    tests/fixtures/scheduler/timestep_matrices.json  generate_timestep_matrix outputs, or the error it raises

Trajectory velocities are `noise - clean + 0.5 * randn` drawn per step from a seeded CPU
generator, so the samples move towards `clean` the way a flow model's would. Two loops:
- `rebind`: `sample = scheduler.step(v, t, sample)`, as a plain sampling loop does;
- `in_place_frames`: the diffusion-forcing loop of diffusers' SkyReels-V2 pipeline, which writes
  each frame's step output back into the latents through the view it passed in
  (`latents[:, :, idx] = schedulers[idx].step(v, t, latents[:, :, idx])`). At step 0 the scheduler
  keeps that view as `last_sample`, so the step-1 corrector starts from the step-0 output.

Run with the pinned reference venv (see requirements.txt), CPU only, a few seconds:
    /work/refvenv/bin/python tools/reference/make_scheduler_fixtures.py
"""

import argparse
import copy
import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from diffusers import SkyReelsV2DiffusionForcingPipeline, UniPCMultistepScheduler
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "tests" / "fixtures" / "scheduler"
PINNED = ("torch", "diffusers", "numpy", "safetensors")

SCHEDULES = [(30, 8.0), (50, 5.0), (30, 3.0), (10, 8.0)]

# name, steps, shift, sample shape, loop, seed
TRAJECTORIES = [
    ("unipc_30_shift8", 30, 8.0, (16, 4, 6), "rebind", 1),
    ("unipc_50_shift5", 50, 5.0, (16, 2, 3), "rebind", 2),
    ("unipc_30_shift3", 30, 3.0, (16, 2, 3), "rebind", 3),
    ("unipc_10_shift8", 10, 8.0, (16, 2, 3), "rebind", 4),
    ("unipc_30_shift8_in_place_frames", 30, 8.0, (1, 16, 2, 2, 3), "in_place_frames", 5),
]


def check_versions():
    pins = {}
    for line in (REPO_ROOT / "tools" / "reference" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    wrong = []
    for name in PINNED:
        installed = metadata.version(name)
        if not installed.startswith(pins[name]):
            wrong.append(f"{name} {installed} (pinned {pins[name]})")
    if wrong:
        sys.exit("installed versions differ from requirements.txt: " + ", ".join(wrong) + " (--skip-version-check overrides)")


def diffusers_scheduler(steps, shift):
    scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift)
    assert scheduler.config.solver_order == 2 and scheduler.config.solver_type == "bh2"
    assert scheduler.config.predict_x0 and scheduler.config.lower_order_final
    assert scheduler.config.final_sigmas_type == "zero" and list(scheduler.config.disable_corrector) == []
    scheduler.set_timesteps(steps)
    return scheduler


def schedules():
    out = []
    for steps, shift in SCHEDULES:
        scheduler = diffusers_scheduler(steps, shift)
        assert scheduler.sigmas.dtype == torch.float32 and scheduler.timesteps.dtype == torch.int64
        assert len(scheduler.sigmas) == steps + 1 and float(scheduler.sigmas[-1]) == 0.0
        out.append(
            {
                "steps": steps,
                "shift": shift,
                "sigmas": [float(s) for s in scheduler.sigmas.tolist()],
                "timesteps": [int(t) for t in scheduler.timesteps.tolist()],
            }
        )
    return out


def trajectory(steps, shift, shape, loop, seed):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator)
    clean = torch.randn(shape, generator=generator)
    velocities = torch.stack([noise - clean + 0.5 * torch.randn(shape, generator=generator) for _ in range(steps)])
    if loop == "rebind":
        scheduler = diffusers_scheduler(steps, shift)
        sample = noise.clone()
        samples = [sample.clone()]
        for index, timestep in enumerate(scheduler.timesteps):
            sample = scheduler.step(velocities[index], timestep, sample, return_dict=False)[0]
            samples.append(sample.clone())
    else:
        frames = shape[2]
        template = diffusers_scheduler(steps, shift)
        schedulers = [copy.deepcopy(template) for _ in range(frames)]
        for scheduler in schedulers:
            scheduler.set_timesteps(steps)
        latents = noise.clone()
        samples = [latents.clone()]
        for index, timestep in enumerate(template.timesteps):
            for frame in range(frames):
                latents[:, :, frame] = schedulers[frame].step(
                    velocities[index][:, :, frame], timestep, latents[:, :, frame], return_dict=False
                )[0]
            samples.append(latents.clone())
    return torch.stack(samples).contiguous(), velocities.contiguous()


def replay_rebound(steps, shift, samples, velocities, frame_axis):
    """The in-place loop's trajectory stepped frame by frame with fresh tensors (no aliasing)."""
    out = []
    for frame in range(samples.shape[1:][frame_axis]):
        scheduler = diffusers_scheduler(steps, shift)
        sample = samples[0].select(frame_axis, frame).clone()
        for index, timestep in enumerate(scheduler.timesteps):
            velocity = velocities[index].select(frame_axis, frame).clone()
            sample = scheduler.step(velocity, timestep, sample, return_dict=False)[0]
        out.append(sample)
    return torch.stack(out, dim=frame_axis)


def timestep_matrix_cases():
    """(num_frames, steps, base_num_frames, ar_step, num_pre_ready, causal_block_size)."""
    cases = []
    for steps in (30, 10):
        for num_frames in (25, 20, 13, 5):
            for causal_block_size in (1, 5):
                if num_frames % causal_block_size:
                    continue
                for ar_step in (0, 5, 3):
                    for num_pre_ready in (0, 5):
                        if num_pre_ready >= num_frames:
                            continue
                        large = causal_block_size == 1 and num_frames >= 20 and ar_step > 0
                        if large and (steps, num_frames, ar_step) != (30, 25, 5):
                            continue
                        cases.append((num_frames, steps, num_frames, ar_step, num_pre_ready, causal_block_size))
                    # Sliding windows: a base window smaller than the frame count (ar_step lower bound applies).
                    for base_num_frames in (num_frames - 5, num_frames - 10):
                        if base_num_frames < causal_block_size:
                            continue
                        if causal_block_size == 1 and num_frames != 13:
                            continue
                        cases.append((num_frames, steps, base_num_frames, ar_step, 0, causal_block_size))
    # Prefixes that are not a whole number of blocks (SPEC §3.4): the partial block is not marked ready.
    cases.append((25, 10, 25, 5, 1, 5))
    cases.append((25, 10, 25, 5, 7, 5))
    cases.append((20, 10, 20, 0, 3, 5))
    # A base window longer than the frames (diffusers' short-video call): the interval end is base_num_frames.
    cases.append((5, 10, 25, 3, 0, 1))
    return cases


def timestep_matrices():
    templates = {steps: diffusers_scheduler(steps, 8.0).timesteps for steps in (30, 10)}
    out = []
    for num_frames, steps, base_num_frames, ar_step, num_pre_ready, causal_block_size in timestep_matrix_cases():
        case = {
            "num_frames": num_frames,
            "step_template": [int(t) for t in templates[steps].tolist()],
            "base_num_frames": base_num_frames,
            "ar_step": ar_step,
            "num_pre_ready": num_pre_ready,
            "causal_block_size": causal_block_size,
        }
        try:
            step_matrix, step_index, update_mask, valid_interval = SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix(
                None, num_frames, templates[steps], base_num_frames, ar_step, num_pre_ready, causal_block_size
            )
        except ValueError as error:
            case["error"] = str(error)
        else:
            assert step_matrix.dtype == torch.int64 and step_index.dtype == torch.int64 and update_mask.dtype == torch.bool
            case["step_matrix"] = step_matrix.tolist()
            case["step_index"] = step_index.tolist()
            case["update_mask"] = ["".join("1" if flag else "0" for flag in row) for row in update_mask.tolist()]
            case["valid_interval"] = [[int(s), int(e)] for s, e in valid_interval]
        out.append(case)
    return out


def shrink_interval_is_broken():
    """diffusers (and SkyReels-V2) replace the mask list by its first row under shrink_interval_with_mask."""
    template = diffusers_scheduler(10, 8.0).timesteps
    for ar_step in (0, 3):
        try:
            SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix(None, 5, template, 5, ar_step, 0, 1, True)
        except (TypeError, IndexError):
            continue
        raise AssertionError("shrink_interval_with_mask=True no longer raises; port its behaviour into a fixture")


def write_json(path, value):
    path.write_text(json.dumps(value, separators=(",", ":")) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-version-check", action="store_true")
    args = parser.parse_args()
    if not args.skip_version_check:
        check_versions()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)

    schedule_list = schedules()
    write_json(OUT / "schedules.json", schedule_list)
    spec_30_8 = [999, 995, 991, 986, 981, 975, 969, 963, 956, 949, 941, 932, 923, 912, 901, 889, 875, 859, 842, 822, 800, 774, 744, 709, 667, 616, 553, 473, 367, 221]
    assert schedule_list[0]["timesteps"] == spec_30_8, "SPEC §3.7 diffusers 30/8 timesteps"

    index = []
    for name, steps, shift, shape, loop, seed in TRAJECTORIES:
        samples, velocities = trajectory(steps, shift, shape, loop, seed)
        assert torch.isfinite(samples).all()
        path = OUT / f"{name}.safetensors"
        save_file({"samples": samples, "velocities": velocities}, str(path), metadata={"loop": loop})
        reread = load_file(str(path))
        assert torch.equal(reread["samples"], samples) and torch.equal(reread["velocities"], velocities)
        if loop == "in_place_frames":
            rebound = replay_rebound(steps, shift, samples, velocities, frame_axis=2)
            difference = (rebound - samples[-1]).abs().max().item()
            assert difference > 1e-3, f"the in-place loop should differ from a rebinding loop, max diff {difference}"
        index.append({"name": name, "steps": steps, "shift": shift, "shape": list(shape), "loop": loop, "seed": seed})
    write_json(OUT / "trajectories.json", index)

    matrices = timestep_matrices()
    assert any("error" in case for case in matrices) and sum("error" not in case for case in matrices) > 40
    write_json(OUT / "timestep_matrices.json", matrices)
    shrink_interval_is_broken()

    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(REPO_ROOT)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
