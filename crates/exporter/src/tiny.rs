//! Seeded random checkpoints of the real architecture, in the original layout: the built-in tiny
//! model (`skyreels-export tiny`) and real-size weights for export benchmarks.

use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use skyreels_contract::{DitConfig, ModelType};

use crate::error::Result;

/// The built-in tiny diffusion-forcing DiT: 2 heads × 16, 2 blocks, with the fps embedding.
pub fn tiny_dit_config() -> DitConfig {
    DitConfig {
        model_type: ModelType::T2v,
        in_dim: 16,
        out_dim: 16,
        dim: 32,
        ffn_dim: 64,
        num_heads: 2,
        num_layers: 2,
        freq_dim: 256,
        text_dim: 32,
        text_len: 512,
        image_dim: None,
        image_len: None,
        eps: 1e-6,
        inject_sample_info: true,
    }
}

/// The SkyReels-V2 DF-1.3B architecture (for benchmarks with random weights).
pub fn dit_1_3b_config() -> DitConfig {
    DitConfig {
        dim: 1536,
        ffn_dim: 8960,
        num_heads: 12,
        num_layers: 30,
        text_dim: 4096,
        ..tiny_dit_config()
    }
}

/// The SkyReels-V2 DF/T2V-14B architecture (no fps embedding).
pub fn dit_14b_config() -> DitConfig {
    DitConfig {
        dim: 5120,
        ffn_dim: 13824,
        num_heads: 40,
        num_layers: 40,
        text_dim: 4096,
        inject_sample_info: false,
        ..tiny_dit_config()
    }
}

/// How a tensor is initialised.
#[derive(Clone, Copy)]
enum Init {
    /// Uniform with the given standard deviation around `mean`.
    Random { mean: f32, std: f32 },
}

/// Every DiT tensor (canonical names) with its shape and initialisation.
fn dit_tensors(config: &DitConfig) -> Vec<(String, Vec<usize>, Init)> {
    let d = config.dim;
    let linear_std = |fan_in: usize| Init::Random {
        mean: 0.0,
        std: 1.0 / (fan_in as f32).sqrt(),
    };
    let bias = Init::Random {
        mean: 0.0,
        std: 0.02,
    };
    let norm = Init::Random {
        mean: 1.0,
        std: 0.1,
    };
    let table = Init::Random {
        mean: 0.0,
        std: 1.0 / (d as f32).sqrt(),
    };
    let mut t: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let linear = |t: &mut Vec<_>, name: &str, out: usize, inp: usize| {
        t.push((format!("{name}.weight"), vec![out, inp], linear_std(inp)));
        t.push((format!("{name}.bias"), vec![out], bias));
    };
    t.push((
        "patch_embedding.weight".into(),
        vec![d, config.in_dim, 1, 2, 2],
        linear_std(config.in_dim * 4),
    ));
    t.push(("patch_embedding.bias".into(), vec![d], bias));
    linear(&mut t, "text_embedding.0", d, config.text_dim);
    linear(&mut t, "text_embedding.2", d, d);
    linear(&mut t, "time_embedding.0", d, config.freq_dim);
    linear(&mut t, "time_embedding.2", d, d);
    linear(&mut t, "time_projection.1", 6 * d, d);
    if config.inject_sample_info {
        t.push((
            "fps_embedding.weight".into(),
            vec![2, d],
            Init::Random {
                mean: 0.0,
                std: 1.0,
            },
        ));
        linear(&mut t, "fps_projection.0", d, d);
        linear(&mut t, "fps_projection.2", 6 * d, d);
    }
    for i in 0..config.num_layers {
        let p = format!("blocks.{i}");
        t.push((format!("{p}.modulation"), vec![1, 6, d], table));
        for attention in ["self_attn", "cross_attn"] {
            for proj in ["q", "k", "v", "o"] {
                linear(&mut t, &format!("{p}.{attention}.{proj}"), d, d);
            }
            t.push((format!("{p}.{attention}.norm_q.weight"), vec![d], norm));
            t.push((format!("{p}.{attention}.norm_k.weight"), vec![d], norm));
        }
        if config.model_type == ModelType::I2v {
            linear(&mut t, &format!("{p}.cross_attn.k_img"), d, d);
            linear(&mut t, &format!("{p}.cross_attn.v_img"), d, d);
            t.push((format!("{p}.cross_attn.norm_k_img.weight"), vec![d], norm));
        }
        t.push((format!("{p}.norm3.weight"), vec![d], norm));
        t.push((format!("{p}.norm3.bias"), vec![d], bias));
        linear(&mut t, &format!("{p}.ffn.0"), config.ffn_dim, d);
        linear(&mut t, &format!("{p}.ffn.2"), d, config.ffn_dim);
    }
    t.push(("head.modulation".into(), vec![1, 2, d], table));
    linear(&mut t, "head.head", 4 * config.out_dim, d);
    if let Some(image_dim) = config.image_dim {
        t.push(("img_emb.proj.0.weight".into(), vec![image_dim], norm));
        t.push(("img_emb.proj.0.bias".into(), vec![image_dim], bias));
        linear(&mut t, "img_emb.proj.1", image_dim, image_dim);
        linear(&mut t, "img_emb.proj.3", d, image_dim);
        t.push(("img_emb.proj.4.weight".into(), vec![d], norm));
        t.push(("img_emb.proj.4.bias".into(), vec![d], bias));
    }
    t
}

/// Storage dtype of a generated checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    /// float32.
    F32,
    /// bfloat16.
    BF16,
}

/// Writes `dir/model.safetensors` + `dir/config.json` (original layout) with seeded random weights,
/// streaming tensor by tensor so real-size models need no full in-memory copy.
pub fn write_random_dit(
    dir: &Path,
    config: &DitConfig,
    storage: StorageDtype,
    seed: u64,
) -> Result<()> {
    fs_err::create_dir_all(dir)?;
    let tensors = dit_tensors(config);
    let element = match storage {
        StorageDtype::F32 => 4,
        StorageDtype::BF16 => 2,
    };
    let dtype_name = match storage {
        StorageDtype::F32 => "F32",
        StorageDtype::BF16 => "BF16",
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, _) in &tensors {
        let bytes = shape.iter().product::<usize>() * element;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype_name, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header =
        serde_json::to_vec(&serde_json::Value::Object(header)).map_err(std::io::Error::other)?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let path = dir.join("model.safetensors");
    let mut out = BufWriter::with_capacity(8 << 20, fs_err::File::create(&path)?);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buffer = Vec::new();
    for (_, shape, init) in &tensors {
        let Init::Random { mean, std } = *init;
        let count = shape.iter().product::<usize>();
        buffer.clear();
        // Uniform on [-√3σ, √3σ]: the requested std, and fast enough for billions of values.
        let half_width = std * 3f32.sqrt();
        for _ in 0..count {
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
    let model_type = match config.model_type {
        ModelType::T2v => "t2v",
        ModelType::I2v => "i2v",
    };
    let json = serde_json::json!({
        "model_type": model_type,
        "dim": config.dim,
        "ffn_dim": config.ffn_dim,
        "freq_dim": config.freq_dim,
        "in_dim": config.in_dim,
        "out_dim": config.out_dim,
        "num_heads": config.num_heads,
        "num_layers": config.num_layers,
        "text_len": config.text_len,
        "text_dim": config.text_dim,
        "eps": config.eps,
        "inject_sample_info": config.inject_sample_info,
    });
    fs_err::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?,
    )?;
    Ok(())
}
