//! Checkpoint key layouts. The canonical names are the original SkyReels-V2 / Wan layout
//! (`blocks.0.self_attn.q.weight`); diffusers names (`blocks.0.attn1.to_q.weight`) are mapped onto
//! them with the table of SPEC.md §1.4 (diffusers' `convert_skyreelsv2_to_diffusers.py`, inverted).

/// How a checkpoint names its DiT weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Official SkyReels-V2 / Wan2.1 names.
    Original,
    /// diffusers `SkyReelsV2Transformer3DModel` names.
    Diffusers,
}

impl Layout {
    /// Guesses the layout from the stored names.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Layout {
        let diffusers = names
            .into_iter()
            .any(|n| n.starts_with("condition_embedder.") || n.starts_with("proj_out."));
        if diffusers {
            Layout::Diffusers
        } else {
            Layout::Original
        }
    }

    /// Maps a stored name to its canonical (original-layout) name; `None` when unknown.
    pub fn canonical(self, stored: &str) -> Option<String> {
        match self {
            Layout::Original => Some(stored.to_string()),
            Layout::Diffusers => diffusers_to_original(stored),
        }
    }
}

const TOP_LEVEL: &[(&str, &str)] = &[
    (
        "condition_embedder.text_embedder.linear_1.",
        "text_embedding.0.",
    ),
    (
        "condition_embedder.text_embedder.linear_2.",
        "text_embedding.2.",
    ),
    (
        "condition_embedder.time_embedder.linear_1.",
        "time_embedding.0.",
    ),
    (
        "condition_embedder.time_embedder.linear_2.",
        "time_embedding.2.",
    ),
    ("condition_embedder.time_proj.", "time_projection.1."),
    (
        "condition_embedder.image_embedder.norm1.",
        "img_emb.proj.0.",
    ),
    (
        "condition_embedder.image_embedder.ff.net.0.proj.",
        "img_emb.proj.1.",
    ),
    (
        "condition_embedder.image_embedder.ff.net.2.",
        "img_emb.proj.3.",
    ),
    (
        "condition_embedder.image_embedder.norm2.",
        "img_emb.proj.4.",
    ),
    ("fps_projection.net.0.proj.", "fps_projection.0."),
    ("fps_projection.net.2.", "fps_projection.2."),
    ("proj_out.", "head.head."),
    ("patch_embedding.", "patch_embedding."),
    ("fps_embedding.", "fps_embedding."),
];

const IN_BLOCK: &[(&str, &str)] = &[
    ("attn1.to_q.", "self_attn.q."),
    ("attn1.to_k.", "self_attn.k."),
    ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."),
    ("attn1.norm_q.", "self_attn.norm_q."),
    ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_q.", "cross_attn.q."),
    ("attn2.to_k.", "cross_attn.k."),
    ("attn2.to_v.", "cross_attn.v."),
    ("attn2.to_out.0.", "cross_attn.o."),
    ("attn2.norm_q.", "cross_attn.norm_q."),
    ("attn2.norm_k.", "cross_attn.norm_k."),
    ("attn2.add_k_proj.", "cross_attn.k_img."),
    ("attn2.add_v_proj.", "cross_attn.v_img."),
    ("attn2.norm_added_k.", "cross_attn.norm_k_img."),
    // diffusers' cross-attention pre-norm is `norm2`; upstream calls it `norm3`.
    ("norm2.", "norm3."),
    ("ffn.net.0.proj.", "ffn.0."),
    ("ffn.net.2.", "ffn.2."),
];

fn diffusers_to_original(name: &str) -> Option<String> {
    if name == "scale_shift_table" {
        return Some("head.modulation".into());
    }
    if let Some(rest) = name.strip_prefix("blocks.") {
        let (index, suffix) = rest.split_once('.')?;
        index.parse::<usize>().ok()?;
        if suffix == "scale_shift_table" {
            return Some(format!("blocks.{index}.modulation"));
        }
        return IN_BLOCK.iter().find_map(|(from, to)| {
            suffix
                .strip_prefix(from)
                .map(|leaf| format!("blocks.{index}.{to}{leaf}"))
        });
    }
    TOP_LEVEL
        .iter()
        .find_map(|(from, to)| name.strip_prefix(from).map(|leaf| format!("{to}{leaf}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_spec_table() {
        let cases = [
            (
                "blocks.3.attn1.to_out.0.weight",
                "blocks.3.self_attn.o.weight",
            ),
            ("blocks.0.norm2.bias", "blocks.0.norm3.bias"),
            ("blocks.12.scale_shift_table", "blocks.12.modulation"),
            (
                "blocks.1.attn2.norm_added_k.weight",
                "blocks.1.cross_attn.norm_k_img.weight",
            ),
            ("blocks.1.ffn.net.0.proj.weight", "blocks.1.ffn.0.weight"),
            ("scale_shift_table", "head.modulation"),
            ("proj_out.bias", "head.head.bias"),
            (
                "condition_embedder.time_proj.weight",
                "time_projection.1.weight",
            ),
            (
                "condition_embedder.image_embedder.ff.net.2.weight",
                "img_emb.proj.3.weight",
            ),
            ("fps_projection.net.0.proj.bias", "fps_projection.0.bias"),
        ];
        for (diffusers, original) in cases {
            assert_eq!(
                Layout::Diffusers.canonical(diffusers).as_deref(),
                Some(original),
                "{diffusers}"
            );
        }
        assert_eq!(
            Layout::Diffusers.canonical("blocks.x.attn1.to_q.weight"),
            None
        );
        assert_eq!(Layout::Diffusers.canonical("rope.freqs"), None);
    }
}
