#!/usr/bin/env python3
"""Writes the DiT parity fixtures under tests/fixtures/dit/.

Three tiny, randomly initialised `diffusers.SkyReelsV2Transformer3DModel`s (fp32, 2 heads x 16,
2 layers) are saved in both checkpoint layouts the exporter reads, together with reference
forward passes computed by diffusers itself:

    tests/fixtures/dit/<model>/diffusers/{config.json, diffusion_pytorch_model.safetensors}
    tests/fixtures/dit/<model>/original/{config.json, *.safetensors [, model.safetensors.index.json]}
    tests/fixtures/dit/<model>/cases/<case>.safetensors

Everything is seeded; inputs and weights are bit-reproducible, velocities are reproducible to
float rounding of the CPU kernels. The script re-reads what it wrote and checks it (both
layouts hold the same weights, both reload to the recorded velocities) before it finishes.
"""

import argparse
import json
import shutil
import struct
import sys
from importlib import metadata as package_metadata
from pathlib import Path

import torch
from diffusers import SkyReelsV2Transformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors import safe_open

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "dit"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"

TEXT_LEN = 512
IMAGE_TOKENS = 257
PROMPT_LENGTH = 7

COMMON_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=16,  # RoPE splits t/h/w = 8/4/4 real dims
    ffn_dim=64,
    num_layers=2,
    text_dim=32,
    freq_dim=256,
    eps=1e-6,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=1024,
)

MODELS = {
    "df": dict(
        seed=1001,
        model_type="t2v",
        config=dict(in_channels=16, out_channels=16, inject_sample_info=True),
        original_storage="sharded",
        expected_tensor_count=74,
    ),
    "t2v": dict(
        seed=1002,
        model_type="t2v",
        config=dict(in_channels=16, out_channels=16, inject_sample_info=False),
        original_storage="bf16",
        expected_tensor_count=69,
    ),
    "i2v": dict(
        seed=1003,
        model_type="i2v",
        config=dict(in_channels=36, out_channels=16, image_dim=24, added_kv_proj_dim=32, inject_sample_info=False),
        original_storage="single",
        expected_tensor_count=87,
    ),
}

# diffusers prefix -> original prefix, for keys outside `blocks.{i}.`
TOP_LEVEL_RENAMES = {
    "patch_embedding.": "patch_embedding.",
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "condition_embedder.image_embedder.norm1.": "img_emb.proj.0.",
    "condition_embedder.image_embedder.ff.net.0.proj.": "img_emb.proj.1.",
    "condition_embedder.image_embedder.ff.net.2.": "img_emb.proj.3.",
    "condition_embedder.image_embedder.norm2.": "img_emb.proj.4.",
    "fps_embedding.": "fps_embedding.",
    "fps_projection.net.0.proj.": "fps_projection.0.",
    "fps_projection.net.2.": "fps_projection.2.",
    "proj_out.": "head.head.",
    "scale_shift_table": "head.modulation",
}

# diffusers suffix -> original suffix, inside `blocks.{i}.`
BLOCK_RENAMES = {
    "scale_shift_table": "modulation",
    "attn1.to_q.": "self_attn.q.",
    "attn1.to_k.": "self_attn.k.",
    "attn1.to_v.": "self_attn.v.",
    "attn1.to_out.0.": "self_attn.o.",
    "attn1.norm_q.": "self_attn.norm_q.",
    "attn1.norm_k.": "self_attn.norm_k.",
    "norm2.": "norm3.",  # the affine cross-attention pre-norm: diffusers norm2 == original norm3
    "attn2.to_q.": "cross_attn.q.",
    "attn2.to_k.": "cross_attn.k.",
    "attn2.to_v.": "cross_attn.v.",
    "attn2.to_out.0.": "cross_attn.o.",
    "attn2.norm_q.": "cross_attn.norm_q.",
    "attn2.norm_k.": "cross_attn.norm_k.",
    "attn2.add_k_proj.": "cross_attn.k_img.",
    "attn2.add_v_proj.": "cross_attn.v_img.",
    "attn2.norm_added_k.": "cross_attn.norm_k_img.",
    "ffn.net.0.proj.": "ffn.0.",
    "ffn.net.2.": "ffn.2.",
}


def check_environment() -> None:
    wanted = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            wanted[name] = version
    wrong = []
    for name, version in wanted.items():
        installed = package_metadata.version(name).split("+", 1)[0]
        if installed != version:
            wrong.append(f"{name} {installed} (pinned {version})")
    if wrong:
        sys.exit("package versions differ from requirements.txt: " + ", ".join(wrong) + " (pass --skip-version-check to run anyway)")


def rename_by_prefix(key: str, table: dict) -> str:
    matches = [(old, new) for old, new in table.items() if key == old or (old.endswith(".") and key.startswith(old))]
    if len(matches) != 1:
        raise KeyError(f"`{key}` matched {len(matches)} rename rules: {matches}")
    old, new = matches[0]
    return new + key[len(old):]


def original_key(diffusers_key: str) -> str:
    if diffusers_key.startswith("blocks."):
        _, index, rest = diffusers_key.split(".", 2)
        return f"blocks.{int(index)}." + rename_by_prefix(rest, BLOCK_RENAMES)
    return rename_by_prefix(diffusers_key, TOP_LEVEL_RENAMES)


def to_original(state: dict) -> dict:
    renamed = {original_key(k): v for k, v in state.items()}
    if len(renamed) != len(state):
        raise AssertionError("renaming to the original layout is not injective")
    return renamed


def diffusers_key(original: str) -> str:
    top_inverse = {new: old for old, new in TOP_LEVEL_RENAMES.items()}
    block_inverse = {new: old for old, new in BLOCK_RENAMES.items()}
    if original.startswith("blocks."):
        _, index, rest = original.split(".", 2)
        key = f"blocks.{int(index)}." + rename_by_prefix(rest, block_inverse)
    else:
        key = rename_by_prefix(original, top_inverse)
    assert original_key(key) == original, f"`{original}` does not round-trip"
    return key


def from_original(state: dict) -> dict:
    renamed = {diffusers_key(k): v for k, v in state.items()}
    if len(renamed) != len(state):
        raise AssertionError("renaming to the diffusers layout is not injective")
    return renamed


def init_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            if name.endswith("scale_shift_table"):
                value = 0.5 * noise
            elif ".attn1.norm_" in name:
                value = 2.0 * (1.0 + 0.2 * noise)
            elif ".attn2.norm_" in name:
                # Sharp cross-attention scores, so the 7 prompt keys outweigh the 505 identical
                # padding keys and the query path (norm2, to_q, norm_q) moves the output measurably.
                value = 3.0 * (1.0 + 0.2 * noise)
            elif ".norm" in name and name.endswith(".weight"):
                value = 1.0 + 0.2 * noise
            elif ".norm" in name and name.endswith(".bias"):
                value = 0.1 * noise
            elif name == "fps_embedding.weight":
                value = noise
            elif name.endswith(".bias"):
                value = 0.05 * noise
            else:
                value = 0.08 * noise
            parameter.copy_(value)


def round_through_bf16(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).to(torch.float32))


DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}


def write_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """safetensors writer with a sorted, deterministic header (the library orders `__metadata__` randomly)."""
    header = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    chunks = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        data = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for chunk in chunks:
            f.write(chunk)


def read_safetensors(path: Path) -> tuple[dict, dict]:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})


def original_config(config: dict, model_type: str) -> dict:
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    return {
        "model_type": model_type,
        "dim": dim,
        "ffn_dim": config["ffn_dim"],
        "freq_dim": config["freq_dim"],
        "in_dim": config["in_channels"],
        "out_dim": config["out_channels"],
        "num_heads": config["num_attention_heads"],
        "num_layers": config["num_layers"],
        "text_len": TEXT_LEN,
        "text_dim": config["text_dim"],
        "eps": config["eps"],
        "inject_sample_info": config["inject_sample_info"],
    }


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def write_original(model_dir: Path, state: dict, storage: str, config: dict, model_type: str) -> None:
    model_dir.mkdir(parents=True)
    write_json(model_dir / "config.json", original_config(config, model_type))
    original = {k: v.detach().clone() for k, v in to_original(state).items()}
    if storage == "bf16":
        original = {k: v.to(torch.bfloat16) for k, v in original.items()}
    if storage == "sharded":
        names = sorted(original)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        weight_map = {}
        for file, keys in shards.items():
            write_safetensors(model_dir / file, {k: original[k] for k in keys}, {"format": "pt"})
            weight_map.update({k: file for k in keys})
        total_size = sum(t.numel() * t.element_size() for t in original.values())
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        write_json(model_dir / "model.safetensors.index.json", index)
    else:
        write_safetensors(model_dir / "model.safetensors", original, {"format": "pt"})


def read_original(model_dir: Path) -> dict:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        state = {}
        for file in sorted(set(weight_map.values())):
            tensors, _ = read_safetensors(model_dir / file)
            assert all(weight_map[k] == file for k in tensors), f"{file}: keys disagree with the index"
            state.update(tensors)
        assert set(state) == set(weight_map), "index lists tensors that no shard holds"
        return state
    return read_safetensors(model_dir / "model.safetensors")[0]


def text_context(generator: torch.Generator, prompt_lengths: list, text_dim: int) -> torch.Tensor:
    context = torch.randn(len(prompt_lengths), TEXT_LEN, text_dim, generator=generator)
    for b, length in enumerate(prompt_lengths):
        context[b, length:] = 0.0
    return context


def make_case(model_name: str, spec: dict, seed: int, config: dict) -> dict:
    """Inputs of one case; `spec` holds shapes, timesteps and the call mode."""
    generator = torch.Generator().manual_seed(seed)
    frames, height, width = spec["frames"], spec["height"], spec["width"]
    batch = len(spec["timesteps"])
    latents = torch.randn(batch, config["in_channels"], frames, height, width, generator=generator)
    if model_name == "i2v":
        latents[:, 16:20] = 0.0
        latents[:, 16:20, 0] = 1.0  # first-frame mask channels, as the I2V pipeline builds them
    case = {
        "latents": latents,
        "timesteps": torch.tensor(spec["timesteps"], dtype=torch.float32),
        "context": text_context(generator, spec.get("prompt_lengths", [PROMPT_LENGTH] * batch), config["text_dim"]),
    }
    assert case["timesteps"].shape == (batch, frames)
    if config["inject_sample_info"]:
        case["fps"] = torch.tensor(spec["fps"], dtype=torch.int64)
    if config.get("image_dim"):
        case["image_context"] = torch.randn(batch, IMAGE_TOKENS, config["image_dim"], generator=generator)
    if spec.get("num_frame_per_block", 1) > 1:
        case["causal_block_size"] = torch.tensor([spec["num_frame_per_block"]], dtype=torch.int64)
    return case


def forward(model: SkyReelsV2Transformer3DModel, case: dict, mode: str) -> torch.Tensor:
    """One diffusers forward with the reference calling convention."""
    kwargs = dict(hidden_states=case["latents"], encoder_hidden_states=case["context"], return_dict=False)
    if mode == "diffusion_forcing":
        kwargs.update(timestep=case["timesteps"].long(), enable_diffusion_forcing=True)
    elif mode == "scalar_timestep":
        timesteps = case["timesteps"]
        assert bool((timesteps == timesteps[:, :1]).all()), "scalar case needs one timestep per sample"
        kwargs.update(timestep=timesteps[:, 0].long(), enable_diffusion_forcing=False)
    else:
        raise ValueError(mode)
    if "fps" in case:
        kwargs["fps"] = case["fps"].tolist()
    if "image_context" in case:
        kwargs["encoder_hidden_states_image"] = case["image_context"]
    causal_block_size = int(case["causal_block_size"][0]) if "causal_block_size" in case else 1
    model._set_ar_attention(causal_block_size)
    try:
        with torch.no_grad():
            (velocity,) = model(**kwargs)
    finally:
        model._set_ar_attention(1)
    return velocity.float().contiguous()


def per_sample_forward(model: SkyReelsV2Transformer3DModel, case: dict, mode: str) -> torch.Tensor:
    """Batch of B=1 forwards, concatenated: diffusers cannot batch the fps term in DF mode."""
    batch = case["latents"].shape[0]
    outputs = []
    for b in range(batch):
        single = {k: (v if k == "causal_block_size" else v[b : b + 1]) for k, v in case.items()}
        outputs.append(forward(model, single, mode))
    return torch.cat(outputs)


CASES = {
    "df": {
        "df_sync": dict(mode="diffusion_forcing", frames=3, height=6, width=10, timesteps=[[741, 741, 741]], fps=[1]),
        "df_async": dict(mode="diffusion_forcing", frames=3, height=6, width=10, timesteps=[[999, 741, 0]], fps=[1]),
        "df_causal": dict(
            mode="diffusion_forcing", frames=4, height=4, width=6, timesteps=[[250, 250, 875, 875]], fps=[1], num_frame_per_block=2
        ),
        "df_fps0": dict(mode="diffusion_forcing", frames=2, height=4, width=6, timesteps=[[600, 300]], fps=[0], inputs_of="df_fps"),
        "df_fps1": dict(mode="diffusion_forcing", frames=2, height=4, width=6, timesteps=[[600, 300]], fps=[1], inputs_of="df_fps"),
        # diffusers 0.42.1 raises for B>1 with fps in DF mode (its fps term is `.repeat(F,1,1)`d into a
        # [F*B,6,D] tensor that does not broadcast against the [B,F,6,D] time projection), so this
        # reference is the concatenation of per-sample B=1 diffusers calls (see `reference` metadata).
        # The direct batched diffusers call is recorded on the t2v model as `t2v_df_batch2`.
        "df_batch2": dict(
            mode="diffusion_forcing",
            frames=2,
            height=4,
            width=6,
            timesteps=[[875, 500], [875, 500]],
            fps=[1, 1],
            prompt_lengths=[PROMPT_LENGTH, 3],
            reference="per_sample",
        ),
    },
    "t2v": {
        "t2v_scalar": dict(mode="scalar_timestep", frames=2, height=4, width=8, timesteps=[[873, 873]]),
        "t2v_df_async": dict(mode="diffusion_forcing", frames=3, height=6, width=10, timesteps=[[999, 500, 20]]),
        # Batch of two (CFG cond/uncond contexts) through diffusers' own batched call; stands in for
        # the df model, whose fps branch diffusers cannot batch.
        "t2v_df_batch2": dict(
            mode="diffusion_forcing",
            frames=2,
            height=4,
            width=6,
            timesteps=[[875, 500], [875, 500]],
            prompt_lengths=[PROMPT_LENGTH, 3],
        ),
    },
    "i2v": {
        "i2v_scalar": dict(mode="scalar_timestep", frames=3, height=6, width=10, timesteps=[[500, 500, 500]]),
    },
}


def case_seed(model_seed: int, case_name: str, spec: dict) -> int:
    key = spec.get("inputs_of", case_name)
    return model_seed * 1000 + sum((i + 1) * ord(c) for i, c in enumerate(key))


def case_metadata(model_name: str, spec: dict) -> dict:
    metadata = {
        "model": model_name,
        "mode": spec["mode"],
        "num_frame_per_block": str(spec.get("num_frame_per_block", 1)),
        "prompt_lengths": ",".join(str(n) for n in spec.get("prompt_lengths", [PROMPT_LENGTH] * len(spec["timesteps"]))),
        "reference": spec.get("reference", "batched"),
        "generator": "tools/reference/make_dit_fixtures.py",
    }
    return metadata


def build_model(name: str) -> tuple[SkyReelsV2Transformer3DModel, dict]:
    info = MODELS[name]
    config = dict(COMMON_CONFIG, **info["config"])
    torch.manual_seed(info["seed"])
    model = SkyReelsV2Transformer3DModel(**config).eval()
    init_weights(model, torch.Generator().manual_seed(info["seed"]))
    if info["original_storage"] == "bf16":
        round_through_bf16(model)
    return model, config


def generate(name: str) -> list:
    info = MODELS[name]
    model, config = build_model(name)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert len(state) == info["expected_tensor_count"], f"{name}: {len(state)} tensors"

    root = FIXTURES / name
    if root.exists():
        shutil.rmtree(root)
    model.save_pretrained(root / "diffusers", safe_serialization=True)
    write_original(root / "original", state, info["original_storage"], config, info["model_type"])

    (root / "cases").mkdir()
    rows = []
    for case_name, spec in CASES[name].items():
        case = make_case(name, spec, case_seed(info["seed"], case_name, spec), config)
        if spec.get("reference") == "per_sample":
            velocity = per_sample_forward(model, case, spec["mode"])
        else:
            velocity = forward(model, case, spec["mode"])
        assert velocity.shape == (case["latents"].shape[0], 16, *case["latents"].shape[2:])
        assert torch.isfinite(velocity).all()
        case["velocity"] = velocity
        write_safetensors(root / "cases" / f"{case_name}.safetensors", case, case_metadata(name, spec))
        rows.append((name, case_name, spec["mode"], tuple(case["latents"].shape), velocity))
    return rows


def verify_layouts(name: str) -> None:
    """Both layouts hold the same tensors; the renaming agrees with diffusers' own Wan converter."""
    root = FIXTURES / name
    info = MODELS[name]
    diffusers_state, _ = read_safetensors(root / "diffusers" / "diffusion_pytorch_model.safetensors")
    original_state = read_original(root / "original")
    config = json.loads((root / "original" / "config.json").read_text())
    expected_dtype = torch.bfloat16 if info["original_storage"] == "bf16" else torch.float32
    assert all(t.dtype == expected_dtype for t in original_state.values()), f"{name}: original dtype"
    assert all(t.dtype == torch.float32 for t in diffusers_state.values()), f"{name}: diffusers dtype"
    assert config["model_type"] == info["model_type"]

    renamed = from_original(original_state)
    assert set(renamed) == set(diffusers_state), f"{name}: key sets differ: {set(renamed) ^ set(diffusers_state)}"
    for key, tensor in renamed.items():
        assert tensor.shape == diffusers_state[key].shape, key
        assert torch.equal(tensor.float(), diffusers_state[key]), f"{name}: `{key}` differs between layouts"

    converted = convert_wan_transformer_to_diffusers(dict(original_state))
    for key, tensor in converted.items():
        if key.startswith("fps_projection."):
            continue  # the Wan converter has no fps branch; our table covers it
        assert key in diffusers_state, f"{name}: diffusers' Wan converter maps to unknown `{key}`"
        assert torch.equal(tensor.float(), diffusers_state[key]), f"{name}: `{key}` disagrees with the Wan converter"
    assert len(converted) == len(diffusers_state)


def verify_reload(name: str) -> None:
    """Models rebuilt from each layout on disk reproduce every recorded velocity."""
    root = FIXTURES / name
    # from_config + strict load rather than from_pretrained, which needs `accelerate` for this class.
    config = SkyReelsV2Transformer3DModel.load_config(root / "diffusers")
    from_diffusers = SkyReelsV2Transformer3DModel.from_config(config).eval()
    from_diffusers.load_state_dict(read_safetensors(root / "diffusers" / "diffusion_pytorch_model.safetensors")[0], strict=True)
    from_original_layout = SkyReelsV2Transformer3DModel.from_config(config).eval()
    state = {k: v.float() for k, v in from_original(read_original(root / "original")).items()}
    from_original_layout.load_state_dict(state, strict=True)
    for path in sorted((root / "cases").glob("*.safetensors")):
        case, metadata = read_safetensors(path)
        expected = case.pop("velocity")
        for model in (from_diffusers, from_original_layout):
            if metadata["reference"] == "per_sample":
                got = per_sample_forward(model, case, metadata["mode"])
            else:
                got = forward(model, case, metadata["mode"])
            error = (got - expected).abs().max().item()
            assert error <= 1e-6, f"{name}/{path.stem}: reload differs by {error}"


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


SENSITIVITY_CASE = {"df": "df_async", "t2v": "t2v_scalar", "i2v": "i2v_scalar"}


def parameter_sensitivity(model: SkyReelsV2Transformer3DModel, case: dict, spec: dict) -> tuple[float, str]:
    """Smallest output change over all tensors when one tensor's elements are shuffled.

    A misnamed, swapped or missing tensor changes the output by at least this much."""
    reference = per_sample_forward(model, case, spec["mode"])
    generator = torch.Generator().manual_seed(0)
    weakest = (float("inf"), "")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            saved = parameter.detach().clone()
            flat = saved.flatten()
            parameter.copy_(flat[torch.randperm(flat.numel(), generator=generator)].view_as(saved))
            weakest = min(weakest, (max_diff(per_sample_forward(model, case, spec["mode"]), reference), name))
            parameter.copy_(saved)
    return weakest


def sensitivity_report(name: str) -> list:
    """Shows the cases exercise what they claim: each feature changes the output."""
    model, config = build_model(name)
    info = MODELS[name]
    lines = []

    def load(case_name):
        spec = CASES[name][case_name]
        return make_case(name, spec, case_seed(info["seed"], case_name, spec), config), spec

    if name == "df":
        case, spec = load("df_fps0")
        fps1 = dict(case, fps=torch.tensor([1]))
        lines.append(("df_fps0 vs df_fps1 (fps index)", max_diff(forward(model, case, spec["mode"]), forward(model, fps1, spec["mode"]))))
        case, spec = load("df_causal")
        full = {k: v for k, v in case.items() if k != "causal_block_size"}
        causal = forward(model, case, spec["mode"])
        lines.append(("df_causal vs bidirectional", max_diff(causal, forward(model, full, spec["mode"]))))
        case, spec = load("df_async")
        same_t = dict(case, timesteps=torch.full_like(case["timesteps"], 999.0))
        lines.append(("df_async vs all frames t=999", max_diff(forward(model, case, spec["mode"]), forward(model, same_t, spec["mode"]))))
        case, spec = load("df_sync")
        # DF with equal per-frame timesteps is the synchronous computation.
        kwargs = dict(hidden_states=case["latents"], timestep=case["timesteps"][:, 0].long(), encoder_hidden_states=case["context"], fps=[1], return_dict=False)
        with torch.no_grad():
            (sync,) = model(**kwargs)
        lines.append(("df_sync DF call vs scalar-t call (expect ~0)", max_diff(forward(model, case, spec["mode"]), sync)))
    if name == "t2v":
        case, spec = load("t2v_df_batch2")
        batched = forward(model, case, spec["mode"])
        lines.append(("t2v_df_batch2 batched vs per-sample (expect ~0)", max_diff(batched, per_sample_forward(model, case, spec["mode"]))))
        lines.append(("t2v_df_batch2 sample 0 vs sample 1", max_diff(batched[0], batched[1])))
        assert all(torch.equal(p, p.to(torch.bfloat16).float()) for p in model.parameters())
    if name == "i2v":
        case, spec = load("i2v_scalar")
        no_image = dict(case, image_context=torch.zeros_like(case["image_context"]))
        lines.append(("i2v_scalar vs zero image_context", max_diff(forward(model, case, spec["mode"]), forward(model, no_image, spec["mode"]))))

    weakest = parameter_sensitivity(model, *load(SENSITIVITY_CASE[name]))
    lines.append((f"weakest tensor, {SENSITIVITY_CASE[name]}: `{weakest[1]}` shuffled", weakest[0]))
    assert weakest[0] > 1e-3, f"{name}: output barely depends on `{weakest[1]}`"
    return [(name, label, value) for label, value in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-version-check", action="store_true")
    args = parser.parse_args()
    if not args.skip_version_check:
        check_environment()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    rows = []
    for name in MODELS:
        rows += generate(name)
    for name in MODELS:
        verify_layouts(name)
        verify_reload(name)

    print(f"{'case':<22} {'mode':<18} {'latents':<20} {'mean|v|':>9} {'std v':>9} {'max|v|':>9}")
    for name, case_name, mode, shape, velocity in rows:
        print(
            f"{name + '/' + case_name:<22} {mode:<18} {str(list(shape)):<20} "
            f"{velocity.abs().mean().item():9.4f} {velocity.std().item():9.4f} {velocity.abs().max().item():9.4f}"
        )
    print()
    for name in MODELS:
        for model_name, label, value in sensitivity_report(name):
            print(f"{model_name:<4} {label:<62} max-abs {value:.3e}")
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    print(f"\nwrote {FIXTURES.relative_to(REPO_ROOT)} ({total / 1024:.0f} KiB); both layouts verified")


if __name__ == "__main__":
    main()
