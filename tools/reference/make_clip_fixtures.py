"""CLIP image-encoder fixtures: a tiny seeded CLIPVisionModelWithProjection (as diffusers' SkyReels-V2
I2V snapshots ship it) in both checkpoint layouts, preprocessing references and penultimate-layer
hidden states.

Writes tests/fixtures/clip/:
  hf/{config.json,model.safetensors}   HF layout (vision_model.* + visual_projection.weight)
  wan/{config.json,model.safetensors}  Wan / SkyReels `visual.*` names (fused to_qkv rows q, k, v),
                                       plus a stray `textual.*` tensor and `log_scale` as in the .pth
  wan_pth/{config.json,model.pth}      the same state dict as a torch.save zip pickle
  images/*.png                         fixed synthetic RGB images (one downscaled, one upscaled)
  cases.safetensors                    per image: pixel_values from CLIPImageProcessorPil (shortest
                                       side 224, PIL bicubic, centre crop, CLIP mean/std),
                                       squash_pixel_values (upscale only; upstream encode_video: bicubic
                                       F.interpolate to 224x224 of the [-1, 1] image), and
                                       hidden = hidden_states[-2] for pixel_values

The transformers 5.24 `CLIPImageProcessor` is the torchvision backend; torchvision is not in the
reference venv, so the PIL backend (`CLIPImageProcessorPil`, the pre-v5 behaviour) is the reference.

  python tools/reference/make_clip_fixtures.py
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clip"
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def synthetic_image(width, height, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = 255 * x / width
    b = 255 * ((x // 16 + y // 16) % 2)
    image = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "images").mkdir(exist_ok=True)
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=16,
    )
    model = CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.copy_((1.0 + 0.1 * torch.randn_like(p)) if name.endswith("weight") else 0.05 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif p.dim() == 1 or "position_embedding" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / (p[0].numel() ** 0.5))
    model.save_pretrained(OUT / "hf", safe_serialization=True)

    sd = model.state_dict()
    wan = {}
    v = "vision_model."
    wan["visual.patch_embedding.weight"] = sd[v + "embeddings.patch_embedding.weight"]
    wan["visual.cls_embedding"] = sd[v + "embeddings.class_embedding"].reshape(1, 1, -1)
    wan["visual.pos_embedding"] = sd[v + "embeddings.position_embedding.weight"].unsqueeze(0)
    for hf, w in [("pre_layrnorm", "pre_norm"), ("post_layernorm", "post_norm")]:
        for leaf in ["weight", "bias"]:
            wan[f"visual.{w}.{leaf}"] = sd[f"{v}{hf}.{leaf}"]
    for i in range(config.num_hidden_layers):
        p = f"{v}encoder.layers.{i}."
        q = f"visual.transformer.{i}."
        for leaf in ["weight", "bias"]:
            wan[f"{q}norm1.{leaf}"] = sd[f"{p}layer_norm1.{leaf}"]
            wan[f"{q}norm2.{leaf}"] = sd[f"{p}layer_norm2.{leaf}"]
            wan[f"{q}attn.to_qkv.{leaf}"] = torch.cat([sd[f"{p}self_attn.{x}_proj.{leaf}"] for x in "qkv"])
            wan[f"{q}attn.proj.{leaf}"] = sd[f"{p}self_attn.out_proj.{leaf}"]
            wan[f"{q}mlp.0.{leaf}"] = sd[f"{p}mlp.fc1.{leaf}"]
            wan[f"{q}mlp.2.{leaf}"] = sd[f"{p}mlp.fc2.{leaf}"]
    wan["visual.head"] = sd["visual_projection.weight"].T.contiguous()
    wan["textual.token_embedding.weight"] = torch.randn(8, 4)
    wan["log_scale"] = torch.tensor(4.6)
    (OUT / "wan").mkdir(exist_ok=True)
    save_file({k: t.contiguous() for k, t in wan.items()}, OUT / "wan" / "model.safetensors")
    (OUT / "wan" / "config.json").write_text(json.dumps({"num_attention_heads": 4}) + "\n")
    (OUT / "wan_pth").mkdir(exist_ok=True)
    torch.save(dict(wan), OUT / "wan_pth" / "model.pth")
    (OUT / "wan_pth" / "config.json").write_text(json.dumps({"num_attention_heads": 4}) + "\n")

    processor = CLIPImageProcessorPil()
    assert processor.resample == 3 and processor.size["shortest_edge"] == 224
    tensors = {}
    for name, (width, height, seed) in {"downscale": (251, 341, 1), "upscale": (131, 97, 2)}.items():
        image = synthetic_image(width, height, seed)
        image.save(OUT / "images" / f"{name}.png")
        image = Image.open(OUT / "images" / f"{name}.png").convert("RGB")
        pixels = processor(images=image, return_tensors="pt").pixel_values
        pixels = pixels.float().contiguous()
        signed = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        squashed = F.interpolate(signed, size=(224, 224), mode="bicubic", align_corners=False)
        squashed = squashed * 0.5 + 0.5
        squashed = (squashed - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        with torch.no_grad():
            hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        tensors[f"{name}.pixel_values"] = pixels
        if name == "upscale":
            tensors[f"{name}.squash_pixel_values"] = squashed.contiguous()
        tensors[f"{name}.hidden"] = hidden.contiguous()
    save_file(tensors, OUT / "cases.safetensors")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
