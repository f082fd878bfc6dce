"""PyTorch side of the GPU benchmark: diffusers 0.42.1 SkyReels-V2 DiT forward and Wan VAE decode,
bf16, random weights of the real shapes, on the same GPU as the ONNX Runtime side.

Usage: python3 torch_bench.py dit 1.3b|14b FRAMES HEIGHT WIDTH ITERATIONS
       python3 torch_bench.py vae FRAMES HEIGHT WIDTH        (latent sizes)
       python3 torch_bench.py e2e 1.3b FRAMES HEIGHT WIDTH STEPS   (pixel sizes; DF pipeline, CFG 6)
Prints one JSON line per run.
"""
import json
import sys
import time

import torch
from diffusers import AutoencoderKLWan, SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler

CONFIGS = {
    "1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, inject_sample_info=True),
    "14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40, inject_sample_info=False),
}


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def dit(size, frames, height, width, iterations):
    cfg = dict(in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, **CONFIGS[size])
    with torch.device("cuda"):
        model = SkyReelsV2Transformer3DModel(**cfg).to(torch.bfloat16).eval()
    torch.cuda.reset_peak_memory_stats()
    latents = torch.randn(1, 16, frames, height, width, device="cuda", dtype=torch.bfloat16)
    timesteps = torch.tensor([[999 - 30 * f for f in range(frames)]], device="cuda")
    context = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
    kwargs = dict(enable_diffusion_forcing=True, return_dict=False)
    if cfg["inject_sample_info"]:
        kwargs["fps"] = [1]
    with torch.no_grad():
        _, first = timed(lambda: model(latents, timesteps, context, **kwargs))
        times = sorted(timed(lambda: model(latents, timesteps, context, **kwargs))[1] for _ in range(iterations))
    print(json.dumps({"bench": "dit_forward", "impl": "diffusers-torch-bf16", "size": size, "tokens": frames * height // 2 * width // 2,
                      "first_s": first, "median_s": times[len(times) // 2], "times_s": times,
                      "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "gpu": torch.cuda.get_device_name()}), flush=True)


def vae(frames, height, width):
    with torch.device("cuda"):
        model = AutoencoderKLWan().to(torch.bfloat16).eval()
    torch.cuda.reset_peak_memory_stats()
    latents = torch.randn(1, 16, frames, height, width, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        timed(lambda: model.decode(latents[:, :, :2]))
        video, seconds = timed(lambda: model.decode(latents, return_dict=False)[0])
    print(json.dumps({"bench": "vae_decode", "impl": "diffusers-torch-bf16", "latent_frames": frames, "video": list(video.shape),
                      "decode_s": seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)


def e2e(size, frames, height, width, steps):
    """diffusers' diffusion-forcing pipeline end to end (synchronous, guidance 6, shift 8), bf16
    transformer and VAE with random weights, prompt embeddings given (no text encoder)."""
    cfg = dict(in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, **CONFIGS[size])
    with torch.device("cuda"):
        transformer = SkyReelsV2Transformer3DModel(**cfg).to(torch.bfloat16).eval()
        vae = AutoencoderKLWan().to(torch.bfloat16).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=8.0)
    pipe = SkyReelsV2DiffusionForcingPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cuda").manual_seed(0)
    prompt = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16, generator=generator)
    negative = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16, generator=generator)
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        output, seconds = timed(lambda: pipe(prompt=None, prompt_embeds=prompt, negative_prompt_embeds=negative, num_frames=frames, height=height, width=width,
                                             num_inference_steps=steps, guidance_scale=6.0, ar_step=0, output_type="np", generator=generator).frames)
    print(json.dumps({"bench": "e2e_df", "impl": "diffusers-torch-bf16", "size": size, "frames": frames, "height": height, "width": width,
                      "steps": steps, "generate_s": seconds, "video": list(output.shape), "peak_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "dit":
        dit(sys.argv[2], *map(int, sys.argv[3:7]))
    elif kind == "e2e":
        e2e(sys.argv[2], *map(int, sys.argv[3:7]))
    else:
        vae(*map(int, sys.argv[2:5]))
