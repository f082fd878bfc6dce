//! CLIP vision-tower checkpoint layouts and architecture. Canonical names are HF
//! `CLIPVisionModel`'s without the `vision_model.` prefix (`encoder.layers.0.self_attn.q_proj.weight`);
//! Wan / SkyReels `visual.*` names (SPEC §9 table) map onto them, except the fused `to_qkv`, which
//! keeps its own canonical name `encoder.layers.{i}.self_attn.qkv_proj.*` and is split in-graph.
//! Tensors the penultimate-layer graph never reads get the canonical prefix `unused.`.

use std::path::Path;

use skyreels_contract::image::ImageEncoderConfig;

use crate::error::{ExportError, Result};
use crate::weights::WeightStore;

/// Canonical-name prefix of tensors that are deliberately not exported.
pub const UNUSED: &str = "unused.";

/// How a checkpoint names the vision tower's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageLayout {
    /// Wan / SkyReels `CLIPModel` (`visual.transformer.{i}.attn.to_qkv.weight`, `textual.*` ignored).
    Wan,
    /// HF `CLIPVisionModel` / `CLIPVisionModelWithProjection` (`vision_model.*`).
    HuggingFace,
}

const WAN_IN_BLOCK: &[(&str, &str)] = &[
    ("norm1.", "layer_norm1."),
    ("norm2.", "layer_norm2."),
    ("attn.to_qkv.", "self_attn.qkv_proj."),
    ("attn.proj.", "self_attn.out_proj."),
    ("mlp.0.", "mlp.fc1."),
    ("mlp.2.", "mlp.fc2."),
];

impl ImageLayout {
    /// Guesses the layout from the stored names.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> ImageLayout {
        let hf = names.into_iter().any(|n| n.starts_with("vision_model."));
        if hf {
            ImageLayout::HuggingFace
        } else {
            ImageLayout::Wan
        }
    }

    /// Maps a stored name to its canonical name (`unused.…` for tensors outside the vision
    /// tower's penultimate path: projection heads, the text tower, `log_scale`, `position_ids`);
    /// `None` when unknown.
    pub fn canonical(self, stored: &str) -> Option<String> {
        match self {
            ImageLayout::HuggingFace => {
                if stored == "visual_projection.weight"
                    || stored == "vision_model.embeddings.position_ids"
                {
                    return Some(format!("{UNUSED}{stored}"));
                }
                let rest = stored.strip_prefix("vision_model.")?;
                if rest.starts_with("post_layernorm.") {
                    return Some(format!("{UNUSED}{rest}"));
                }
                Some(rest.to_string())
            }
            ImageLayout::Wan => {
                let Some(rest) = stored.strip_prefix("visual.") else {
                    return (stored.starts_with("textual.") || stored == "log_scale")
                        .then(|| format!("{UNUSED}{stored}"));
                };
                let direct = match rest {
                    "patch_embedding.weight" => Some("embeddings.patch_embedding.weight"),
                    "cls_embedding" => Some("embeddings.class_embedding"),
                    "pos_embedding" => Some("embeddings.position_embedding.weight"),
                    "pre_norm.weight" => Some("pre_layrnorm.weight"),
                    "pre_norm.bias" => Some("pre_layrnorm.bias"),
                    _ => None,
                };
                if let Some(name) = direct {
                    return Some(name.to_string());
                }
                if rest == "head" || rest.starts_with("post_norm.") {
                    return Some(format!("{UNUSED}{rest}"));
                }
                let (index, suffix) = rest.strip_prefix("transformer.")?.split_once('.')?;
                index.parse::<usize>().ok()?;
                WAN_IN_BLOCK.iter().find_map(|(from, to)| {
                    suffix
                        .strip_prefix(from)
                        .map(|leaf| format!("encoder.layers.{index}.{to}{leaf}"))
                })
            }
        }
    }
}

/// Derives the architecture from the stored shapes and the (possibly empty) config JSON.
/// Without a head count in `config.json` (`num_attention_heads`), heads of width 80 are assumed
/// (ViT-H/14: 1280 = 16 × 80).
pub fn image_config(
    weights: &WeightStore<'_>,
    json: &serde_json::Value,
    config_path: &Path,
) -> Result<ImageEncoderConfig> {
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
    let patch = shape("embeddings.patch_embedding.weight")?;
    if patch.len() != 4 || patch[1] != 3 || patch[2] != patch[3] {
        return Err(bad(format!(
            "patch embedding has shape {patch:?}; expected [dim, 3, patch, patch]"
        )));
    }
    let (dim, patch_size) = (patch[0], patch[2]);
    let positions: usize = shape("embeddings.position_embedding.weight")?
        .iter()
        .product::<usize>()
        / dim;
    let side = ((positions.saturating_sub(1)) as f64).sqrt().round() as usize;
    if side * side + 1 != positions {
        return Err(bad(format!(
            "{positions} position embeddings is not 1 + a square number of patches"
        )));
    }
    let ffn_dim = shape("encoder.layers.0.mlp.fc1.weight")?[0];
    let mut num_layers = 0;
    while weights.contains(&format!("encoder.layers.{num_layers}.layer_norm1.weight")) {
        num_layers += 1;
    }
    if num_layers < 2 {
        return Err(bad(format!(
            "{num_layers} blocks: the penultimate hidden state needs at least 2"
        )));
    }
    let num_heads = match json.get("num_attention_heads").and_then(|v| v.as_u64()) {
        Some(heads) => heads as usize,
        None if dim % 80 == 0 => dim / 80,
        None => {
            return Err(bad(format!(
                "width {dim} without `num_attention_heads`; add it to config.json"
            )));
        }
    };
    if dim % num_heads != 0 {
        return Err(bad(format!(
            "width {dim} is not a multiple of {num_heads} heads"
        )));
    }
    if let Some(activation) = json.get("hidden_act").and_then(|v| v.as_str())
        && activation != "gelu"
    {
        return Err(bad(format!(
            "hidden_act `{activation}` is not supported; the ViT-H/14 tower uses exact `gelu`"
        )));
    }
    let checks: [(&str, usize); 4] = [
        ("hidden_size", dim),
        ("patch_size", patch_size),
        ("intermediate_size", ffn_dim),
        ("num_hidden_layers", num_layers),
    ];
    for (key, actual) in checks {
        if let Some(declared) = json.get(key).and_then(|v| v.as_u64())
            && declared as usize != actual
        {
            return Err(bad(format!(
                "{key} = {declared} but the weights say {actual}"
            )));
        }
    }
    let eps = json
        .get("layer_norm_eps")
        .and_then(|v| v.as_f64())
        .unwrap_or(1e-5);
    Ok(ImageEncoderConfig {
        image_size: side * patch_size,
        patch_size,
        dim,
        num_heads,
        ffn_dim,
        num_layers,
        eps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_wan_names() {
        let cases = [
            ("visual.cls_embedding", "embeddings.class_embedding"),
            (
                "visual.pos_embedding",
                "embeddings.position_embedding.weight",
            ),
            (
                "visual.transformer.7.attn.to_qkv.bias",
                "encoder.layers.7.self_attn.qkv_proj.bias",
            ),
            (
                "visual.transformer.0.attn.proj.weight",
                "encoder.layers.0.self_attn.out_proj.weight",
            ),
            (
                "visual.transformer.31.mlp.2.weight",
                "encoder.layers.31.mlp.fc2.weight",
            ),
            ("visual.post_norm.weight", "unused.post_norm.weight"),
            ("visual.head", "unused.head"),
            (
                "textual.blocks.0.attn.q.weight",
                "unused.textual.blocks.0.attn.q.weight",
            ),
            ("log_scale", "unused.log_scale"),
        ];
        for (wan, canonical) in cases {
            assert_eq!(
                ImageLayout::Wan.canonical(wan).as_deref(),
                Some(canonical),
                "{wan}"
            );
        }
        assert_eq!(
            ImageLayout::Wan.canonical("visual.transformer.x.norm1.weight"),
            None
        );
        assert_eq!(
            ImageLayout::HuggingFace
                .canonical("vision_model.encoder.layers.2.self_attn.k_proj.bias")
                .as_deref(),
            Some("encoder.layers.2.self_attn.k_proj.bias")
        );
        assert_eq!(
            ImageLayout::HuggingFace
                .canonical("visual_projection.weight")
                .as_deref(),
            Some("unused.visual_projection.weight")
        );
    }
}
