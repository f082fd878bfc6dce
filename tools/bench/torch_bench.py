"""PyTorch side of the GPU benchmark: diffusers' SkyReels-V2 DiT forward (plain, block-causal,
torch.compile), Wan VAE decode and diffusion-forcing generation, random weights of the real
shapes, on the same GPU as the ONNX Runtime side. Run it with the environment the machine gives
PyTorch (nothing prepended to LD_LIBRARY_PATH): tools/bench/compare.sh does.

Usage: python3 torch_bench.py dit 1.3b|14b|tiny FRAMES HEIGHT WIDTH ITERATIONS [--causal-block-size N] [--compile]
       python3 torch_bench.py vae FRAMES HEIGHT WIDTH [--size wan21|tiny] [--profile]   (latent sizes)
       python3 torch_bench.py e2e 1.3b FRAMES HEIGHT WIDTH STEPS                (pixel sizes; DF pipeline, CFG 6)
       [--device cuda|cpu] [--dtype bf16|fp32]   (defaults: cuda, bf16; cpu/fp32 is for smoke tests)
       [--cast-all]   (every weight in --dtype; by default the modules diffusers keeps in float32
                       when loading with torch_dtype stay float32, as a user's model has them)
Prints one JSON line per run, ending with `process`: what this process loaded (process_report.py).
"""
import argparse
import json
import os
import sys
import time

import torch
from diffusers import AutoencoderKLWan, SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import process_report  # noqa: E402

CONFIGS = {
    "tiny": dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, text_dim=32, inject_sample_info=True),
    "1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096, inject_sample_info=True),
    "14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, text_dim=4096, inject_sample_info=False),
}
VAE_BASE_DIM = {"wan21": 96, "tiny": 8}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device):
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def emit(record, device):
    record["process"] = process_report.collect((device.index or 0) if device.type == "cuda" else None)
    print(json.dumps(record), flush=True)


def implementation(args, compiled=False):
    return f"diffusers-torch-{args.dtype}" + ("-compile" if compiled else "")


def as_loaded(model, dtype, cast_all):
    """Casts `model` to `dtype` as `from_pretrained(torch_dtype=dtype)` leaves it: the state-dict
    tensors of the class's `_keep_in_fp32_modules` (the DiT's rope, time embedder, modulation
    table and norms) stay float32. `cast_all` casts everything instead (`model.to(dtype)`, what
    this script did before 2026-12)."""
    keep = [] if cast_all else list(getattr(model, "_keep_in_fp32_modules", None) or [])
    state = set(model.state_dict())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if name in state and tensor.is_floating_point() and not any(k in name.split(".") for k in keep):
            tensor.data = tensor.data.to(dtype)
    return model.eval()


def weights_note(model, args):
    keep = [] if args.cast_all else list(getattr(model, "_keep_in_fp32_modules", None) or [])
    return {"dtype": args.dtype, "kept_float32": keep}


def transformer(args, device, dtype):
    cfg = dict(in_channels=16, out_channels=16, freq_dim=256, **CONFIGS[args.size])
    with torch.device(device):
        return as_loaded(SkyReelsV2Transformer3DModel(**cfg), dtype, args.cast_all), cfg


def dit(args, device, dtype):
    """One DF-mode forward (per-frame timesteps), timed ITERATIONS times after a first call; with
    --compile the first call holds torch.compile's compilation (default mode) and is reported
    apart, the timed calls are steady state."""
    model, cfg = transformer(args, device, dtype)
    if args.causal_block_size > 1:
        model._set_ar_attention(args.causal_block_size)
    runner = torch.compile(model) if args.compile else model
    reset_peak(device)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(1, 16, args.frames, args.height, args.width, device=device, dtype=dtype, generator=generator)
    timesteps = torch.tensor([[999 - 30 * f for f in range(args.frames)]], device=device)
    context = torch.randn(1, 512, cfg["text_dim"], device=device, dtype=dtype, generator=generator)
    kwargs = dict(enable_diffusion_forcing=True, return_dict=False)
    if cfg["inject_sample_info"]:
        kwargs["fps"] = [1]
    with torch.no_grad():
        out, first = timed(lambda: runner(latents, timesteps, context, **kwargs)[0], device)
        times = sorted(timed(lambda: runner(latents, timesteps, context, **kwargs), device)[1] for _ in range(args.iterations))
    median = times[len(times) // 2]
    record = {"bench": "dit_forward", "impl": implementation(args, args.compile), "size": args.size,
              "causal_block_size": args.causal_block_size if args.causal_block_size > 1 else None,
              "tokens": args.frames * (args.height // 2) * (args.width // 2), "first_s": first, "median_s": median, "times_s": times,
              "finite": bool(torch.isfinite(out).all()), "weights": weights_note(model, args), "peak_gib": peak_gib(device), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}
    if args.compile:
        record["compile_s"] = first - median
    emit(record, device)


def vae(args, device, dtype):
    with torch.device(device):
        model = as_loaded(AutoencoderKLWan(base_dim=VAE_BASE_DIM[args.size]), dtype, args.cast_all)
    reset_peak(device)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(1, 16, args.frames, args.height, args.width, device=device, dtype=dtype, generator=generator)
    with torch.no_grad():
        _, warmup = timed(lambda: model.decode(latents[:, :, :2]), device)
        video, seconds = timed(lambda: model.decode(latents, return_dict=False)[0], device)
        profile = profiled(lambda: model.decode(latents, return_dict=False), device) if args.profile else None
    emit({"bench": "vae_decode", "impl": implementation(args), "size": args.size, "latent_frames": args.frames, "video": list(video.shape),
          "warmup_s": warmup, "decode_s": seconds, "finite": bool(torch.isfinite(video).all()), "weights": weights_note(model, args), "peak_gib": peak_gib(device),
          "profile": profile}, device)


def profiled(fn, device, top=20):
    """One more (untimed) call under torch.profiler: the operators with the most GPU time of their
    own (seconds, calls), for setting beside ONNX Runtime's per-node profile of the same work."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    rows = []
    for event in prof.key_averages():
        own = getattr(event, "self_device_time_total", None)
        if own is None:
            own = getattr(event, "self_cuda_time_total", 0)
        if own > 0:
            rows.append({"op": event.key, "gpu_s": own / 1e6, "calls": event.count})
    rows.sort(key=lambda r: -r["gpu_s"])
    return {"total_gpu_s": sum(r["gpu_s"] for r in rows), "top": rows[:top]}


def e2e(args, device, dtype):
    """diffusers' diffusion-forcing pipeline end to end (synchronous, guidance 6, shift 8), bf16
    transformer and VAE with random weights, prompt embeddings given (no text encoder)."""
    model, cfg = transformer(args, device, dtype)
    with torch.device(device):
        decoder = as_loaded(AutoencoderKLWan(base_dim=VAE_BASE_DIM["tiny" if args.size == "tiny" else "wan21"]), dtype, args.cast_all)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=8.0)
    pipe = SkyReelsV2DiffusionForcingPipeline(tokenizer=None, text_encoder=None, transformer=model, vae=decoder, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(device).manual_seed(0)
    prompt = torch.randn(1, 512, cfg["text_dim"], device=device, dtype=dtype, generator=generator)
    negative = torch.randn(1, 512, cfg["text_dim"], device=device, dtype=dtype, generator=generator)
    reset_peak(device)
    with torch.no_grad():
        output, seconds = timed(lambda: pipe(prompt=None, prompt_embeds=prompt, negative_prompt_embeds=negative, num_frames=args.frames, height=args.height,
                                             width=args.width, num_inference_steps=args.steps, guidance_scale=6.0, ar_step=0, output_type="np",
                                             generator=generator).frames, device)
    emit({"bench": "e2e_df", "impl": implementation(args), "size": args.size, "frames": args.frames, "height": args.height, "width": args.width,
          "steps": args.steps, "weights": weights_note(model, args), "generate_s": seconds, "video": list(output.shape), "peak_gib": peak_gib(device)}, device)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--cast-all", action="store_true", help="cast every weight to --dtype (no float32 modules)")
    commands = parser.add_subparsers(dest="command", required=True)
    d = commands.add_parser("dit")
    d.add_argument("size", choices=sorted(CONFIGS))
    for name in ("frames", "height", "width", "iterations"):
        d.add_argument(name, type=int)
    d.add_argument("--causal-block-size", type=int, default=1)
    d.add_argument("--compile", action="store_true")
    v = commands.add_parser("vae")
    for name in ("frames", "height", "width"):
        v.add_argument(name, type=int)
    v.add_argument("--size", default="wan21", choices=sorted(VAE_BASE_DIM))
    v.add_argument("--profile", action="store_true", help="add one profiled decode: the operators with the most GPU time")
    e = commands.add_parser("e2e")
    e.add_argument("size", choices=sorted(CONFIGS))
    for name in ("frames", "height", "width", "steps"):
        e.add_argument(name, type=int)
    for sub in (d, v, e):
        sub.add_argument("--device", default=argparse.SUPPRESS, choices=["cuda", "cpu"])
        sub.add_argument("--dtype", default=argparse.SUPPRESS, choices=sorted(DTYPES))
        sub.add_argument("--cast-all", default=argparse.SUPPRESS, action="store_true")
    return parser.parse_args(argv)


def main(argv):
    args = parse(argv)
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    {"dit": dit, "vae": vae, "e2e": e2e}[args.command](args, device, DTYPES[args.dtype])


if __name__ == "__main__":
    main(sys.argv[1:])
