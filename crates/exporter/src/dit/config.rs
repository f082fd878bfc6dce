//! DiT architecture from a checkpoint: sizes come from tensor shapes (real `config.json` files
//! omit fields), head count and eps from `config.json` in either layout; conflicts are errors.

use std::path::Path;

use skyreels_contract::{DitConfig, ModelType};

use crate::error::{ExportError, Result};
use crate::weights::WeightStore;

fn json_usize(json: &serde_json::Value, keys: &[&str]) -> Option<usize> {
    keys.iter()
        .find_map(|k| json.get(*k).and_then(|v| v.as_u64()).map(|v| v as usize))
}

/// Reads `dir/config.json` if present (either layout), else an empty object.
pub fn read_config_json(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let text = skyreels_contract::files::read_bounded_to_string(
        &path,
        "model config",
        skyreels_contract::files::limit::JSON_CONFIG,
    )?;
    serde_json::from_str(&text).map_err(|e| ExportError::BadConfig {
        path,
        reason: format!("not valid JSON: {e}"),
    })
}

/// Derives the architecture from the stored shapes and the config JSON.
pub fn dit_config(
    weights: &WeightStore<'_>,
    json: &serde_json::Value,
    config_path: &Path,
) -> Result<DitConfig> {
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
    let matrix = |name: &str| {
        let dims = shape(name)?;
        match dims[..] {
            [rows, columns] => Ok((rows, columns)),
            _ => Err(ExportError::WrongRank {
                name: name.to_string(),
                actual: dims,
                expected: "[out, in]",
            }),
        }
    };
    let patch = shape("patch_embedding.weight")?;
    if patch.len() != 5 || patch[2..] != [1, 2, 2] {
        return Err(bad(format!(
            "patch_embedding.weight has shape {patch:?}; expected [dim, in_dim, 1, 2, 2]"
        )));
    }
    let (dim, in_dim) = (patch[0], patch[1]);
    let out_dim = matrix("head.head.weight")?.0 / 4;
    let ffn_dim = matrix("blocks.0.ffn.0.weight")?.0;
    let freq_dim = matrix("time_embedding.0.weight")?.1;
    let text_dim = matrix("text_embedding.0.weight")?.1;
    let mut num_layers = 0;
    while weights.contains(&format!("blocks.{num_layers}.modulation")) {
        num_layers += 1;
    }
    let image_dim = match weights.contains("img_emb.proj.1.weight") {
        true => Some(matrix("img_emb.proj.1.weight")?.1),
        false => None,
    };
    let model_type = if image_dim.is_some() {
        ModelType::I2v
    } else {
        ModelType::T2v
    };
    let inject_sample_info = weights.contains("fps_embedding.weight");

    let declared_heads = json_usize(json, &["num_heads", "num_attention_heads"]);
    if declared_heads.is_none() && (dim == 0 || !dim.is_multiple_of(128)) {
        let found = if config_path.is_file() {
            "has no `num_heads`"
        } else {
            "is missing"
        };
        return Err(bad(format!(
            "{} {found}, and the head count cannot be told from the weights: dim {dim} is not a multiple of 128, the head width of every released SkyReels-V2 model\n  fix: put the model's config.json (with `num_heads`) beside its weights",
            config_path.display()
        )));
    }
    let num_heads = declared_heads.unwrap_or(dim / 128);
    let eps = json.get("eps").and_then(|v| v.as_f64()).unwrap_or(1e-6);
    let text_len = json_usize(json, &["text_len"]).unwrap_or(512);

    let checks: [(&[&str], usize); 6] = [
        (&["dim"], dim),
        (&["in_dim", "in_channels"], in_dim),
        (&["out_dim", "out_channels"], out_dim),
        (&["ffn_dim"], ffn_dim),
        (&["num_layers"], num_layers),
        (&["text_dim"], text_dim),
    ];
    for (keys, actual) in checks {
        if let Some(declared) = json_usize(json, keys)
            && declared != actual
        {
            return Err(bad(format!(
                "{} = {declared} but the weights say {actual}",
                keys[0]
            )));
        }
    }
    if let (Some(heads), Some(head_dim)) = (
        json_usize(json, &["num_attention_heads"]),
        json_usize(json, &["attention_head_dim"]),
    ) && heads * head_dim != dim
    {
        return Err(bad(format!(
            "num_attention_heads {heads} x attention_head_dim {head_dim} != dim {dim}"
        )));
    }
    if let Some(declared) = json.get("model_type").and_then(|v| v.as_str()) {
        let expected = match model_type {
            ModelType::I2v => "i2v",
            ModelType::T2v => "t2v",
        };
        if declared != expected {
            return Err(bad(format!(
                "model_type is `{declared}` but the weights are {expected} (image embedder present: {})",
                image_dim.is_some()
            )));
        }
    }
    if let Some(declared) = json.get("inject_sample_info").and_then(|v| v.as_bool())
        && declared != inject_sample_info
    {
        return Err(bad(format!(
            "inject_sample_info = {declared} but fps_embedding.weight is {}",
            if inject_sample_info {
                "present"
            } else {
                "absent"
            }
        )));
    }
    let config = DitConfig {
        model_type,
        in_dim,
        out_dim,
        dim,
        ffn_dim,
        num_heads,
        num_layers,
        freq_dim,
        text_dim,
        text_len,
        image_dim,
        image_len: image_dim.map(|_| 257),
        eps,
        inject_sample_info,
    };
    config.validate().map_err(bad)?;
    Ok(config)
}
