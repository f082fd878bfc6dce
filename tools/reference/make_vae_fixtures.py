#!/usr/bin/env python3
"""Writes the VAE parity fixtures under tests/fixtures/vae/.

A tiny, randomly initialised `diffusers.AutoencoderKLWan` with the real Wan 2.1 topology
(dim_mult [1,2,4,4], 2 residual blocks per level, temporal downsampling [False, True, True],
z_dim 16, the Wan 2.1 latent mean/std) at base width 4, saved in both checkpoint layouts the
exporter reads, together with reference encodes and decodes computed by diffusers itself:

    tests/fixtures/vae/diffusers/{config.json, diffusion_pytorch_model.safetensors}
    tests/fixtures/vae/original/Wan2.1_VAE.safetensors      # original Wan key names, no config
    tests/fixtures/vae/cases.safetensors

and a second model at base width 2 as the original release ships it, a `torch.save` zip pickle of
the state dict (an `OrderedDict` carrying `_metadata`, as `module.state_dict()` returns):

    tests/fixtures/vae/pth/Wan2.1_VAE.pth
    tests/fixtures/vae/pth_cases.safetensors

Case tensors (float32):
- `encode_video` [2,3,9,32,48] in [-1,1] and `encode_latents` [2,16,3,4,6]: the pipelines'
  normalised posterior mode, `(vae.encode(x).latent_dist.mode() - mean) * (1 / std)`;
- `decode_latents` [1,16,4,4,6] and `decode_video_unclamped` [1,3,13,32,48]: `AutoencoderKLWan._decode`
  on `z / (1 / std) + mean` without its final clamp (the script checks that clamping it gives
  `vae.decode(...).sample` exactly);
- in `pth_cases`: `encode_video` [1,3,5,16,24] -> `encode_latents` [1,16,2,2,3] and `decode_latents`
  [1,16,2,2,3] -> `decode_video_unclamped` [1,3,5,16,24], the same way.

and, from the committed base-width-4 model, diffusers' tiled decode (`enable_tiling`, small tiles
so that a tiny latent has several rows and columns of them; `--tiled-only` writes just this file):

    tests/fixtures/vae/tiled_cases.safetensors: `decode_latents` [1,16,3,7,9] (normalised) and
    `decode_video` [1,3,9,56,72], `vae.decode(z).sample` with tiles of 32x32 pixels at a stride of
    24 (rows) x 16 (columns), so tiles overlap by 8 and 16 pixels and the last ones are cut short.

Everything is seeded. The script re-reads what it wrote and checks it before it finishes.
"""

import argparse
import json
import shutil
from collections import OrderedDict
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from make_dit_fixtures import check_environment, read_safetensors, write_safetensors

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "vae"
SEED = 2001
PTH_SEED = 2002

CONFIG = dict(
    base_dim=4,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
)

# Base width 2: the real topology, small enough to ship a second checkpoint as a .pth.
PTH_CONFIG = dict(CONFIG, base_dim=2)

RESIDUAL = {"norm1.": "residual.0.", "conv1.": "residual.2.", "norm2.": "residual.3.", "conv2.": "residual.6.", "conv_shortcut.": "shortcut."}


def residual_leaf(leaf: str) -> str:
    for old, new in RESIDUAL.items():
        if leaf.startswith(old):
            return new + leaf[len(old):]
    raise KeyError(leaf)


def original_key(key: str, resnets_per_level: int) -> str:
    """diffusers `AutoencoderKLWan` name -> original Wan name, for any `num_res_blocks`."""
    for old, new in {"quant_conv.": "conv1.", "post_quant_conv.": "conv2."}.items():
        if key.startswith(old):
            return new + key[len(old):]
    part, rest = key.split(".", 1)
    assert part in ("encoder", "decoder"), key
    if rest.startswith("conv_in."):
        mapped = "conv1." + rest[len("conv_in."):]
    elif rest.startswith("norm_out."):
        mapped = "head.0." + rest[len("norm_out."):]
    elif rest.startswith("conv_out."):
        mapped = "head.2." + rest[len("conv_out."):]
    elif rest.startswith("mid_block.resnets."):
        index, leaf = rest[len("mid_block.resnets."):].split(".", 1)
        mapped = f"middle.{2 * int(index)}.{residual_leaf(leaf)}"
    elif rest.startswith("mid_block.attentions."):
        index, leaf = rest[len("mid_block.attentions."):].split(".", 1)
        mapped = f"middle.{2 * int(index) + 1}.{leaf}"
    elif part == "encoder" and rest.startswith("down_blocks."):
        index, leaf = rest[len("down_blocks."):].split(".", 1)
        if not (leaf.startswith("resample.") or leaf.startswith("time_conv.")):
            leaf = residual_leaf(leaf)
        mapped = f"downsamples.{index}.{leaf}"
    elif part == "decoder" and rest.startswith("up_blocks."):
        level, kind, index, leaf = rest[len("up_blocks."):].split(".", 3)
        start = int(level) * (resnets_per_level + 1)
        if kind == "resnets":
            mapped = f"upsamples.{start + int(index)}.{residual_leaf(leaf)}"
        else:
            assert kind == "upsamplers" and index == "0", key
            mapped = f"upsamples.{start + resnets_per_level}.{leaf}"
    else:
        raise KeyError(key)
    return f"{part}.{mapped}"


def to_original(state: dict) -> dict:
    renamed = {original_key(k, CONFIG["num_res_blocks"] + 1): v for k, v in state.items()}
    assert len(renamed) == len(state), "renaming to the original layout is not injective"
    return renamed


def init_weights(vae: AutoencoderKLWan, generator: torch.Generator, output_gain: float) -> None:
    with torch.no_grad():
        for name, parameter in vae.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            if name.endswith("gamma"):
                value = 1.0 + 0.3 * noise
            elif name.endswith("bias"):
                value = 0.1 * noise
            else:
                fan_in = parameter[0].numel()
                # A louder decoder output, so the final clamp matters for a fair share of the pixels.
                gain = output_gain if name == "decoder.conv_out.weight" else 1.0
                value = gain * noise / fan_in**0.5
            parameter.copy_(value)


def normalisation(vae: AutoencoderKLWan) -> tuple:
    """The pipelines' constants: `latents_mean` and `1 / latents_std`, shaped [1, z, 1, 1, 1]."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)
    return mean, inverse_std


def encode(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    mean, inverse_std = normalisation(vae)
    with torch.no_grad():
        mu = vae.encode(video).latent_dist.mode()
    return ((mu - mean) * inverse_std).contiguous()


def decode_unclamped(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """`AutoencoderKLWan._decode` (no tiling, no patching) up to, not including, its clamp."""
    mean, inverse_std = normalisation(vae)
    z = latents / inverse_std + mean
    with torch.no_grad():
        vae.clear_cache()
        x = vae.post_quant_conv(z)
        frames = []
        for i in range(x.shape[2]):
            vae._conv_idx = [0]
            frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0))
        vae.clear_cache()
        raw = torch.cat(frames, 2).contiguous()
        clamped = vae.decode(z).sample
    assert torch.equal(raw.clamp(-1.0, 1.0), clamped), "the manual decode loop differs from AutoencoderKLWan.decode"
    return raw


def build(config: dict, seed: int, output_gain: float, video_shape: tuple, latent_shape: tuple) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    vae = AutoencoderKLWan(**config).eval()
    init_weights(vae, generator, output_gain)
    video = torch.rand(*video_shape, generator=generator) * 2.0 - 1.0
    decode_latents = torch.randn(*latent_shape, generator=generator)
    cases = {
        "encode_video": video,
        "encode_latents": encode(vae, video),
        "decode_latents": decode_latents,
        "decode_video_unclamped": decode_unclamped(vae, decode_latents),
    }
    return vae, cases


def check(vae_dir: Path, original_file: Path, cases: dict) -> None:
    vae = AutoencoderKLWan.from_pretrained(vae_dir).eval()
    original, _ = read_safetensors(original_file)
    check_original(vae, original)
    check_cases(vae, FIXTURES / "cases.safetensors", cases)


def check_original(vae: AutoencoderKLWan, original: dict) -> None:
    diffusers_state = vae.state_dict()
    assert len(original) == len(diffusers_state) == 194, (len(original), len(diffusers_state))
    converted = convert_wan_vae_to_diffusers(original)
    assert set(converted) == set(diffusers_state), "the original layout disagrees with diffusers' own Wan VAE converter"
    for key, value in converted.items():
        assert torch.equal(value, diffusers_state[key]), key


def check_cases(vae: AutoencoderKLWan, path: Path, cases: dict) -> None:
    stored, _ = read_safetensors(path)
    assert torch.equal(encode(vae, stored["encode_video"]), stored["encode_latents"])
    assert torch.equal(decode_unclamped(vae, stored["decode_latents"]), stored["decode_video_unclamped"])
    for name, value in cases.items():
        assert torch.equal(stored[name], value), name
    clipped = (stored["decode_video_unclamped"].abs() > 1.0).float().mean().item()
    assert 0.05 < clipped < 0.6, f"the clamp should matter for some but not most values ({clipped:.3f} clipped)"
    frames = stored["encode_video"][:, :, :5]
    assert torch.equal(encode(vae, frames), stored["encode_latents"][:, :, :2]), "encoding is not causal"


TILE = dict(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=24, tile_sample_stride_width=16)
TILED_SEED = 2003


def write_tiled_cases(vae_dir: Path) -> None:
    """diffusers' `tiled_decode` (through `vae.decode`) of seeded latents, with the tiling in the metadata."""
    vae = AutoencoderKLWan.from_pretrained(vae_dir).eval()
    vae.enable_tiling(**TILE)
    generator = torch.Generator().manual_seed(TILED_SEED)
    latents = torch.randn(1, CONFIG["z_dim"], 3, 7, 9, generator=generator)
    mean, inverse_std = normalisation(vae)
    with torch.no_grad():
        video = vae.decode(latents / inverse_std + mean).sample.contiguous()
        vae.disable_tiling()
        whole = vae.decode(latents / inverse_std + mean).sample
    assert video.shape == (1, 3, 9, 56, 72), video.shape
    seam = (video - whole).abs().max().item()
    assert seam > 1e-3, f"tiling should change the decode of a random model ({seam})"
    metadata = {"reference": "diffusers AutoencoderKLWan.tiled_decode", "seed": str(TILED_SEED), "tiling": json.dumps(TILE, sort_keys=True)}
    path = FIXTURES / "tiled_cases.safetensors"
    write_safetensors(path, {"decode_latents": latents, "decode_video": video}, metadata)
    stored, _ = read_safetensors(path)
    assert torch.equal(stored["decode_video"], video)
    print(f"wrote {path} (tiled vs whole decode: max-abs {seam:.3e})")


def write_pth(path: Path, state: dict) -> None:
    """`torch.save` of an original-layout state dict shaped like `module.state_dict()`'s."""
    original = OrderedDict(sorted(to_original(state).items()))
    original._metadata = OrderedDict([("", {"version": 1}), ("encoder", {"version": 1})])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(original, path)


def check_pth(path: Path, cases: dict) -> None:
    loaded = torch.load(path, weights_only=True)
    vae = AutoencoderKLWan(**PTH_CONFIG).eval()
    vae.load_state_dict(convert_wan_vae_to_diffusers(dict(loaded)), strict=True)
    check_original(vae, dict(loaded))
    check_cases(vae, FIXTURES / "pth_cases.safetensors", cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-version-check", action="store_true")
    parser.add_argument("--tiled-only", action="store_true", help="write only tiled_cases.safetensors, from the committed model")
    args = parser.parse_args()
    if not args.skip_version_check:
        check_environment()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if args.tiled_only:
        write_tiled_cases(FIXTURES / "diffusers")
        return
    vae, cases = build(CONFIG, SEED, 3.0, (2, 3, 9, 32, 48), (1, CONFIG["z_dim"], 4, 4, 6))
    pth_vae, pth_cases = build(PTH_CONFIG, PTH_SEED, 1.5, (1, 3, 5, 16, 24), (1, CONFIG["z_dim"], 2, 2, 3))
    if FIXTURES.exists():
        shutil.rmtree(FIXTURES)
    (FIXTURES / "original").mkdir(parents=True)
    vae.save_pretrained(FIXTURES / "diffusers", safe_serialization=True)
    state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    write_safetensors(FIXTURES / "diffusers" / "diffusion_pytorch_model.safetensors", state, {"format": "pt"})
    original_file = FIXTURES / "original" / "Wan2.1_VAE.safetensors"
    write_safetensors(original_file, to_original(state), {"format": "pt"})
    metadata = {"reference": "diffusers AutoencoderKLWan", "seed": str(SEED), "config": json.dumps(CONFIG, sort_keys=True)}
    write_safetensors(FIXTURES / "cases.safetensors", cases, metadata)
    check(FIXTURES / "diffusers", original_file, cases)
    pth_metadata = dict(metadata, seed=str(PTH_SEED), config=json.dumps(PTH_CONFIG, sort_keys=True))
    write_safetensors(FIXTURES / "pth_cases.safetensors", pth_cases, pth_metadata)
    write_pth(FIXTURES / "pth" / "Wan2.1_VAE.pth", {k: v.detach().clone() for k, v in pth_vae.state_dict().items()})
    check_pth(FIXTURES / "pth" / "Wan2.1_VAE.pth", pth_cases)
    write_tiled_cases(FIXTURES / "diffusers")
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    print(f"wrote {FIXTURES} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
