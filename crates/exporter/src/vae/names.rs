//! VAE checkpoint key layouts. Canonical names are the original Wan layout
//! (`encoder.downsamples.0.residual.0.gamma`); diffusers `AutoencoderKLWan` names
//! (`encoder.down_blocks.0.norm1.gamma`) are mapped onto them (SPEC.md §7.2, the inverse of
//! diffusers' `convert_wan_vae_to_diffusers`, generalised to any `num_res_blocks`).

/// How a checkpoint names its VAE weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeLayout {
    /// Original Wan names (`Wan2.1_VAE.pth` state dict).
    Original,
    /// diffusers `AutoencoderKLWan` names; decoder levels hold `resnets_per_level` residual blocks.
    Diffusers {
        /// Residual blocks per decoder level (`num_res_blocks + 1`).
        resnets_per_level: usize,
    },
}

impl VaeLayout {
    /// Guesses the layout from the stored names.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> VaeLayout {
        let mut diffusers = false;
        let mut resnets_per_level = 0;
        for name in names {
            if name.starts_with("quant_conv.")
                || name.starts_with("encoder.down_blocks.")
                || name.starts_with("decoder.up_blocks.")
            {
                diffusers = true;
            }
            if let Some(rest) = name.strip_prefix("decoder.up_blocks.0.resnets.")
                && let Some(index) = rest.split('.').next().and_then(|i| i.parse::<usize>().ok())
            {
                resnets_per_level = resnets_per_level.max(index + 1);
            }
        }
        if diffusers {
            VaeLayout::Diffusers { resnets_per_level }
        } else {
            VaeLayout::Original
        }
    }

    /// Maps a stored name to its canonical (original-layout) name; `None` when unknown.
    pub fn canonical(self, stored: &str) -> Option<String> {
        match self {
            VaeLayout::Original => Some(stored.to_string()),
            VaeLayout::Diffusers { resnets_per_level } => {
                diffusers_to_original(stored, resnets_per_level)
            }
        }
    }
}

const RESIDUAL: &[(&str, &str)] = &[
    ("norm1.", "residual.0."),
    ("conv1.", "residual.2."),
    ("norm2.", "residual.3."),
    ("conv2.", "residual.6."),
    ("conv_shortcut.", "shortcut."),
];

fn residual_leaf(leaf: &str) -> Option<String> {
    RESIDUAL
        .iter()
        .find_map(|(from, to)| leaf.strip_prefix(from).map(|rest| format!("{to}{rest}")))
}

fn split_index(rest: &str) -> Option<(usize, &str)> {
    let (index, leaf) = rest.split_once('.')?;
    Some((index.parse().ok()?, leaf))
}

fn diffusers_to_original(name: &str, resnets_per_level: usize) -> Option<String> {
    for (from, to) in [("quant_conv.", "conv1."), ("post_quant_conv.", "conv2.")] {
        if let Some(leaf) = name.strip_prefix(from) {
            return Some(format!("{to}{leaf}"));
        }
    }
    let (part, rest) = name.split_once('.')?;
    if part != "encoder" && part != "decoder" {
        return None;
    }
    let mapped = if let Some(leaf) = rest.strip_prefix("conv_in.") {
        format!("conv1.{leaf}")
    } else if let Some(leaf) = rest.strip_prefix("norm_out.") {
        format!("head.0.{leaf}")
    } else if let Some(leaf) = rest.strip_prefix("conv_out.") {
        format!("head.2.{leaf}")
    } else if let Some(rest) = rest.strip_prefix("mid_block.resnets.") {
        let (index, leaf) = split_index(rest)?;
        format!("middle.{}.{}", 2 * index, residual_leaf(leaf)?)
    } else if let Some(rest) = rest.strip_prefix("mid_block.attentions.") {
        let (index, leaf) = split_index(rest)?;
        format!("middle.{}.{leaf}", 2 * index + 1)
    } else if let (Some(rest), "encoder") = (rest.strip_prefix("down_blocks."), part) {
        let (index, leaf) = split_index(rest)?;
        let leaf = residual_leaf(leaf).unwrap_or_else(|| leaf.to_string());
        format!("downsamples.{index}.{leaf}")
    } else if let (Some(rest), "decoder") = (rest.strip_prefix("up_blocks."), part) {
        let (level, rest) = split_index(rest)?;
        let start = level * (resnets_per_level + 1);
        if let Some(rest) = rest.strip_prefix("resnets.") {
            let (index, leaf) = split_index(rest)?;
            if index >= resnets_per_level {
                return None;
            }
            format!("upsamples.{}.{}", start + index, residual_leaf(leaf)?)
        } else {
            let leaf = rest.strip_prefix("upsamplers.0.")?;
            format!("upsamples.{}.{leaf}", start + resnets_per_level)
        }
    } else {
        return None;
    };
    Some(format!("{part}.{mapped}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_spec_table() {
        let layout = VaeLayout::Diffusers {
            resnets_per_level: 3,
        };
        let cases = [
            ("quant_conv.weight", "conv1.weight"),
            ("post_quant_conv.bias", "conv2.bias"),
            ("encoder.conv_in.weight", "encoder.conv1.weight"),
            (
                "encoder.down_blocks.3.conv_shortcut.weight",
                "encoder.downsamples.3.shortcut.weight",
            ),
            (
                "encoder.down_blocks.0.norm1.gamma",
                "encoder.downsamples.0.residual.0.gamma",
            ),
            (
                "encoder.down_blocks.1.conv2.bias",
                "encoder.downsamples.1.residual.6.bias",
            ),
            (
                "encoder.down_blocks.5.time_conv.weight",
                "encoder.downsamples.5.time_conv.weight",
            ),
            (
                "encoder.down_blocks.2.resample.1.weight",
                "encoder.downsamples.2.resample.1.weight",
            ),
            (
                "encoder.mid_block.resnets.1.norm2.gamma",
                "encoder.middle.2.residual.3.gamma",
            ),
            (
                "encoder.mid_block.attentions.0.to_qkv.weight",
                "encoder.middle.1.to_qkv.weight",
            ),
            ("encoder.norm_out.gamma", "encoder.head.0.gamma"),
            ("decoder.conv_out.weight", "decoder.head.2.weight"),
            (
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                "decoder.upsamples.2.residual.2.weight",
            ),
            (
                "decoder.up_blocks.0.upsamplers.0.time_conv.weight",
                "decoder.upsamples.3.time_conv.weight",
            ),
            (
                "decoder.up_blocks.1.resnets.0.conv_shortcut.bias",
                "decoder.upsamples.4.shortcut.bias",
            ),
            (
                "decoder.up_blocks.2.upsamplers.0.resample.1.weight",
                "decoder.upsamples.11.resample.1.weight",
            ),
            (
                "decoder.up_blocks.3.resnets.2.norm2.gamma",
                "decoder.upsamples.14.residual.3.gamma",
            ),
        ];
        for (diffusers, original) in cases {
            assert_eq!(
                layout.canonical(diffusers).as_deref(),
                Some(original),
                "{diffusers}"
            );
        }
        assert_eq!(
            layout.canonical("decoder.up_blocks.0.resnets.3.conv1.weight"),
            None
        );
        assert_eq!(
            layout.canonical("encoder.mid_block.resnets.0.weird.weight"),
            None
        );
        assert_eq!(layout.canonical("something.else"), None);
    }

    #[test]
    fn detects_layouts() {
        let diffusers = [
            "quant_conv.weight",
            "decoder.up_blocks.0.resnets.1.conv1.weight",
            "decoder.up_blocks.0.resnets.0.norm1.gamma",
        ];
        assert_eq!(
            VaeLayout::detect(diffusers),
            VaeLayout::Diffusers {
                resnets_per_level: 2
            }
        );
        assert_eq!(
            VaeLayout::detect(["conv1.weight", "decoder.upsamples.0.residual.0.gamma"]),
            VaeLayout::Original
        );
    }
}
