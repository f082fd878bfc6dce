#!/usr/bin/env python3
"""Writes the end-to-end sampling fixtures under tests/fixtures/pipeline/.

Every case runs one of diffusers' SkyReels-V2 pipelines (diffusion forcing, video extension,
synchronous T2V and I2V) on the tiny seeded DiT of tests/fixtures/dit/<model>/diffusers/ (and,
where the pipeline encodes pixels, the tiny VAE of tests/fixtures/vae/diffusers/), with the
text encoder bypassed (`prompt_embeds` / `negative_prompt_embeds` given directly) and
`output_type="latent"`:

    tests/fixtures/pipeline/<case>/case.json           # every parameter, schedules, call and draw pattern
    tests/fixtures/pipeline/<case>/inputs.safetensors  # prompt embeddings, conditioning pixels, image embeddings
    tests/fixtures/pipeline/<case>/noise.safetensors   # every random draw, "0", "1", ... in draw order
    tests/fixtures/pipeline/<case>/expected.safetensors# final latents, per-segment windows, per-row trace

Every random draw the pipeline makes (`randn_tensor` for the initial latents, `torch.randn_like`
for the addnoise re-noising of a prefix) is taken from a seeded generator and recorded, so a port
can replay the same noise. Before it finishes the script re-reads what it wrote and checks it:
replaying the recorded draws reproduces the expected latents bit for bit, the transformer call
counts and timestep schedules agree with independently computed ones, and the cases exercise
what they claim (block-causal attention, addnoise, prefix reuse, image conditioning).
"""

import argparse
import contextlib
import hashlib
import inspect
import json
import shutil
import struct
import sys
import warnings
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import diffusers
import diffusers.utils.torch_utils as diffusers_torch_utils
from diffusers import (
    AutoencoderKLWan,
    SkyReelsV2DiffusionForcingImageToVideoPipeline,
    SkyReelsV2DiffusionForcingPipeline,
    SkyReelsV2DiffusionForcingVideoToVideoPipeline,
    SkyReelsV2ImageToVideoPipeline,
    SkyReelsV2Pipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
)
from diffusers.pipelines.skyreels_v2 import (
    pipeline_skyreels_v2,
    pipeline_skyreels_v2_diffusion_forcing,
    pipeline_skyreels_v2_diffusion_forcing_i2v,
    pipeline_skyreels_v2_diffusion_forcing_v2v,
    pipeline_skyreels_v2_i2v,
)
from safetensors import safe_open

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "pipeline"
DIT_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "dit"
VAE_DIR = REPO_ROOT / "tests" / "fixtures" / "vae" / "diffusers"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
GENERATOR = "tools/reference/make_pipeline_fixtures.py"

TEXT_LEN = 512  # max_sequence_length of the pipelines
TEXT_DIM = 32  # text_dim of the tiny DiTs
IMAGE_TOKENS = 257  # CLIP ViT-H/14 penultimate hidden states: 1 class token + 16x16 patches
PROMPT_LENGTH = 7
NEGATIVE_PROMPT_LENGTH = 5

PIPELINES = {
    "df": (SkyReelsV2DiffusionForcingPipeline, pipeline_skyreels_v2_diffusion_forcing),
    "v2v": (SkyReelsV2DiffusionForcingVideoToVideoPipeline, pipeline_skyreels_v2_diffusion_forcing_v2v),
    "dfi2v": (SkyReelsV2DiffusionForcingImageToVideoPipeline, pipeline_skyreels_v2_diffusion_forcing_i2v),
    "t2v": (SkyReelsV2Pipeline, pipeline_skyreels_v2),
    "i2v": (SkyReelsV2ImageToVideoPipeline, pipeline_skyreels_v2_i2v),
}

# Pixel sizes 32x48 give 4x6 latents (2x3 tokens per frame after the 1x2x2 patch). Keys of `call`
# are passed to the pipeline unchanged; everything else takes diffusers' defaults.
COMMON = dict(height=32, width=48, num_inference_steps=5)
CASES = {
    "df_sync": dict(pipeline="df", model="df", shift=8.0, call=dict(COMMON, num_frames=9, guidance_scale=6.0, ar_step=0)),
    "df_async": dict(
        pipeline="df", model="df", shift=8.0, call=dict(COMMON, num_frames=9, guidance_scale=6.0, ar_step=2, causal_block_size=1)
    ),
    "df_async_causal": dict(
        pipeline="df", model="df", shift=8.0, call=dict(COMMON, num_frames=13, guidance_scale=6.0, ar_step=2, causal_block_size=2)
    ),
    "df_long_sync": dict(
        pipeline="df",
        model="df",
        shift=8.0,
        call=dict(COMMON, num_frames=21, guidance_scale=6.0, base_num_frames=13, overlap_history=5, addnoise_condition=20, ar_step=0),
    ),
    "df_long_async": dict(
        pipeline="df",
        model="df",
        shift=8.0,
        call=dict(
            COMMON,
            num_frames=21,
            guidance_scale=6.0,
            base_num_frames=13,
            overlap_history=5,
            addnoise_condition=20,
            ar_step=2,
            causal_block_size=1,
        ),
    ),
    # Three windows (4, 4 and a shorter 3 latent frames): the second prefix comes out of an
    # accumulated (concatenated) latent video, and the last window is narrower than the base.
    "df_long_3seg": dict(
        pipeline="df",
        model="df",
        shift=8.0,
        call=dict(
            COMMON,
            num_frames=25,
            guidance_scale=6.0,
            base_num_frames=13,
            overlap_history=5,
            addnoise_condition=20,
            ar_step=2,
            causal_block_size=1,
        ),
    ),
    # Block-causal long video whose 3-latent overlap is cut to a 2-latent prefix (a multiple of the
    # block size): the prefix is the *oldest* 2 of the last 3 latents, and each window still drops
    # its first 3 frames when appended.
    "df_long_causal": dict(
        pipeline="df",
        model="df",
        shift=8.0,
        call=dict(
            COMMON,
            num_frames=21,
            guidance_scale=6.0,
            base_num_frames=13,
            overlap_history=9,
            addnoise_condition=20,
            ar_step=2,
            causal_block_size=2,
        ),
    ),
    "df_extension": dict(
        pipeline="v2v",
        model="df",
        shift=8.0,
        video_frames=9,
        call=dict(COMMON, num_frames=21, guidance_scale=6.0, base_num_frames=13, overlap_history=5, addnoise_condition=20, ar_step=0),
    ),
    # Diffusion forcing from a first image (a clean 1-latent prefix, re-noised by addnoise).
    "df_image": dict(
        pipeline="dfi2v", model="df", shift=8.0, call=dict(COMMON, num_frames=9, guidance_scale=6.0, addnoise_condition=20, ar_step=0)
    ),
    # First and last image, asynchronous: the last image is one extra clean latent at t = 0.
    "df_first_last": dict(
        pipeline="dfi2v",
        model="df",
        shift=8.0,
        last_image=True,
        call=dict(COMMON, num_frames=9, guidance_scale=6.0, ar_step=2, causal_block_size=1),
    ),
    # (No long first-to-last case: diffusers 0.42.1 crashes there, adding the overlap length instead
    # of the end latent's to the last window's base length; the runtime follows upstream.)
    "t2v": dict(pipeline="t2v", model="t2v", shift=8.0, call=dict(COMMON, num_frames=9, guidance_scale=6.0)),
    # I2V: the docs' I2V settings (guidance 5, flow_shift 5).
    "i2v": dict(pipeline="i2v", model="i2v", shift=5.0, call=dict(COMMON, num_frames=9, guidance_scale=5.0)),
    "df_no_cfg": dict(pipeline="df", model="df", shift=8.0, call=dict(COMMON, num_frames=9, guidance_scale=1.0, ar_step=0)),
}

# Parameters reported in case.json for every case (null where the pipeline has no such argument
# or the case leaves the diffusers default).
REPORTED = [
    "num_frames",
    "height",
    "width",
    "num_inference_steps",
    "guidance_scale",
    "fps",
    "ar_step",
    "causal_block_size",
    "base_num_frames",
    "overlap_history",
    "addnoise_condition",
]


def check_environment() -> None:
    wanted = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            wanted[name] = version
    wrong = []
    for name, version in wanted.items():
        try:
            installed = package_metadata.version(name).split("+", 1)[0]
        except package_metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            wrong.append(f"{name} {installed} (pinned {version})")
    if wrong:
        sys.exit("package versions differ from requirements.txt: " + ", ".join(wrong) + " (pass --skip-version-check to run anyway)")


DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}


def write_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """safetensors writer with a sorted, deterministic header."""
    header = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    chunks = []
    offset = 0
    for name in sorted(tensors, key=tensor_sort_key):
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


def tensor_sort_key(name: str):
    """Numeric names ("0", "1", ..., "10") in numeric order, then the rest alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def read_safetensors(path: Path) -> tuple[dict, dict]:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def case_seed(name: str, salt: int) -> int:
    return 7000 + salt * 1000 + sum((i + 1) * ord(c) for i, c in enumerate(name))


# --------------------------------------------------------------------------------------------
# Random draws: recorded (from a seeded generator) or replayed (from a recorded list)
# --------------------------------------------------------------------------------------------


class NoiseTape:
    """Stands in for `randn_tensor` and `torch.randn_like` while a pipeline runs."""

    def __init__(self, seed: int | None = None, replay: list | None = None):
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else torch.Generator().manual_seed(0)
        self.replay = replay
        self.draws = []
        self.events = []
        self.where = None  # callable returning the current (segment, row, prefix info)

    def draw(self, shape, dtype, source: str) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        index = len(self.draws)
        if self.replay is not None:
            if index >= len(self.replay):
                raise AssertionError(f"replay: the pipeline asks for draw {index}, only {len(self.replay)} recorded")
            value = self.replay[index]
            if tuple(value.shape) != shape:
                raise AssertionError(f"replay: draw {index} has shape {tuple(value.shape)}, the pipeline asks for {shape}")
        else:
            value = torch.randn(shape, generator=self.generator, dtype=torch.float32)
        self.draws.append(value.clone())
        event = {"name": str(index), "source": source, "shape": list(shape)}
        if self.where is not None:
            event.update(self.where(source, shape))
        self.events.append(event)
        return value.clone().to(dtype or torch.float32)

    @contextlib.contextmanager
    def installed(self):
        original_randn_tensor = diffusers_torch_utils.randn_tensor
        original_randn_like = torch.randn_like
        tape = self

        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
            if generator is not None and generator is not tape.generator:
                raise AssertionError("randn_tensor got a generator that is not the tape's")
            return tape.draw(shape, dtype, "randn_tensor")

        def randn_like(input, *args, dtype=None, **kwargs):
            if args or kwargs.get("generator") is not None:
                raise AssertionError(f"unexpected randn_like arguments {args} {kwargs}")
            return tape.draw(input.shape, dtype or input.dtype, "randn_like")

        modules = [diffusers_torch_utils] + [module for _, module in PIPELINES.values()]
        saved = [(module, module.randn_tensor) for module in modules]
        for module in modules:
            module.randn_tensor = randn_tensor
        torch.randn_like = randn_like
        try:
            yield self
        finally:
            torch.randn_like = original_randn_like
            for module, value in saved:
                module.randn_tensor = value
            assert diffusers_torch_utils.randn_tensor is original_randn_tensor


# --------------------------------------------------------------------------------------------
# Models, inputs, pipeline
# --------------------------------------------------------------------------------------------


def load_transformer(model: str) -> SkyReelsV2Transformer3DModel:
    root = DIT_FIXTURES / model / "diffusers"
    # from_config + strict load rather than from_pretrained, which needs `accelerate` for this class.
    transformer = SkyReelsV2Transformer3DModel.from_config(SkyReelsV2Transformer3DModel.load_config(root)).eval()
    transformer.load_state_dict(read_safetensors(root / "diffusion_pytorch_model.safetensors")[0], strict=True)
    return transformer


def load_vae() -> AutoencoderKLWan:
    if not (VAE_DIR / "config.json").exists():
        sys.exit(f"{VAE_DIR.relative_to(REPO_ROOT)} is missing: run tools/reference/make_vae_fixtures.py first")
    vae = AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(VAE_DIR)).eval()
    vae.load_state_dict(read_safetensors(VAE_DIR / "diffusion_pytorch_model.safetensors")[0], strict=True)
    return vae


def make_scheduler(shift: float) -> UniPCMultistepScheduler:
    # As the SkyReels-V2 diffusers docs configure it: the converted checkpoints' UniPC config
    # (solver_order 2, bh2, lower_order_final, final_sigmas_type "zero", linspace spacing: the
    # class defaults) with flow sigmas and the shift as `flow_shift`.
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=shift)


def text_embeddings(generator: torch.Generator, length: int) -> torch.Tensor:
    context = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=generator)
    context[:, length:] = 0.0
    return context


def pixels01(generator: torch.Generator, frames: int, height: int, width: int) -> torch.Tensor:
    """A smooth random clip [1,3,T,H,W] in [0,1], quantised to k/255 like decoded 8-bit frames."""
    coarse = torch.rand(1, 3, frames, height // 8, width // 8, generator=generator)
    smooth = F.interpolate(coarse, size=(frames, height, width), mode="trilinear", align_corners=False)
    detail = 0.08 * (torch.rand(1, 3, frames, height, width, generator=generator) - 0.5)
    return torch.round((smooth + detail).clamp(0.0, 1.0) * 255.0) / 255.0


def make_inputs(name: str, spec: dict) -> dict:
    """Tensors handed to the pipeline. `image_pixels` [1,3,H,W] / `video_pixels` [1,3,T,H,W] are the
    raw pixels: [0,1] here (the pipeline maps them to [-1,1]); replays pass the stored [-1,1] ones."""
    generator = torch.Generator().manual_seed(case_seed(name, 1))
    call = spec["call"]
    inputs = {"prompt_embeds": text_embeddings(generator, PROMPT_LENGTH)}
    if call["guidance_scale"] > 1.0:
        inputs["negative_prompt_embeds"] = text_embeddings(generator, NEGATIVE_PROMPT_LENGTH)
    if spec["pipeline"] == "i2v":
        inputs["image_pixels"] = pixels01(generator, 1, call["height"], call["width"])[:, :, 0]  # [1,3,H,W]
        image_dim = load_transformer(spec["model"]).config.image_dim
        inputs["image_embeds"] = torch.randn(1, IMAGE_TOKENS, image_dim, generator=generator)
    if spec["pipeline"] == "v2v":
        inputs["video_pixels"] = pixels01(generator, spec["video_frames"], call["height"], call["width"])
    if spec["pipeline"] == "dfi2v":
        inputs["image_pixels"] = pixels01(generator, 1, call["height"], call["width"])[:, :, 0]
        if spec.get("last_image"):
            inputs["last_image_pixels"] = pixels01(generator, 1, call["height"], call["width"])[:, :, 0]
    return inputs


class Recorder:
    """Counts transformer calls and follows segments and rows while a pipeline runs."""

    def __init__(self, pipe, tape: NoiseTape, inputs: dict):
        self.pipe = pipe
        self.tape = tape
        self.inputs = inputs
        self.segments = []  # per segment: dict(prefix, num_latent_frames, matrix..., trace=[...])
        self.calls = []  # per transformer call: (segment, row, branch, timestep list, frames)
        self.row = 0
        self.captured = {}
        tape.where = self.where

    # ---- hooks -------------------------------------------------------------------------------
    def install(self):
        pipe = self.pipe
        original_prepare = pipe.prepare_latents

        def prepare_latents(*args, **kwargs):
            self.segments.append(dict(trace=[]))
            self.row = 0
            result = original_prepare(*args, **kwargs)
            segment = self.segments[-1]
            if isinstance(pipe, SkyReelsV2ImageToVideoPipeline):
                latents, condition = result
                segment["num_latent_frames"] = latents.shape[2]
                segment["prefix_latent_frames"] = 0
                self.captured["condition"] = condition.detach().clone()
            elif isinstance(result, tuple):
                latents, frames, prefix, prefix_frames = result
                segment["num_latent_frames"] = int(frames)
                segment["prefix_latent_frames"] = int(prefix_frames)
                if isinstance(pipe, SkyReelsV2DiffusionForcingImageToVideoPipeline) and prefix is not None and prefix.shape[0] == 2:
                    # First window with a last image: the images are encoded as a batch of two.
                    segment["prefix"] = prefix[:1].detach().clone()
                    self.captured["end_latent"] = prefix[1:].detach().clone()
                else:
                    segment["prefix"] = None if prefix is None else prefix.detach().clone()
            else:
                segment["num_latent_frames"] = result.shape[2]
                segment["prefix_latent_frames"] = 0
            return result

        pipe.prepare_latents = prepare_latents

        if hasattr(pipe, "generate_timestep_matrix"):
            original_matrix = pipe.generate_timestep_matrix

            def generate_timestep_matrix(*args, **kwargs):
                step_matrix, step_index, update_mask, valid_interval = original_matrix(*args, **kwargs)
                # Kept by reference: a pipeline with a last image zeroes its column in place afterwards.
                self.segments[-1].update(
                    step_matrix=step_matrix,
                    step_index=step_index.clone(),
                    update_mask=update_mask,
                    valid_interval=[(int(s), int(e)) for s, e in valid_interval],
                    matrix_args=dict(
                        num_latent_frames=int(args[0]),
                        base_num_latent_frames=int(args[2]),
                        ar_step=int(args[3]),
                        num_pre_ready=int(args[4]),
                        causal_block_size=int(args[5]),
                    ),
                )
                return step_matrix, step_index, update_mask, valid_interval

            pipe.generate_timestep_matrix = generate_timestep_matrix

        processor = pipe.video_processor
        original_preprocess_video = processor.preprocess_video
        original_preprocess = processor.preprocess

        def preprocess_video(*args, **kwargs):
            video = original_preprocess_video(*args, **kwargs)
            self.captured["video"] = video.detach().clone()
            return video

        def preprocess(*args, **kwargs):
            image = original_preprocess(*args, **kwargs)
            if "video" not in self.captured and isinstance(pipe, SkyReelsV2ImageToVideoPipeline):
                self.captured["image"] = image.detach().clone()
            if isinstance(pipe, SkyReelsV2DiffusionForcingImageToVideoPipeline):
                self.captured.setdefault("images", []).append(image.detach().clone())
            return image

        processor.preprocess_video = preprocess_video
        processor.preprocess = preprocess

        if isinstance(pipe, SkyReelsV2ImageToVideoPipeline):
            image_embeds = self.inputs["image_embeds"]

            # diffusers' check_inputs rejects `image` together with `image_embeds`, but the image is
            # needed for the VAE conditioning: the CLIP features are supplied here instead.
            def encode_image(image, device=None):
                self.captured["encode_image_calls"] = self.captured.get("encode_image_calls", 0) + 1
                return image_embeds.clone()

            pipe.encode_image = encode_image

        self.hook = pipe.transformer.register_forward_pre_hook(self.on_forward, with_kwargs=True)

    def remove(self):
        self.hook.remove()

    def on_forward(self, module, args, kwargs):
        context = kwargs["encoder_hidden_states"]
        if torch.equal(context, self.inputs["prompt_embeds"]):
            branch = "cond"
        elif "negative_prompt_embeds" in self.inputs and torch.equal(context, self.inputs["negative_prompt_embeds"]):
            branch = "uncond"
        else:
            raise AssertionError("transformer called with an unknown context")
        timestep = kwargs["timestep"]
        assert timestep.dtype == torch.int64, timestep.dtype
        hidden = kwargs["hidden_states"]
        self.calls.append(
            dict(
                segment=len(self.segments) - 1,
                row=self.row,
                branch=branch,
                timestep=timestep.tolist(),
                timestep_dtype=str(timestep.dtype).replace("torch.", ""),
                hidden_states_shape=list(hidden.shape),
                enable_diffusion_forcing=bool(kwargs.get("enable_diffusion_forcing", False)),
                fps=kwargs.get("fps"),
                image_embeds=kwargs.get("encoder_hidden_states_image") is not None,
                num_frame_per_block=int(module.config.num_frame_per_block),
            )
        )
        return None

    def on_step_end(self, pipe, i, t, callback_kwargs):
        assert i == self.row, (i, self.row)
        self.segments[-1]["trace"].append(callback_kwargs["latents"].detach().clone())
        self.row = i + 1
        return {}

    def where(self, source, shape):
        segment = len(self.segments) - 1
        info = {"segment": segment}
        if source == "randn_tensor":
            info.update(row=None, purpose="initial_latents", frames=[0, int(shape[2])])
        else:
            current = self.segments[segment]
            start, _ = current["valid_interval"][self.row]
            prefix = current["prefix_latent_frames"]
            assert shape[2] == prefix - start, (shape, start, prefix)
            info.update(row=self.row, purpose="addnoise_prefix", frames=[int(start), int(prefix)])
        return info


def build_pipeline(spec: dict):
    cls, _ = PIPELINES[spec["pipeline"]]
    transformer = load_transformer(spec["model"])
    scheduler = make_scheduler(spec["shift"])
    components = dict(tokenizer=None, text_encoder=None, transformer=transformer, scheduler=scheduler)
    components["vae"] = load_vae() if spec["pipeline"] in ("i2v", "v2v", "dfi2v") else None
    if spec["pipeline"] == "i2v":
        components.update(image_encoder=None, image_processor=None)
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_case(name: str, spec: dict, inputs: dict, tape: NoiseTape) -> dict:
    """One pipeline call; returns the output latents and everything recorded along the way."""
    pipe = build_pipeline(spec)
    recorder = Recorder(pipe, tape, inputs)
    recorder.install()
    kwargs = dict(spec["call"])
    kwargs.update(
        prompt=None,
        prompt_embeds=inputs["prompt_embeds"].clone(),
        negative_prompt_embeds=inputs["negative_prompt_embeds"].clone() if "negative_prompt_embeds" in inputs else None,
        generator=tape.generator,
        output_type="latent",
        return_dict=False,
        callback_on_step_end=recorder.on_step_end,
    )
    if spec["pipeline"] == "i2v":
        kwargs["image"] = inputs["image_pixels"].clone()
    if spec["pipeline"] == "v2v":
        kwargs["video"] = inputs["video_pixels"].permute(0, 2, 1, 3, 4).contiguous()  # [B,T,C,H,W]
    if spec["pipeline"] == "dfi2v":
        kwargs["image"] = inputs["image_pixels"].clone()
        if "last_image_pixels" in inputs:
            kwargs["last_image"] = inputs["last_image_pixels"].clone()
    torch.manual_seed(12345)
    global_rng = torch.get_rng_state()
    try:
        with tape.installed(), torch.no_grad():
            (latents,) = pipe(**kwargs)
    finally:
        recorder.remove()
    assert torch.equal(torch.get_rng_state(), global_rng), f"{name}: the pipeline drew from the global RNG behind the tape"
    return dict(
        latents=latents.detach().clone(),
        recorder=recorder,
        scheduler=pipe.scheduler,
        vae=pipe.vae,
    )


# --------------------------------------------------------------------------------------------
# Independent expectations
# --------------------------------------------------------------------------------------------


def expected_timesteps(steps: int, shift: float) -> tuple[list, list]:
    """SPEC §3.7: linspace(1, 1/1000, N+1)[:-1], shifted, sigma_0 -= 1e-6, int64 truncation."""
    sigmas = np.linspace(1.0, 1.0 / 1000, steps + 1)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    if abs(sigmas[0] - 1.0) < 1e-6:
        sigmas[0] -= 1e-6
    timesteps = (sigmas * 1000).astype(np.int64).tolist()
    return timesteps, np.concatenate([sigmas, [0.0]]).astype(np.float32).tolist()


def expected_rows(steps: int, frames: int, prefix: int, ar_step: int, block: int) -> int:
    blocks = frames // block
    prefix_blocks = prefix // block
    generated = blocks - prefix_blocks
    return steps + max(generated - 1, 0) * ar_step


def latent_frames(pixel_frames: int) -> int:
    return (pixel_frames - 1) // 4 + 1


def expected_windows(spec: dict) -> list:
    """(window latent frames, prefix latent frames) per segment, from the SPEC §3.3 arithmetic."""
    call = spec["call"]
    total = latent_frames(call["num_frames"])
    block = call.get("causal_block_size") or 1
    if spec["pipeline"] in ("t2v", "i2v"):
        return [(total, 0)]
    long_video = spec["pipeline"] == "v2v" or (call.get("overlap_history") is not None and call["num_frames"] > call.get("base_num_frames", 97))
    first_prefix = 1 if spec["pipeline"] == "dfi2v" else 0
    if not long_video:
        return [(total, first_prefix)]
    base = latent_frames(call["base_num_frames"])
    overlap = latent_frames(call["overlap_history"])
    n_iter = 1 + (total - base - 1) // (base - overlap) + 1
    prefix = overlap - overlap % block
    windows = []
    for i in range(n_iter):
        if spec["pipeline"] in ("df", "dfi2v") and i == 0:
            windows.append((base, first_prefix))
        else:
            finished = i * (base - overlap) + overlap
            windows.append((min(total - finished + overlap, base), prefix))
    return windows


# --------------------------------------------------------------------------------------------
# Writing and checking one case
# --------------------------------------------------------------------------------------------


def build_case_files(name: str, spec: dict, inputs: dict, result: dict, tape: NoiseTape) -> tuple[dict, dict, dict, dict]:
    recorder = result["recorder"]
    call = spec["call"]
    scheduler = result["scheduler"]
    cfg = call["guidance_scale"] > 1.0
    calls_per_row = 2 if cfg else 1

    # ---- tensors ------------------------------------------------------------------------------
    input_tensors = {"prompt_embeds": inputs["prompt_embeds"]}
    if "negative_prompt_embeds" in inputs:
        input_tensors["negative_prompt_embeds"] = inputs["negative_prompt_embeds"]
    if spec["pipeline"] == "i2v":
        image = recorder.captured["image"]  # [1,3,H,W] in [-1,1], as the pipeline used it
        assert torch.equal(image, inputs["image_pixels"] * 2.0 - 1.0)
        input_tensors["image"] = image.unsqueeze(2).contiguous()
        input_tensors["image_embeds"] = inputs["image_embeds"]
    if spec["pipeline"] == "v2v":
        video = recorder.captured["video"]  # [1,3,T,H,W] in [-1,1], as the pipeline used it
        assert torch.equal(video, inputs["video_pixels"] * 2.0 - 1.0)
        input_tensors["video"] = video
    if spec["pipeline"] == "dfi2v":
        images = recorder.captured["images"]  # [1,3,H,W] in [-1,1] each, as the pipeline used them
        assert torch.equal(images[0], inputs["image_pixels"] * 2.0 - 1.0)
        input_tensors["image"] = images[0].unsqueeze(2).contiguous()
        if "last_image_pixels" in inputs:
            assert torch.equal(images[1], inputs["last_image_pixels"] * 2.0 - 1.0)
            input_tensors["last_image"] = images[1].unsqueeze(2).contiguous()

    noise = {str(i): draw.float() for i, draw in enumerate(tape.draws)}

    expected = {"latents": result["latents"].float()}
    segments = recorder.segments
    for k, segment in enumerate(segments):
        expected[f"trace.{k}"] = torch.stack(segment["trace"]).float()
        if len(segments) > 1 or spec["pipeline"] == "v2v":
            expected[f"segment.{k}.latents"] = segment["trace"][-1].float()
        if segment.get("prefix") is not None:
            expected[f"segment.{k}.prefix"] = segment["prefix"].float()
    if spec["pipeline"] == "i2v":
        expected["condition"] = recorder.captured["condition"].float()
    if "end_latent" in recorder.captured:
        expected["end_latent"] = recorder.captured["end_latent"].float()

    # ---- case.json ----------------------------------------------------------------------------
    rows = []
    draws_by_row = {}
    for event in tape.events:
        if event["row"] is not None:
            draws_by_row.setdefault((event["segment"], event["row"]), []).append(event["name"])
    for c in recorder.calls:
        key = (c["segment"], c["row"])
        if rows and (rows[-1]["segment"], rows[-1]["row"]) == key:
            assert rows[-1]["model_timestep"] == c["timestep"], f"{name}: cond and uncond fed different timesteps"
            assert rows[-1]["hidden_states_shape"] == c["hidden_states_shape"]
            rows[-1]["branches"].append(c["branch"])
            continue
        rows.append(
            dict(
                segment=c["segment"],
                row=c["row"],
                branches=[c["branch"]],
                model_timestep=c["timestep"],
                hidden_states_shape=c["hidden_states_shape"],
                noise_draws=draws_by_row.get(key, []),
            )
        )
    for r in rows:
        assert r["branches"] == (["cond", "uncond"] if cfg else ["cond"]), f"{name}: row {r} branches"

    segment_info = []
    for k, segment in enumerate(segments):
        info = dict(
            index=k,
            num_latent_frames=segment["num_latent_frames"],
            prefix_latent_frames=segment["prefix_latent_frames"],
            rows=len(segment["trace"]),
            transformer_calls=sum(1 for c in recorder.calls if c["segment"] == k),
        )
        if "step_matrix" in segment:
            info.update(
                generate_timestep_matrix_args=segment["matrix_args"],
                step_matrix=segment["step_matrix"].tolist(),
                step_index=segment["step_index"].tolist(),
                update_mask=[[int(v) for v in row] for row in segment["update_mask"].tolist()],
                valid_interval=[list(v) for v in segment["valid_interval"]],
            )
        info["noise_draws"] = [e["name"] for e in tape.events if e["segment"] == k]
        segment_info.append(info)

    cls, _ = PIPELINES[spec["pipeline"]]
    signature_defaults = {
        k: v.default
        for k, v in inspect.signature(cls.__call__).parameters.items()
        if v.default is not inspect.Parameter.empty
    }
    parameters = {}
    for key in REPORTED:
        if key in call:
            parameters[key] = call[key]
        elif key in signature_defaults:
            parameters[key] = signature_defaults[key]
        else:
            parameters[key] = None
    first_call = recorder.calls[0]
    case = dict(
        case=name,
        generator=GENERATOR,
        versions=dict(diffusers=diffusers.__version__, torch=torch.__version__.split("+")[0]),
        pipeline=cls.__name__,
        model=spec["model"],
        transformer=str((DIT_FIXTURES / spec["model"] / "diffusers").relative_to(REPO_ROOT)),
        transformer_sha256=sha256(DIT_FIXTURES / spec["model"] / "diffusers" / "diffusion_pytorch_model.safetensors"),
        vae=str(VAE_DIR.relative_to(REPO_ROOT)) if result["vae"] is not None else None,
        vae_sha256=sha256(VAE_DIR / "diffusion_pytorch_model.safetensors") if result["vae"] is not None else None,
        **parameters,
        shift=spec["shift"],
        passed_to_pipeline=dict(sorted(call.items())),
        output_type="latent",
        max_sequence_length=TEXT_LEN,
        prompt_length=PROMPT_LENGTH,
        negative_prompt_length=NEGATIVE_PROMPT_LENGTH if cfg else None,
        do_classifier_free_guidance=cfg,
        fps_embedding_index=first_call["fps"][0] if first_call["fps"] is not None else None,
        effective_causal_block_size=first_call["num_frame_per_block"],
        block_causal_attention=first_call["num_frame_per_block"] > 1,
        enable_diffusion_forcing=first_call["enable_diffusion_forcing"],
        scheduler=dict(
            {k: v for k, v in sorted(scheduler.config.items()) if not k.startswith("_")},
            _class_name=type(scheduler).__name__,
        ),
        timesteps=scheduler.timesteps.tolist(),
        timesteps_dtype=str(scheduler.timesteps.dtype).replace("torch.", ""),
        sigmas=scheduler.sigmas.tolist(),
        latent_shape=list(result["latents"].shape),
        transformer_calls=len(recorder.calls),
        calls_per_row=calls_per_row,
        num_segments=len(segments),
        segments=segment_info,
        rows=rows,
        noise_draws=tape.events,
        inputs={k: list(v.shape) for k, v in sorted(input_tensors.items())},
        expected={k: list(v.shape) for k, v in sorted(expected.items(), key=lambda kv: tensor_sort_key(kv[0]))},
    )
    if spec["pipeline"] == "i2v":
        case["image_embeds_supplied_via"] = "encode_image replaced (check_inputs rejects image together with image_embeds)"
        assert recorder.captured.get("encode_image_calls") == 1
    if spec["pipeline"] == "v2v":
        case["video_frames"] = spec["video_frames"]
    if spec["pipeline"] == "dfi2v":
        case["last_image"] = bool(spec.get("last_image"))
        case["end_latent_frames"] = 1 if spec.get("last_image") else 0
    return input_tensors, noise, expected, case


def check_case(name: str, spec: dict, case: dict, expected: dict, noise: dict, inputs: dict) -> list:
    """Independent checks that the recorded run is what the case claims. Returns report lines."""
    call = spec["call"]
    lines = []
    steps = call["num_inference_steps"]

    timesteps, sigmas = expected_timesteps(steps, spec["shift"])
    assert case["timesteps"] == timesteps, f"{name}: timesteps {case['timesteps']} != {timesteps}"
    assert case["timesteps_dtype"] == "int64"
    assert np.array_equal(np.array(case["sigmas"], dtype=np.float32), np.array(sigmas, dtype=np.float32)), f"{name}: sigmas"

    windows = expected_windows(spec)
    got_windows = [(s["num_latent_frames"], s["prefix_latent_frames"]) for s in case["segments"]]
    assert got_windows == windows, f"{name}: windows {got_windows} != {windows}"

    block = call.get("causal_block_size") or 1
    total_calls = 0
    for k, (segment, (frames, prefix)) in enumerate(zip(case["segments"], windows)):
        # A last image joins the last window as one extra clean latent at t = 0, never stepped.
        end = case.get("end_latent_frames", 0) if k == len(windows) - 1 else 0
        if spec["pipeline"] in ("t2v", "i2v"):
            rows = steps
        else:
            rows = expected_rows(steps, frames + end, prefix, call.get("ar_step", 0), block)
            assert len(segment["step_matrix"]) == rows
            assert all(v == [0, frames + end] for v in segment["valid_interval"]), f"{name}: valid_interval {segment['valid_interval']}"
            if end:
                assert all(row[-1] == 0 for row in segment["step_matrix"]) and not any(row[-1] for row in segment["update_mask"])
        assert segment["rows"] == rows, f"{name}: {segment['rows']} rows, expected {rows}"
        assert segment["transformer_calls"] == rows * case["calls_per_row"]
        total_calls += segment["transformer_calls"]
    assert case["transformer_calls"] == total_calls

    # What the model saw each row: the matrix row (or the scalar t), the prefix overridden by addnoise.
    addnoise = call.get("addnoise_condition", 0)
    for r in case["rows"]:
        segment = case["segments"][r["segment"]]
        if "step_matrix" in segment:
            want = list(segment["step_matrix"][r["row"]])
            s, e = segment["valid_interval"][r["row"]]
            want = want[s:e]
            prefix = segment["prefix_latent_frames"]
            if addnoise > 0 and s < prefix:
                want[: prefix - s] = [int(addnoise)] * (prefix - s)
                assert len(r["noise_draws"]) == 1
            else:
                assert r["noise_draws"] == []
            assert r["model_timestep"] == [want], f"{name}: row {r['row']} fed {r['model_timestep']}, expected {[want]}"
        else:
            assert r["model_timestep"] == [case["timesteps"][r["row"]]]

    # Draw pattern: one initial draw per segment, then one addnoise draw per row that re-noises a prefix.
    for k, segment in enumerate(case["segments"]):
        events = [e for e in case["noise_draws"] if e["segment"] == k]
        assert events[0]["purpose"] == "initial_latents" and events[0]["row"] is None
        assert all(e["purpose"] == "addnoise_prefix" for e in events[1:])
        if addnoise > 0 and segment["prefix_latent_frames"] > 0:
            assert [e["row"] for e in events[1:]] == list(range(segment["rows"]))
        else:
            assert len(events) == 1
    assert [e["name"] for e in case["noise_draws"]] == [str(i) for i in range(len(noise))]

    # Long video: window k>0 starts from the last `overlap` latents of what came before, and the
    # output is window 0 followed by every later window minus its prefix.
    if len(case["segments"]) > 1 or spec["pipeline"] == "v2v":
        overlap = latent_frames(call["overlap_history"])
        pieces = []
        for k, segment in enumerate(case["segments"]):
            window = expected[f"segment.{k}.latents"]
            prefix = segment["prefix_latent_frames"]
            if k > 0:
                accumulated = torch.cat(pieces, dim=2)
                want = accumulated[:, :, -overlap:][:, :, :prefix]
                assert torch.equal(expected[f"segment.{k}.prefix"], want), f"{name}: prefix of window {k}"
            if prefix:
                assert torch.equal(window[:, :, :prefix], expected[f"segment.{k}.prefix"]), f"{name}: prefix changed"
            pieces.append(window if k == 0 else window[:, :, overlap:])
        assert torch.equal(torch.cat(pieces, dim=2), expected["latents"]), f"{name}: output is not the concatenated windows"
        lines.append(
            f"windows {[s['num_latent_frames'] for s in case['segments']]}, prefixes {[s['prefix_latent_frames'] for s in case['segments']]}: "
            "prefix = last overlap latents (cut to a block multiple), output = window 0 + windows[overlap:]"
        )

    vae = load_vae() if case["vae"] else None
    if vae is not None:
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    if spec["pipeline"] == "v2v":
        # Extension: window 0's prefix is the normalised posterior mode of the last `overlap_history` input frames.
        with torch.no_grad():
            mode = vae.encode(inputs["video"][:, :, -call["overlap_history"] :]).latent_dist.mode()
        want = (mode - mean) * inverse_std
        assert torch.equal(expected["segment.0.prefix"], want), f"{name}: extension prefix is not the encoded video tail"
        assert torch.equal(expected["segment.0.latents"][:, :, : want.shape[2]], want)
        lines.append("extension prefix == normalised VAE mode of the last overlap_history frames")
    if spec["pipeline"] == "dfi2v":
        # First image: window 0's prefix is the normalised posterior mode of the image alone; a last
        # image is encoded the same way (diffusers batches the two) and ends the output unchanged.
        for key, want_key in (("image", "segment.0.prefix"), ("last_image", "end_latent")):
            if key not in inputs:
                continue
            with torch.no_grad():
                mode = vae.encode(inputs[key]).latent_dist.mode()
            want = (mode - mean) * inverse_std
            diff = (expected[want_key] - want).abs().max().item()
            assert diff < 1e-5, f"{name}: {want_key} is not the encoded {key} ({diff})"
        assert torch.equal(expected["segment.0.prefix"], expected["trace.0"][-1][:, :, :1]), f"{name}: the image prefix changed"
        if "end_latent" in expected:
            assert torch.equal(expected["latents"][:, :, -1:], expected["end_latent"]), f"{name}: the end latent changed"
            lines.append("prefix == normalised VAE mode of the image; the last image's latent ends the output unchanged")
        else:
            lines.append("prefix == normalised VAE mode of the image and stays clean")
    if spec["pipeline"] == "i2v":
        frames = call["num_frames"]
        image = inputs["image"]
        clip = torch.cat([image, torch.zeros(1, 3, frames - 1, *image.shape[3:])], dim=2)
        with torch.no_grad():
            mode = vae.encode(clip).latent_dist.mode()
        condition = expected["condition"]
        mask = torch.zeros_like(condition[:, :4])
        mask[:, :, 0] = 1.0
        assert torch.equal(condition[:, :4], mask), f"{name}: mask channels"
        assert torch.equal(condition[:, 4:], (mode - mean) * inverse_std), f"{name}: condition latents"
        lines.append("condition == [mask(4): 1 at latent frame 0 | normalised VAE mode of [image, zeros x (F-1)]]")
    return lines


def replay(name: str, spec: dict, inputs: dict, noise: dict) -> dict:
    tape = NoiseTape(replay=[noise[str(i)] for i in range(len(noise))])
    result = run_case(name, spec, inputs, tape)
    assert len(tape.draws) == len(noise), f"{name}: replay used {len(tape.draws)} of {len(noise)} draws"
    return result


def sensitivity(name: str, spec: dict, inputs: dict, noise: dict, expected: dict) -> list:
    """Shows the case exercises what it claims: switching the feature off changes the output."""
    lines = []
    call = spec["call"]
    if (call.get("causal_block_size") or 1) > 1:
        original = SkyReelsV2Transformer3DModel._set_ar_attention
        SkyReelsV2Transformer3DModel._set_ar_attention = lambda self, size: None
        try:
            result = replay(name, spec, inputs, noise)
        finally:
            SkyReelsV2Transformer3DModel._set_ar_attention = original
        diff = (result["latents"] - expected["latents"]).abs().max().item()
        assert diff > 1e-3, f"{name}: block-causal attention changes the output by only {diff}"
        lines.append(f"vs bidirectional attention: max-abs {diff:.3e}")
    if call.get("addnoise_condition", 0) > 0:
        quiet = dict(noise)
        events = json.loads((FIXTURES / name / "case.json").read_text())["noise_draws"]
        for event in events:
            if event["purpose"] == "addnoise_prefix":
                quiet[event["name"]] = torch.zeros_like(noise[event["name"]])
        result = replay(name, spec, inputs, quiet)
        diff = (result["latents"] - expected["latents"]).abs().max().item()
        assert diff > 1e-3, f"{name}: the addnoise draws change the output by only {diff}"
        lines.append(f"addnoise draws zeroed: max-abs {diff:.3e}")
    if spec["pipeline"] == "i2v":
        blank = dict(inputs, image_pixels=torch.zeros_like(inputs["image_pixels"]))
        result = replay(name, spec, blank, noise)
        diff = (result["latents"] - expected["latents"]).abs().max().item()
        assert diff > 1e-3, f"{name}: the conditioning image changes the output by only {diff}"
        lines.append(f"zero conditioning image: max-abs {diff:.3e}")
        other = dict(inputs, image_embeds=torch.zeros_like(inputs["image_embeds"]))
        result = replay(name, spec, other, noise)
        diff = (result["latents"] - expected["latents"]).abs().max().item()
        assert diff > 1e-3, f"{name}: image_embeds change the output by only {diff}"
        lines.append(f"zero image_embeds: max-abs {diff:.3e}")
    if spec["pipeline"] == "dfi2v":
        for key in ("image_pixels", "last_image_pixels"):
            if key in inputs:
                blank = dict(inputs, **{key: torch.zeros_like(inputs[key])})
                result = replay(name, spec, blank, noise)
                diff = (result["latents"][:, :, :-1] - expected["latents"][:, :, :-1]).abs().max().item()
                assert diff > 1e-3, f"{name}: {key} changes the output by only {diff}"
                lines.append(f"zero {key}: max-abs {diff:.3e} (last frame excluded)")
    if spec["pipeline"] == "v2v":
        other = dict(inputs, video_pixels=inputs["video_pixels"].flip(2))
        result = replay(name, spec, other, noise)
        diff = (result["latents"] - expected["latents"]).abs().max().item()
        assert diff > 1e-3, f"{name}: the input video changes the output by only {diff}"
        lines.append(f"time-reversed input video: max-abs {diff:.3e}")
    return lines


def generate(name: str, spec: dict) -> None:
    inputs = make_inputs(name, spec)
    tape = NoiseTape(seed=case_seed(name, 2))
    result = run_case(name, spec, inputs, tape)
    input_tensors, noise, expected, case = build_case_files(name, spec, inputs, result, tape)
    root = FIXTURES / name
    root.mkdir(parents=True)
    metadata = {"case": name, "generator": GENERATOR}
    write_safetensors(root / "inputs.safetensors", input_tensors, metadata)
    write_safetensors(root / "noise.safetensors", noise, metadata)
    write_safetensors(root / "expected.safetensors", expected, metadata)
    write_json(root / "case.json", case)


def verify(name: str, spec: dict) -> list:
    """Re-reads the files, checks them independently, replays the recorded noise."""
    root = FIXTURES / name
    case = json.loads((root / "case.json").read_text())
    inputs, _ = read_safetensors(root / "inputs.safetensors")
    noise, _ = read_safetensors(root / "noise.safetensors")
    expected, _ = read_safetensors(root / "expected.safetensors")
    assert all(t.dtype == torch.float32 for d in (inputs, noise, expected) for t in d.values())
    assert {k: list(v.shape) for k, v in inputs.items()} == case["inputs"]
    assert {k: list(v.shape) for k, v in expected.items()} == case["expected"]
    lines = check_case(name, spec, case, expected, noise, inputs)

    # Replay from what is on disk. The stored pixels are in [-1,1]; given such a tensor (min < 0)
    # diffusers' VaeImageProcessor skips its 2x-1 normalisation (with a deprecation warning), so the
    # pipeline works on exactly the stored values, which the captures below confirm.
    replay_inputs = {k: inputs[k] for k in ("prompt_embeds", "negative_prompt_embeds", "image_embeds") if k in inputs}
    if "image" in inputs:
        replay_inputs["image_pixels"] = inputs["image"][:, :, 0]
    if "last_image" in inputs:
        replay_inputs["last_image_pixels"] = inputs["last_image"][:, :, 0]
    if "video" in inputs:
        replay_inputs["video_pixels"] = inputs["video"]
    result = replay(name, spec, replay_inputs, noise)
    if "image" in inputs and spec["pipeline"] == "i2v":
        assert torch.equal(result["recorder"].captured["image"], inputs["image"][:, :, 0])
    if spec["pipeline"] == "dfi2v":
        assert torch.equal(result["recorder"].captured["images"][0], inputs["image"][:, :, 0])
    if "video" in inputs:
        assert torch.equal(result["recorder"].captured["video"], inputs["video"])
    assert torch.equal(result["latents"], expected["latents"]), f"{name}: replaying the recorded noise does not reproduce the latents"
    for k, segment in enumerate(result["recorder"].segments):
        assert torch.equal(torch.stack(segment["trace"]), expected[f"trace.{k}"]), f"{name}: trace {k} differs on replay"
    assert len(result["recorder"].calls) == case["transformer_calls"]
    lines.append("replay of the recorded noise reproduces latents and per-row trace exactly")
    lines += sensitivity(name, spec, replay_inputs, noise, expected)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-version-check", action="store_true")
    parser.add_argument("--case", action="append", help="only these cases (default: all); other cases are left alone")
    args = parser.parse_args()
    if not args.skip_version_check:
        check_environment()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    diffusers.utils.logging.set_verbosity_error()
    # Replays hand the stored [-1,1] pixels back to the pipeline, which warns that it skips its
    # [0,1] -> [-1,1] normalisation for them; that is intended (see `verify`).
    warnings.filterwarnings("ignore", message="Passing `image` as torch tensor with value range in \\[-1,1\\] is deprecated")

    names = args.case or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit(f"unknown cases {unknown}; known: {list(CASES)}")
    if args.case is None and FIXTURES.exists():
        shutil.rmtree(FIXTURES)
    for name in names:
        if (FIXTURES / name).exists():
            shutil.rmtree(FIXTURES / name)

    for name in names:
        generate(name, CASES[name])

    print(f"{'case':<16} {'pipeline':<46} {'latents':<20} {'segments':<12} {'rows':<10} {'calls':>5} {'draws':>5}")
    for name in names:
        case = json.loads((FIXTURES / name / "case.json").read_text())
        windows = "+".join(str(s["num_latent_frames"]) for s in case["segments"])
        rows = "+".join(str(s["rows"]) for s in case["segments"])
        print(
            f"{name:<16} {case['pipeline']:<46} {str(case['latent_shape']):<20} {windows:<12} {rows:<10} "
            f"{case['transformer_calls']:>5} {len(case['noise_draws']):>5}"
        )
    print()
    for name in names:
        for line in verify(name, CASES[name]):
            print(f"{name:<16} {line}")
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    print(f"\nwrote {FIXTURES.relative_to(REPO_ROOT)} ({total / 1024:.0f} KiB); every case verified by replay")


if __name__ == "__main__":
    main()
