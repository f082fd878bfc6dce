//! Seeded random umT5 encoders in the Wan layout (the built-in tiny model's text encoder, and
//! real-width weights for export measurements) and the tiny model's `tokenizer.json`.

use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use skyreels_contract::text::TextEncoderConfig;

use crate::error::Result;
use crate::tiny::StorageDtype;

/// The tiny model's encoder: width 32 (the tiny DiT's `text_dim`), 2 layers, 4 heads × 8.
pub fn tiny_text_config() -> TextEncoderConfig {
    TextEncoderConfig {
        vocab_size: tiny_vocabulary().len(),
        dim: 32,
        num_heads: 4,
        head_dim: 8,
        ffn_dim: 64,
        num_layers: 2,
        num_buckets: 32,
        max_distance: 128,
        eps: 1e-6,
    }
}

/// umT5-XXL (SPEC §8) with `num_layers` blocks, for measurements with random weights.
pub fn umt5_xxl_config(num_layers: usize) -> TextEncoderConfig {
    TextEncoderConfig {
        vocab_size: 256_384,
        dim: 4096,
        num_heads: 64,
        head_dim: 64,
        ffn_dim: 10240,
        num_layers,
        num_buckets: 32,
        max_distance: 128,
        eps: 1e-6,
    }
}

/// Every tensor (Wan names) with its shape and standard deviation.
fn tensors(config: &TextEncoderConfig) -> Vec<(String, Vec<usize>, f32, f32)> {
    let (d, width, ffn) = (
        config.dim,
        config.num_heads * config.head_dim,
        config.ffn_dim,
    );
    let linear = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    let mut t = vec![(
        "token_embedding.weight".to_string(),
        vec![config.vocab_size, d],
        0.0,
        1.0,
    )];
    for i in 0..config.num_layers {
        let p = format!("blocks.{i}");
        t.push((format!("{p}.norm1.weight"), vec![d], 1.0, 0.1));
        for proj in ["q", "k", "v"] {
            t.push((
                format!("{p}.attn.{proj}.weight"),
                vec![width, d],
                0.0,
                linear(d),
            ));
        }
        t.push((
            format!("{p}.attn.o.weight"),
            vec![d, width],
            0.0,
            linear(width),
        ));
        t.push((
            format!("{p}.pos_embedding.embedding.weight"),
            vec![config.num_buckets, config.num_heads],
            0.0,
            1.0,
        ));
        t.push((format!("{p}.norm2.weight"), vec![d], 1.0, 0.1));
        t.push((
            format!("{p}.ffn.gate.0.weight"),
            vec![ffn, d],
            0.0,
            linear(d),
        ));
        t.push((format!("{p}.ffn.fc1.weight"), vec![ffn, d], 0.0, linear(d)));
        t.push((
            format!("{p}.ffn.fc2.weight"),
            vec![d, ffn],
            0.0,
            linear(ffn),
        ));
    }
    t.push(("norm.weight".to_string(), vec![d], 1.0, 0.1));
    t
}

/// Writes `dir/model.safetensors` (Wan names, no `config.json`) with seeded uniform weights of
/// the given means and standard deviations, streaming tensor by tensor (real sizes fit in memory
/// one tensor at a time: the 256384×4096 embedding is the largest).
pub fn write_random_text_encoder(
    dir: &Path,
    config: &TextEncoderConfig,
    storage: StorageDtype,
    seed: u64,
) -> Result<()> {
    fs_err::create_dir_all(dir)?;
    let tensors = tensors(config);
    let (element, dtype_name) = match storage {
        StorageDtype::F32 => (4, "F32"),
        StorageDtype::BF16 => (2, "BF16"),
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, _, _) in &tensors {
        let bytes = shape.iter().product::<usize>() * element;
        header.insert(name.clone(), serde_json::json!({"dtype": dtype_name, "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let mut header =
        serde_json::to_vec(&serde_json::Value::Object(header)).map_err(std::io::Error::other)?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = BufWriter::with_capacity(
        8 << 20,
        fs_err::File::create(dir.join("model.safetensors"))?,
    );
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buffer = Vec::new();
    for (_, shape, mean, std) in &tensors {
        let half_width = std * 3f32.sqrt();
        buffer.clear();
        for _ in 0..shape.iter().product::<usize>() {
            let value = mean + half_width * (2.0 * rng.random::<f32>() - 1.0);
            match storage {
                StorageDtype::F32 => buffer.extend_from_slice(&value.to_le_bytes()),
                StorageDtype::BF16 => {
                    buffer.extend_from_slice(&half::bf16::from_f32(value).to_le_bytes())
                }
            }
        }
        out.write_all(&buffer)?;
    }
    out.flush()?;
    Ok(())
}

const WORDS: &[&str] = &[
    "a",
    "the",
    "of",
    "and",
    "in",
    "on",
    "with",
    "at",
    "is",
    "cat",
    "dog",
    "man",
    "woman",
    "girl",
    "boy",
    "car",
    "city",
    "street",
    "night",
    "day",
    "sun",
    "sea",
    "beach",
    "forest",
    "tree",
    "sky",
    "cloud",
    "rain",
    "snow",
    "light",
    "walks",
    "runs",
    "flies",
    "sits",
    "red",
    "blue",
    "green",
    "white",
    "black",
    "small",
    "big",
    "slow",
    "fast",
    "camera",
    "shot",
    "close",
    "up",
    "video",
    "scene",
    "cinematic",
    "bright",
    "dark",
    "static",
    "motion",
    "café",
    "über",
    "naïve",
];

/// The tiny vocabulary with Unigram scores: umT5's special ids (`<pad>` 0, `</s>` 1, `<unk>` 2),
/// the 256 byte-fallback pieces `<0x00>`…`<0xFF>`, single characters, then whole words.
fn tiny_vocabulary() -> Vec<(String, f64)> {
    let mut vocab: Vec<(String, f64)> = vec![
        ("<pad>".into(), 0.0),
        ("</s>".into(), 0.0),
        ("<unk>".into(), 0.0),
    ];
    vocab.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0)));
    vocab.push(("\u{2581}".into(), -3.0));
    vocab.extend((0x21u8..=0x7e).map(|c| ((c as char).to_string(), -6.0)));
    vocab.extend("éèàüöñçï".chars().map(|c| (c.to_string(), -7.0)));
    vocab.extend(('a'..='z').map(|c| (format!("\u{2581}{c}"), -5.0)));
    for word in WORDS {
        let piece = format!("\u{2581}{word}");
        if !vocab.iter().any(|(p, _)| *p == piece) {
            vocab.push((piece, -2.0 - 0.1 * word.chars().count() as f64));
        }
    }
    vocab
}

/// The tiny model's `tokenizer.json` (HF `tokenizers` format): a byte-fallback Unigram model
/// over [`tiny_vocabulary`] with umT5's pipeline shape: NFKC, runs of spaces collapsed,
/// Metaspace (`▁`, prefix always), and `$A </s>` post-processing.
pub fn tiny_tokenizer_json() -> String {
    let special = |id: usize, content: &str| serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let metaspace = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
        ]},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 2, "vocab": tiny_vocabulary(), "byte_fallback": true}
    });
    serde_json::to_string_pretty(&json).expect("a JSON value always renders")
}

/// Writes the tiny encoder (`dir/text_encoder/model.safetensors`, float32) and
/// `dir/tokenizer/tokenizer.json`; returns (checkpoint dir, tokenizer dir).
pub fn write_tiny(dir: &Path, seed: u64) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let encoder = dir.join("text_encoder");
    let tokenizer = dir.join("tokenizer");
    write_random_text_encoder(&encoder, &tiny_text_config(), StorageDtype::F32, seed)?;
    fs_err::create_dir_all(&tokenizer)?;
    fs_err::write(tokenizer.join("tokenizer.json"), tiny_tokenizer_json())?;
    Ok((encoder, tokenizer))
}
