"""Text-encoder fixtures: a tiny seeded umT5 encoder in both checkpoint layouts, a tiny umT5-shaped
tokenizer, prompt cleaning as the SkyReels-V2 / diffusers pipelines do it, and reference outputs.

Writes tests/fixtures/text/:
  tokenizer.json                 tiny byte-fallback Unigram tokenizer (<pad> 0, </s> 1, <unk> 2)
  hf/{config.json,model.safetensors}   HF UMT5EncoderModel layout
  wan/model.safetensors          Wan / SkyReels T5Encoder names (SPEC §8 table)
  wan_pth/model.pth              the same state dict as a torch.save zip pickle
  cases.json                     prompts, ftfy-cleaned prompts, case names
  cases.safetensors              per case: input_ids, attention_mask [1, 512], hidden [1, 512, 32]
  batch.safetensors              a batch of 2 at length 24 with different masks (graph-level check)
  buckets.safetensors            UMT5 relative_position_bucket over -130..130

Run with the pinned reference venv (torch 2.15 CPU, transformers 5.24.0, tokenizers 0.23.3, ftfy 6.3.1):
  python tools/reference/make_text_fixtures.py
"""

import html
import json
import re
from pathlib import Path

import ftfy
import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "text"
MAX_LENGTH = 512

# Same recipe as crates/exporter/src/text/tiny.rs (tiny_vocabulary): the Rust tiny tokenizer and
# this one must give identical ids.
WORDS = [
    "a", "the", "of", "and", "in", "on", "with", "at", "is", "cat", "dog", "man", "woman", "girl", "boy", "car", "city",
    "street", "night", "day", "sun", "sea", "beach", "forest", "tree", "sky", "cloud", "rain", "snow", "light", "walks",
    "runs", "flies", "sits", "red", "blue", "green", "white", "black", "small", "big", "slow", "fast", "camera", "shot",
    "close", "up", "video", "scene", "cinematic", "bright", "dark", "static", "motion", "café", "über", "naïve",
]


def vocabulary():
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"<0x{b:02X}>", 0.0) for b in range(256)]
    vocab.append(("\u2581", -3.0))
    vocab += [(chr(c), -6.0) for c in range(0x21, 0x7F)]
    vocab += [(c, -7.0) for c in "éèàüöñçï"]
    vocab += [(f"\u2581{chr(c)}", -5.0) for c in range(ord("a"), ord("z") + 1)]
    seen = {p for p, _ in vocab}
    for word in WORDS:
        piece = f"\u2581{word}"
        if piece not in seen:
            vocab.append((piece, -2.0 - 0.1 * len(word)))
            seen.add(piece)
    return vocab


def build_tokenizer(vocab):
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    return tok


def prompt_clean(text):
    """diffusers' SkyReels-V2 prompt_clean = whitespace_clean(basic_clean(text))."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = re.sub(r"\s+", " ", text)
    return text.strip()


CASES = {
    "plain": "A cat walks on the beach at night",
    "whitespace": "  a   dog\t\truns\n\nin the   city \u00a0 \u3000 at  night  ",
    "accents": "Café naïve über, crème brûlée à la carte; Cafe\u0301 decomposed",
    "emoji": "a cat 🐱 with sunglasses 😎 on a 🚗, 👩\u200d👩\u200d👧 family",
    "html": "Tom &amp; Jerry &lt;3 &amp;amp; &quot;quoted&quot; &#39;x&#39; &eacute;t&eacute; &EACUTE; &#x1F600; &notit;",
    "html_literal_tag": "x <b>bold</b> &amp;amp; y",
    "empty": "",
    "only_spaces": " \t\n ",
    "mojibake": "cafÃ© smart â€œquotesâ€\x9d and Ã¼ber",
    "quotes_width_ligatures": "“curly” ‘single’ ＦＵＬＬ ｗｉｄｔｈ ﬁne ﬂow",
    "controls": "\x1b[31mred\x1b[0m text\x00 with\x07 bell\r\nand CRLF\u2028sep",
    "long": " ".join(["the red car runs fast on the street at night"] * 60),
}

# Cleaning-only cases (no encoder run): compared as strings by the Rust tests.
CLEAN_ONLY = [
    "&amp &AMP &amp; &ampx &notin; &notit; &#0; &#128; &#x80; &#1; &#xD800; &#99999999; &#X41;",
    "P&EACUTE;REZ BUNDESSTRA&SZLIG;E &nTILDE; &NTILDE; &Ntilde;",
    "ＬＯＵＤ\u3000ＮＯＩＳＥＳ ｶﾀｶﾅ",
    "line one <tag>\nline two &amp; three",
    "\ufeffbom \u206aarabic \ufffc obj",
    "tab\tsep\x0bvt\x0cff\x1cfs\x1dgs",
    "Broken text&hellip; it&#x2019;s ﬂubberiﬁc!",
    "&macr;\\_(ã\x83\x84)_/&macr;",
    "ellipsis\x85 next line",
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vocab = vocabulary()
    tok = build_tokenizer(vocab)
    tok.save(str(OUT / "tokenizer.json"))
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(OUT / "tokenizer.json"), pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )

    config = UMT5Config(
        vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
    )
    model = UMT5EncoderModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "relative_attention_bias" in name or "shared" in name or "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    model.save_pretrained(OUT / "hf", safe_serialization=True)

    rename = [
        ("layer.0.layer_norm.", "norm1."), ("layer.0.SelfAttention.relative_attention_bias.", "pos_embedding.embedding."),
        ("layer.0.SelfAttention.", "attn."), ("layer.1.layer_norm.", "norm2."),
        ("layer.1.DenseReluDense.wi_0.", "ffn.gate.0."), ("layer.1.DenseReluDense.wi_1.", "ffn.fc1."),
        ("layer.1.DenseReluDense.wo.", "ffn.fc2."),
    ]
    wan = {}
    for name, tensor in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":
            continue
        if name == "shared.weight":
            wan["token_embedding.weight"] = tensor.contiguous()
        elif name == "encoder.final_layer_norm.weight":
            wan["norm.weight"] = tensor.contiguous()
        else:
            rest = name.removeprefix("encoder.block.")
            index, suffix = rest.split(".", 1)
            for a, b in rename:
                if suffix.startswith(a):
                    suffix = b + suffix[len(a):]
                    break
            wan[f"blocks.{index}.{suffix}"] = tensor.contiguous()
    (OUT / "wan").mkdir(exist_ok=True)
    save_file(wan, OUT / "wan" / "model.safetensors")
    # The original SkyReels / Wan release ships this as a torch.save pickle (models_t5_*.pth).
    (OUT / "wan_pth").mkdir(exist_ok=True)
    torch.save(wan, OUT / "wan_pth" / "model.pth")

    tensors = {}
    cases = []
    for name, prompt in CASES.items():
        cleaned = prompt_clean(prompt)
        untruncated = len(hf_tokenizer(cleaned, add_special_tokens=True)["input_ids"])
        batch = hf_tokenizer(
            [cleaned], padding="max_length", max_length=MAX_LENGTH, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
        ids, mask = batch.input_ids, batch.attention_mask
        with torch.no_grad():
            hidden = model(ids, mask).last_hidden_state * mask[..., None]
            # diffusers' form: trim to the real length, then zero-pad back to 512.
            length = int(mask.sum())
            trimmed = model(ids, mask).last_hidden_state[0, :length]
            padded = torch.cat([trimmed, trimmed.new_zeros(MAX_LENGTH - length, trimmed.shape[1])])
            assert torch.equal(padded, hidden[0]), name
        tensors[f"{name}.input_ids"] = ids.to(torch.int64).contiguous()
        tensors[f"{name}.attention_mask"] = mask.to(torch.int64).contiguous()
        tensors[f"{name}.hidden"] = hidden.float().contiguous()
        cases.append({"name": name, "prompt": prompt, "cleaned": cleaned,
                      "truncated_tokens": max(0, untruncated - MAX_LENGTH)})
    save_file(tensors, OUT / "cases.safetensors")
    clean_only = [{"prompt": p, "cleaned": prompt_clean(p), "fix_text": ftfy.fix_text(p),
                   "html_unescape": html.unescape(p)} for p in CLEAN_ONLY]
    (OUT / "cases.json").write_text(json.dumps({"encode": cases, "clean": clean_only}, ensure_ascii=False, indent=1))

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, len(vocab), (2, 24), generator=generator)
    mask = torch.zeros(2, 24, dtype=torch.int64)
    mask[0, :24] = 1
    mask[1, :9] = 1
    ids[1, 9:] = 0
    with torch.no_grad():
        hidden = model(ids, mask).last_hidden_state * mask[..., None]
    save_file({"input_ids": ids.contiguous(), "attention_mask": mask.contiguous(), "hidden": hidden.contiguous()},
              OUT / "batch.safetensors")

    attention = model.encoder.block[0].layer[0].SelfAttention
    relative = torch.arange(-130, 131)
    save_file({"relative": relative.contiguous(), "bucket": attention._relative_position_bucket(relative).to(torch.int64).contiguous()},
              OUT / "buckets.safetensors")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
