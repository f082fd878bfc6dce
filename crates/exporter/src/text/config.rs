//! umT5 checkpoint layouts and architecture. Canonical names are Wan's (`blocks.0.attn.q.weight`,
//! SPEC §8 table); HF `UMT5EncoderModel` names are mapped onto them. Sizes come from tensor
//! shapes; `max_distance` and eps from `config.json` when there is one (Wan checkpoints have none).

use std::path::Path;

use skyreels_contract::text::TextEncoderConfig;

use crate::error::{ExportError, Result};
use crate::weights::WeightStore;

/// How a checkpoint names the umT5 encoder's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLayout {
    /// Wan / SkyReels `T5Encoder` names (`token_embedding.weight`, `blocks.{i}.attn.q.weight`).
    Wan,
    /// HF `UMT5EncoderModel` names (`shared.weight`, `encoder.block.{i}.layer.0.SelfAttention.q.weight`).
    HuggingFace,
}

const HF_IN_BLOCK: &[(&str, &str)] = &[
    ("layer.0.layer_norm.", "norm1."),
    ("layer.0.SelfAttention.q.", "attn.q."),
    ("layer.0.SelfAttention.k.", "attn.k."),
    ("layer.0.SelfAttention.v.", "attn.v."),
    ("layer.0.SelfAttention.o.", "attn.o."),
    (
        "layer.0.SelfAttention.relative_attention_bias.",
        "pos_embedding.embedding.",
    ),
    ("layer.1.layer_norm.", "norm2."),
    ("layer.1.DenseReluDense.wi_0.", "ffn.gate.0."),
    ("layer.1.DenseReluDense.wi_1.", "ffn.fc1."),
    ("layer.1.DenseReluDense.wo.", "ffn.fc2."),
];

impl TextLayout {
    /// Guesses the layout from the stored names.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> TextLayout {
        let hf = names
            .into_iter()
            .any(|n| n.starts_with("encoder.") || n == "shared.weight");
        if hf {
            TextLayout::HuggingFace
        } else {
            TextLayout::Wan
        }
    }

    /// Maps a stored name to its canonical (Wan) name; `None` when it is not part of the encoder.
    /// HF's tied `shared.weight` and `encoder.embed_tokens.weight` both map to
    /// `token_embedding.weight`; when both are stored, the later name in sorted order (`shared`)
    /// is the one read.
    pub fn canonical(self, stored: &str) -> Option<String> {
        match self {
            TextLayout::Wan => Some(stored.to_string()),
            TextLayout::HuggingFace => {
                if stored == "shared.weight" || stored == "encoder.embed_tokens.weight" {
                    return Some("token_embedding.weight".into());
                }
                if stored == "encoder.final_layer_norm.weight" {
                    return Some("norm.weight".into());
                }
                let rest = stored.strip_prefix("encoder.block.")?;
                let (index, suffix) = rest.split_once('.')?;
                index.parse::<usize>().ok()?;
                HF_IN_BLOCK.iter().find_map(|(from, to)| {
                    suffix
                        .strip_prefix(from)
                        .map(|leaf| format!("blocks.{index}.{to}{leaf}"))
                })
            }
        }
    }
}

fn json_usize(json: &serde_json::Value, key: &str) -> Option<usize> {
    json.get(key).and_then(|v| v.as_u64()).map(|v| v as usize)
}

/// Derives the architecture from the stored shapes and the (possibly empty) config JSON.
pub fn text_config(
    weights: &WeightStore<'_>,
    json: &serde_json::Value,
    config_path: &Path,
) -> Result<TextEncoderConfig> {
    let bad = |reason: String| ExportError::BadConfig {
        path: config_path.to_path_buf(),
        reason,
    };
    let shape = |name: &str| {
        weights
            .shape(name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| ExportError::MissingWeight {
                name: name.to_string(),
                path: config_path.to_path_buf(),
            })
    };
    let embedding = shape("token_embedding.weight")?;
    let (vocab_size, dim) = (embedding[0], embedding[1]);
    let attention_width = shape("blocks.0.attn.q.weight")?[0];
    let position_table = shape("blocks.0.pos_embedding.embedding.weight")?;
    let (num_buckets, num_heads) = (position_table[0], position_table[1]);
    let ffn_dim = shape("blocks.0.ffn.fc1.weight")?[0];
    let mut num_layers = 0;
    while weights.contains(&format!("blocks.{num_layers}.norm1.weight")) {
        num_layers += 1;
    }
    if num_heads == 0 || attention_width % num_heads != 0 {
        return Err(bad(format!(
            "attention width {attention_width} is not a multiple of {num_heads} heads"
        )));
    }
    let head_dim = attention_width / num_heads;
    let checks: [(&str, usize); 7] = [
        ("vocab_size", vocab_size),
        ("d_model", dim),
        ("d_kv", head_dim),
        ("d_ff", ffn_dim),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("relative_attention_num_buckets", num_buckets),
    ];
    for (key, actual) in checks {
        if let Some(declared) = json_usize(json, key)
            && declared != actual
        {
            return Err(bad(format!(
                "{key} = {declared} but the weights say {actual}"
            )));
        }
    }
    if let Some(projection) = json.get("feed_forward_proj").and_then(|v| v.as_str())
        && projection != "gated-gelu"
    {
        return Err(bad(format!(
            "feed_forward_proj `{projection}` is not supported; umT5 uses gated-gelu (tanh GELU)"
        )));
    }
    if let Some(shared) = json
        .get("relative_attention_shared")
        .or_else(|| json.get("shared_pos"))
        .and_then(|v| v.as_bool())
        && shared
    {
        return Err(bad(
            "a shared relative-position table is not supported; umT5 has one per layer".into(),
        ));
    }
    let max_distance = json_usize(json, "relative_attention_max_distance").unwrap_or(128);
    let eps = json
        .get("layer_norm_epsilon")
        .and_then(|v| v.as_f64())
        .unwrap_or(1e-6);
    if num_buckets < 4 || num_buckets % 4 != 0 || max_distance <= num_buckets / 4 {
        return Err(bad(format!(
            "{num_buckets} buckets with max distance {max_distance} is not a bidirectional T5 bucketing"
        )));
    }
    Ok(TextEncoderConfig {
        vocab_size,
        dim,
        num_heads,
        head_dim,
        ffn_dim,
        num_layers,
        num_buckets,
        max_distance,
        eps,
    })
}

/// Bidirectional T5 relative-position bucket of `relative = key_position − query_position`.
///
/// Half the buckets are for `relative > 0`. Within a half, distances below `num_buckets/4` get
/// their own bucket; larger ones share log-spaced buckets up to `max_distance`, beyond which all
/// fall in the last one: `max_exact + ⌊ln(d/max_exact) / ln(max_distance/max_exact) · max_exact⌋`,
/// capped at `num_buckets/2 − 1`. The floor is taken on the exact value (computed in f64 with a
/// 1e-9 guard), which is what torch's float32 gives for umT5's (32, 128): checked against
/// `UMT5Attention._relative_position_bucket` over −130..130 by the parity fixtures.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> i64 {
    let half = (num_buckets / 2) as i64;
    let max_exact = half / 2;
    let offset = if relative > 0 { half } else { 0 };
    let distance = relative.abs();
    if distance < max_exact {
        return offset + distance;
    }
    let ratio =
        (distance as f64 / max_exact as f64).ln() / (max_distance as f64 / max_exact as f64).ln();
    let large = max_exact + (ratio * (half - max_exact) as f64 + 1e-9).floor() as i64;
    offset + large.min(half - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_hf_names() {
        let cases = [
            ("shared.weight", "token_embedding.weight"),
            ("encoder.embed_tokens.weight", "token_embedding.weight"),
            ("encoder.final_layer_norm.weight", "norm.weight"),
            (
                "encoder.block.3.layer.0.SelfAttention.o.weight",
                "blocks.3.attn.o.weight",
            ),
            (
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                "blocks.0.pos_embedding.embedding.weight",
            ),
            (
                "encoder.block.11.layer.1.DenseReluDense.wi_0.weight",
                "blocks.11.ffn.gate.0.weight",
            ),
            (
                "encoder.block.11.layer.1.DenseReluDense.wi_1.weight",
                "blocks.11.ffn.fc1.weight",
            ),
            (
                "encoder.block.2.layer.1.layer_norm.weight",
                "blocks.2.norm2.weight",
            ),
        ];
        for (hf, wan) in cases {
            assert_eq!(
                TextLayout::HuggingFace.canonical(hf).as_deref(),
                Some(wan),
                "{hf}"
            );
        }
        assert_eq!(
            TextLayout::HuggingFace.canonical("decoder.block.0.layer.0.SelfAttention.q.weight"),
            None
        );
    }

    #[test]
    fn buckets_match_the_integer_form() {
        // For (32, 128): bucket = 8 + k with k the largest integer such that 64·2^k ≤ d².
        for relative in -300i64..=300 {
            let distance = relative.abs();
            let offset = if relative > 0 { 16 } else { 0 };
            let expected = if distance < 8 {
                offset + distance
            } else {
                let mut k = 0;
                while 64 * (1i64 << (k + 1)) <= distance * distance {
                    k += 1;
                }
                offset + (8 + k).min(15)
            };
            assert_eq!(
                relative_position_bucket(relative, 32, 128),
                expected,
                "relative {relative}"
            );
        }
    }
}
