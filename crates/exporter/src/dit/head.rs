//! `head` graph: final modulated LayerNorm, projection to 2×2 patches, unpatchify to latents.

use std::collections::HashMap;

use skyreels_contract::DitConfig;
use skyreels_contract::io;
use skyreels_graph::{DType, Dim};

use super::io::{head_inputs, head_outputs};
use super::layers::Layers;
use crate::error::Result;

/// Builds the `head` graph.
pub(super) fn build(layers: &mut Layers<'_, '_>, config: &DitConfig) -> Result<()> {
    let d = config.dim;
    let out = config.out_dim as i64;
    let mut inputs = HashMap::new();
    for port in head_inputs(config) {
        let value = layers.graph.input(port.name, port.dtype, port.shape)?;
        inputs.insert(port.name, value);
    }
    let table = layers.weights.initializer(
        &mut layers.graph,
        "head.modulation",
        &[1, 2, d],
        &[1, 1, 2, d as i64],
        DType::F32,
    )?;
    let g = &mut layers.graph;
    let tokens = &inputs[io::BLOCK_TOKENS];
    let time = &inputs[io::TIME_EMBEDDING];
    let latent_shape = g.shape_of(&inputs[io::LATENTS], 0, 5)?;
    let frames = g.shape_of(time, 1, 2)?;
    let zero = g.const_i64(&[0])?;
    let rest = g.const_i64(&[-1, d as i64])?;
    let target = g.concat(&[&zero, &frames, &rest], 0)?;
    let x = g.reshape_to(
        tokens,
        &target,
        vec![
            tokens.shape[0].clone(),
            time.shape[1].clone(),
            Dim::Unknown,
            Dim::Known(d as i64),
        ],
    )?;
    let e = g.unsqueeze(time, &[2])?;
    let m = g.add(&table, &e)?;
    let m = g.split(&m, 2, &[1, 1])?;
    let (shift, scale) = (&m[0], &m[1]);
    let h = layers.layer_norm_plain(&x, d, config.eps)?;
    let g = &mut layers.graph;
    let one = g.scalar(1.0, DType::F32)?;
    let factor = g.add(scale, &one)?;
    let h = g.mul(&h, &factor)?;
    let h = g.add(&h, shift)?;
    let lead = layers.lead_of(&h)?;
    let y = layers.linear(&h, "head.head", d, 4 * config.out_dim, &lead)?;

    let g = &mut layers.graph;
    let batch = g.slice(&latent_shape, 0, 0, 1)?;
    let height = g.slice(&latent_shape, 0, 3, 4)?;
    let width = g.slice(&latent_shape, 0, 4, 5)?;
    let two = g.const_i64(&[2])?;
    let half_height = g.div(&height, &two)?;
    let half_width = g.div(&width, &two)?;
    let patch = g.const_i64(&[1, 2, 2, out])?;
    let target = g.concat(&[&batch, &frames, &half_height, &half_width, &patch], 0)?;
    let mut patch_shape = vec![Dim::Unknown; 4];
    patch_shape.extend([1, 2, 2, out].map(Dim::Known));
    let y = g.reshape_to(&y, &target, patch_shape)?;
    // (b, f, h, w, pt, ph, pw, c) -> (b, c, f, pt, h, ph, w, pw)
    let y = g.transpose(&y, &[0, 7, 1, 4, 2, 5, 3, 6])?;
    let channels = g.const_i64(&[out])?;
    let target = g.concat(&[&batch, &channels, &frames, &height, &width], 0)?;
    let velocity = g.reshape_to(
        &y,
        &target,
        vec![
            Dim::Unknown,
            Dim::Known(out),
            Dim::Unknown,
            Dim::Unknown,
            Dim::Unknown,
        ],
    )?;
    for port in head_outputs(config) {
        g.output(port.name, &velocity, port.dtype, port.shape)?;
    }
    Ok(())
}
