//! Seeded random Wan VAE checkpoints (original names): the built-in tiny VAE exported by
//! `skyreels-export tiny`, and real-size weights for export benchmarks.

use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use skyreels_contract::vae::VaeConfig;

use crate::error::Result;

/// File name the random VAE is written under (as an original-format model folder names it).
pub const RANDOM_VAE_FILE: &str = "Wan2.1_VAE.safetensors";

/// The built-in tiny VAE: the real topology at base width 8.
pub fn tiny_vae_config() -> VaeConfig {
    VaeConfig {
        base_dim: 8,
        ..VaeConfig::wan21()
    }
}

/// (name, shape, mean, std) of every tensor, in upstream's module order.
fn vae_tensors(config: &VaeConfig) -> Vec<(String, Vec<usize>, f32, f32)> {
    let mut t = Vec::new();
    let conv = |t: &mut Vec<(String, Vec<usize>, f32, f32)>, name: &str, shape: Vec<usize>| {
        let fan_in: usize = shape[1..].iter().product();
        t.push((format!("{name}.bias"), vec![shape[0]], 0.0, 0.05));
        t.push((
            format!("{name}.weight"),
            shape,
            0.0,
            1.0 / (fan_in as f32).sqrt(),
        ));
    };
    let gamma = |t: &mut Vec<(String, Vec<usize>, f32, f32)>, name: &str, shape: Vec<usize>| {
        t.push((name.to_string(), shape, 1.0, 0.2))
    };
    let residual = |t: &mut Vec<_>, p: &str, i: usize, o: usize| {
        gamma(t, &format!("{p}.residual.0.gamma"), vec![i, 1, 1, 1]);
        conv(t, &format!("{p}.residual.2"), vec![o, i, 3, 3, 3]);
        gamma(t, &format!("{p}.residual.3.gamma"), vec![o, 1, 1, 1]);
        conv(t, &format!("{p}.residual.6"), vec![o, o, 3, 3, 3]);
        if i != o {
            conv(t, &format!("{p}.shortcut"), vec![o, i, 1, 1, 1]);
        }
    };
    let middle = |t: &mut Vec<_>, p: &str, c: usize| {
        residual(t, &format!("{p}.middle.0"), c, c);
        gamma(t, &format!("{p}.middle.1.norm.gamma"), vec![c, 1, 1]);
        conv(t, &format!("{p}.middle.1.to_qkv"), vec![3 * c, c, 1, 1]);
        conv(t, &format!("{p}.middle.1.proj"), vec![c, c, 1, 1]);
        residual(t, &format!("{p}.middle.2"), c, c);
    };
    let base = config.base_dim;
    let levels = config.dim_mult.len();
    let z = config.z_dim;
    let encoder: Vec<usize> = std::iter::once(1)
        .chain(config.dim_mult.iter().copied())
        .map(|m| m * base)
        .collect();
    conv(&mut t, "encoder.conv1", vec![base, 3, 3, 3, 3]);
    let mut index = 0;
    for level in 0..levels {
        let (mut i, o) = (encoder[level], encoder[level + 1]);
        for _ in 0..config.num_res_blocks {
            residual(&mut t, &format!("encoder.downsamples.{index}"), i, o);
            i = o;
            index += 1;
        }
        if level + 1 != levels {
            conv(
                &mut t,
                &format!("encoder.downsamples.{index}.resample.1"),
                vec![o, o, 3, 3],
            );
            if config.temporal_downsample[level] {
                conv(
                    &mut t,
                    &format!("encoder.downsamples.{index}.time_conv"),
                    vec![o, o, 3, 1, 1],
                );
            }
            index += 1;
        }
    }
    middle(&mut t, "encoder", encoder[levels]);
    gamma(
        &mut t,
        "encoder.head.0.gamma",
        vec![encoder[levels], 1, 1, 1],
    );
    conv(
        &mut t,
        "encoder.head.2",
        vec![2 * z, encoder[levels], 3, 3, 3],
    );
    conv(&mut t, "conv1", vec![2 * z, 2 * z, 1, 1, 1]);
    conv(&mut t, "conv2", vec![z, z, 1, 1, 1]);
    let last = *config.dim_mult.last().unwrap_or(&1);
    let decoder: Vec<usize> = std::iter::once(last)
        .chain(config.dim_mult.iter().rev().copied())
        .map(|m| m * base)
        .collect();
    conv(&mut t, "decoder.conv1", vec![decoder[0], z, 3, 3, 3]);
    middle(&mut t, "decoder", decoder[0]);
    let mut index = 0;
    for level in 0..levels {
        let (mut i, o) = (decoder[level], decoder[level + 1]);
        if level > 0 {
            i /= 2;
        }
        for _ in 0..=config.num_res_blocks {
            residual(&mut t, &format!("decoder.upsamples.{index}"), i, o);
            i = o;
            index += 1;
        }
        if level + 1 != levels {
            if config.temporal_downsample[levels - 2 - level] {
                conv(
                    &mut t,
                    &format!("decoder.upsamples.{index}.time_conv"),
                    vec![2 * o, o, 3, 1, 1],
                );
            }
            conv(
                &mut t,
                &format!("decoder.upsamples.{index}.resample.1"),
                vec![o / 2, o, 3, 3],
            );
            index += 1;
        }
    }
    gamma(
        &mut t,
        "decoder.head.0.gamma",
        vec![decoder[levels], 1, 1, 1],
    );
    conv(&mut t, "decoder.head.2", vec![3, decoder[levels], 3, 3, 3]);
    t
}

/// Writes `dir/Wan2.1_VAE.safetensors` (original names, float32) with seeded random weights,
/// streaming tensor by tensor. Latent normalisation is the Wan 2.1 one (no `config.json`), so
/// `config.z_dim` must be 16.
pub fn write_random_vae(dir: &Path, config: &VaeConfig, seed: u64) -> Result<()> {
    fs_err::create_dir_all(dir)?;
    let tensors = vae_tensors(config);
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, _, _) in &tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let mut header =
        serde_json::to_vec(&serde_json::Value::Object(header)).map_err(std::io::Error::other)?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out =
        BufWriter::with_capacity(8 << 20, fs_err::File::create(dir.join(RANDOM_VAE_FILE))?);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buffer = Vec::new();
    for (_, shape, mean, std) in &tensors {
        buffer.clear();
        // Uniform on [mean - √3σ, mean + √3σ]: the requested standard deviation.
        let half_width = std * 3f32.sqrt();
        for _ in 0..shape.iter().product::<usize>() {
            let value = mean + half_width * (2.0 * rng.random::<f32>() - 1.0);
            buffer.extend_from_slice(&value.to_le_bytes());
        }
        out.write_all(&buffer)?;
    }
    out.flush()?;
    Ok(())
}
