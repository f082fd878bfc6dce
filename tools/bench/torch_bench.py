"""PyTorch side of the GPU benchmark: diffusers 0.42.1 SkyReels-V2 DiT forward and Wan VAE decode,
bf16, random weights of the real shapes, on the same GPU as the ONNX Runtime side.

Usage: python3 torch_bench.py dit 1.3b|14b FRAMES HEIGHT WIDTH ITERATIONS
       python3 torch_bench.py vae FRAMES HEIGHT WIDTH        (latent sizes)
Prints one JSON line per run.
"""
import json
import sys
import time

import torch
from diffusers import AutoencoderKLWan, SkyReelsV2Transformer3DModel

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


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "dit":
        dit(sys.argv[2], *map(int, sys.argv[3:7]))
    else:
        vae(*map(int, sys.argv[2:5]))
