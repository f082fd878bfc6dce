//! VAE architecture from a checkpoint: sizes and topology come from the stored tensors
//! (original checkpoints carry no config); a diffusers `config.json`, when present, must agree
//! and supplies the latent normalisation (otherwise the Wan 2.1 constants are used).

use std::path::Path;

use skyreels_contract::vae::{VaeConfig, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD};

use crate::error::{ExportError, Result};
use crate::weights::WeightStore;

/// What one entry of `encoder.downsamples` is.
enum Entry {
    Residual { out: usize },
    Resample { temporal: bool },
}

fn float_list(json: &serde_json::Value, key: &str) -> Option<Vec<f32>> {
    json.get(key)?
        .as_array()?
        .iter()
        .map(|v| v.as_f64().map(|f| f as f32))
        .collect()
}

/// Derives the architecture from the canonical weight names and shapes, checked against `json`.
pub fn vae_config(
    weights: &WeightStore<'_>,
    json: &serde_json::Value,
    source: &Path,
) -> Result<VaeConfig> {
    let bad = |reason: String| ExportError::BadConfig {
        path: source.to_path_buf(),
        reason,
    };
    let shape = |name: &str| {
        weights
            .shape(name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| ExportError::MissingWeight {
                name: name.to_string(),
                path: source.to_path_buf(),
            })
    };
    let base_dim = shape("encoder.conv1.weight")?[0];
    let z_dim = shape("conv2.weight")?[0];

    let mut entries = Vec::new();
    for index in 0.. {
        let prefix = format!("encoder.downsamples.{index}");
        if weights.contains(&format!("{prefix}.residual.2.weight")) {
            entries.push(Entry::Residual {
                out: shape(&format!("{prefix}.residual.2.weight"))?[0],
            });
        } else if weights.contains(&format!("{prefix}.resample.1.weight")) {
            entries.push(Entry::Resample {
                temporal: weights.contains(&format!("{prefix}.time_conv.weight")),
            });
        } else if weights.contains(&format!("{prefix}.to_qkv.weight")) {
            return Err(bad(format!(
                "{prefix} is an attention block; VAEs with attn_scales are not supported (Wan 2.1 has none)"
            )));
        } else {
            break;
        }
    }
    let mut dim_mult = Vec::new();
    let mut temporal_downsample = Vec::new();
    let mut level_blocks = vec![0usize];
    for entry in &entries {
        match entry {
            Entry::Residual { out } => {
                let count = level_blocks.last_mut().expect("one level at least");
                if *count == 0 {
                    if out % base_dim != 0 {
                        return Err(bad(format!(
                            "encoder level width {out} is not a multiple of base_dim {base_dim}"
                        )));
                    }
                    dim_mult.push(out / base_dim);
                }
                *count += 1;
            }
            Entry::Resample { temporal } => {
                temporal_downsample.push(*temporal);
                level_blocks.push(0);
            }
        }
    }
    let num_res_blocks = level_blocks[0];
    if num_res_blocks == 0 || level_blocks.iter().any(|&n| n != num_res_blocks) {
        return Err(bad(format!(
            "encoder levels hold {level_blocks:?} residual blocks; expected the same non-zero count in each"
        )));
    }

    let (latents_mean, latents_std) = match (
        float_list(json, "latents_mean"),
        float_list(json, "latents_std"),
    ) {
        (Some(mean), Some(std)) => (mean, std),
        (None, None) if z_dim == WAN21_LATENTS_MEAN.len() => {
            (WAN21_LATENTS_MEAN.to_vec(), WAN21_LATENTS_STD.to_vec())
        }
        _ => {
            return Err(bad(format!(
                "no latents_mean/latents_std for z_dim {z_dim}\n  fix: put them in config.json next to the weights"
            )));
        }
    };
    let config = VaeConfig {
        base_dim,
        z_dim,
        dim_mult,
        num_res_blocks,
        temporal_downsample,
        latents_mean,
        latents_std,
    };
    config.validate().map_err(&bad)?;
    check_json(&config, json).map_err(bad)?;
    Ok(config)
}

/// Fails when a diffusers `config.json` describes another architecture than the weights.
fn check_json(config: &VaeConfig, json: &serde_json::Value) -> Result<(), String> {
    let usize_key = |key: &str| json.get(key).and_then(|v| v.as_u64()).map(|v| v as usize);
    for (key, actual) in [
        ("base_dim", config.base_dim),
        ("z_dim", config.z_dim),
        ("num_res_blocks", config.num_res_blocks),
    ] {
        if let Some(declared) = usize_key(key)
            && declared != actual
        {
            return Err(format!(
                "config.json says {key} = {declared} but the weights have {actual}"
            ));
        }
    }
    if let Some(declared) = json.get("dim_mult").and_then(|v| v.as_array()) {
        let declared: Vec<usize> = declared
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as usize))
            .collect();
        if declared != config.dim_mult {
            return Err(format!(
                "config.json says dim_mult = {declared:?} but the weights have {:?}",
                config.dim_mult
            ));
        }
    }
    if let Some(declared) = json.get("temperal_downsample").and_then(|v| v.as_array()) {
        let declared: Vec<bool> = declared.iter().filter_map(|v| v.as_bool()).collect();
        if declared != config.temporal_downsample {
            return Err(format!(
                "config.json says temperal_downsample = {declared:?} but the weights have {:?}",
                config.temporal_downsample
            ));
        }
    }
    if json
        .get("attn_scales")
        .and_then(|v| v.as_array())
        .is_some_and(|a| !a.is_empty())
    {
        return Err("attn_scales is not empty; only Wan 2.1 VAEs (no attention outside the middle blocks) are supported".into());
    }
    for key in ["is_residual"] {
        if json.get(key).and_then(|v| v.as_bool()) == Some(true) {
            return Err(format!(
                "{key} = true is a Wan 2.2 VAE; only Wan 2.1 VAEs are supported"
            ));
        }
    }
    for key in ["patch_size", "decoder_base_dim"] {
        if json.get(key).is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "{key} is set; only Wan 2.1 VAEs (no {key}) are supported"
            ));
        }
    }
    for (key, expected) in [("in_channels", 3), ("out_channels", 3)] {
        if let Some(declared) = usize_key(key)
            && declared != expected
        {
            return Err(format!(
                "config.json says {key} = {declared}; only RGB VAEs ({expected}) are supported"
            ));
        }
    }
    Ok(())
}
