//! `embed` graph: patch embedding, RoPE tables, time / fps modulation, text and image context.
//! Mirrors `WanModel.forward` up to the first block
//! (<https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/transformer.py>)
//! and diffusers' `SkyReelsV2Transformer3DModel.forward`.

use std::collections::HashMap;

use skyreels_contract::io;
use skyreels_contract::{DitConfig, ModelType};
use skyreels_graph::{DType, Dim, GeluApproximation, Graph, Value};

use super::io::{embed_inputs, embed_outputs};
use super::layers::Layers;
use crate::error::Result;

/// Rotary table length per axis (positions 0..1023), as upstream.
const ROPE_MAX_POSITIONS: usize = 1024;
const ROPE_THETA: f64 = 10000.0;
/// LayerNorm eps of the image projection (torch default).
const IMAGE_NORM_EPS: f64 = 1e-5;

/// `(cos, sin)` tables `[1024, width/2]` for one RoPE axis, computed in float64 and rounded once.
fn rope_tables(width: usize) -> (Vec<f32>, Vec<f32>) {
    let half = width / 2;
    let mut cos = Vec::with_capacity(ROPE_MAX_POSITIONS * half);
    let mut sin = Vec::with_capacity(ROPE_MAX_POSITIONS * half);
    for position in 0..ROPE_MAX_POSITIONS {
        for j in 0..half {
            let frequency = 1.0 / ROPE_THETA.powf((2 * j) as f64 / width as f64);
            let angle = position as f64 * frequency;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// The `i`-th entry of a 1-D int64 shape vector as a scalar.
pub(crate) fn scalar_at(g: &mut Graph, vector: &Value, index: i64) -> Result<Value> {
    let one = g.slice(vector, 0, index, index + 1)?;
    Ok(g.squeeze(&one, &[0])?)
}

fn rope(g: &mut Graph, config: &DitConfig, grid: &Value) -> Result<(Value, Value)> {
    let widths = config.rope_split();
    let zero = g.scalar(0.0, DType::I64)?;
    let one = g.scalar(1.0, DType::I64)?;
    let mut cos_parts = Vec::new();
    let mut sin_parts = Vec::new();
    for (axis, width) in widths.iter().enumerate() {
        let (cos, sin) = rope_tables(*width);
        let dims = [ROPE_MAX_POSITIONS as i64, (*width / 2) as i64];
        let count = scalar_at(g, grid, axis as i64)?;
        let positions = g.range(&zero, &count, &one, Dim::Unknown)?;
        let mut view = [1i64, 1, 1, (*width / 2) as i64];
        view[axis] = -1;
        let half = g.const_i64(&[(*width / 2) as i64])?;
        let target = g.concat(&[grid, &half], 0)?;
        for (table, parts) in [(cos, &mut cos_parts), (sin, &mut sin_parts)] {
            let table = g.const_f32(&table, &dims)?;
            let rows = g.gather(&table, &positions)?;
            let rows = g.reshape(&rows, &view)?;
            let full = vec![
                Dim::Unknown,
                Dim::Unknown,
                Dim::Unknown,
                Dim::Known((*width / 2) as i64),
            ];
            parts.push(g.expand(&rows, &target, full)?);
        }
    }
    let half_head = (config.head_dim() / 2) as i64;
    let cos = g.concat(&cos_parts.iter().collect::<Vec<_>>(), -1)?;
    let sin = g.concat(&sin_parts.iter().collect::<Vec<_>>(), -1)?;
    Ok((
        g.reshape(&cos, &[-1, half_head])?,
        g.reshape(&sin, &[-1, half_head])?,
    ))
}

/// Sinusoidal timestep features `[B, F, freq_dim]`: `[cos | sin]` of `t·10000^(-k/half)`, computed
/// in float64 as diffusers' `get_1d_sincos_pos_embed_from_grid` does, then rounded to float32.
fn timestep_features(g: &mut Graph, timesteps: &Value, freq_dim: usize) -> Result<Value> {
    let half = freq_dim / 2;
    let omega: Vec<f64> = (0..half)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / half as f64))
        .collect();
    let omega = g.const_f64(&omega, &[half as i64])?;
    let t = g.cast(timesteps, DType::F64)?;
    let t = g.unsqueeze(&t, &[-1])?;
    let angles = g.mul(&t, &omega)?;
    let cos = g.cos(&angles)?;
    let sin = g.sin(&angles)?;
    let features = g.concat(&[&cos, &sin], -1)?;
    Ok(g.cast(&features, DType::F32)?)
}

/// Builds the `embed` graph.
pub(super) fn build(layers: &mut Layers<'_, '_>, config: &DitConfig) -> Result<()> {
    let d = config.dim;
    let mut inputs = HashMap::new();
    for port in embed_inputs(config) {
        let value = layers.graph.input(port.name, port.dtype, port.shape)?;
        inputs.insert(port.name, value);
    }
    let latents = &inputs[io::LATENTS];

    let compute = layers.compute;
    let weight = layers.weights.tensor(
        &mut layers.graph,
        "patch_embedding.weight",
        &[d, config.in_dim, 1, 2, 2],
        compute,
    )?;
    let bias = layers
        .weights
        .tensor(&mut layers.graph, "patch_embedding.bias", &[d], compute)?;
    let g = &mut layers.graph;
    let x = g.cast(latents, compute)?;
    let patches = g.conv(
        &x,
        &weight,
        Some(&bias),
        &[1, 2, 2],
        &[0, 0, 0, 0, 0, 0],
        &[1, 1, 1],
        1,
    )?;
    let patches = g.cast(&patches, DType::F32)?;
    let grid = g.shape_of(&patches, 2, 5)?;
    let tokens = g.reshape(&patches, &[0, d as i64, -1])?;
    let tokens = g.transpose(&tokens, &[0, 2, 1])?;
    let (rope_cos, rope_sin) = rope(g, config, &grid)?;

    let features = timestep_features(g, &inputs[io::TIMESTEPS], config.freq_dim)?;
    let lead = layers.lead_of(&features)?;
    let e = layers.linear_in(
        DType::F32,
        &features,
        "time_embedding.0",
        config.freq_dim,
        d,
        &lead,
    )?;
    let e = layers.graph.silu(&e)?;
    let e = layers.linear_in(DType::F32, &e, "time_embedding.2", d, d, &lead)?;
    let e_act = layers.graph.silu(&e)?;
    let e0 = layers.linear_in(DType::F32, &e_act, "time_projection.1", d, 6 * d, &lead)?;
    let mut e0 = layers.graph.reshape(&e0, &[0, 0, 6, d as i64])?;

    if config.inject_sample_info {
        let table = layers.weights.tensor(
            &mut layers.graph,
            "fps_embedding.weight",
            &[2, d],
            DType::F32,
        )?;
        let fps_features = layers.graph.gather(&table, &inputs[io::FPS])?;
        let fps_lead = layers.lead_of(&fps_features)?;
        let p = layers.linear_in(
            DType::F32,
            &fps_features,
            "fps_projection.0",
            d,
            d,
            &fps_lead,
        )?;
        let p = layers.graph.silu(&p)?;
        let p = layers.linear_in(DType::F32, &p, "fps_projection.2", d, 6 * d, &fps_lead)?;
        let p = layers.graph.reshape(&p, &[0, 1, 6, d as i64])?;
        e0 = layers.graph.add(&e0, &p)?;
    }

    let context = &inputs[io::CONTEXT];
    let context_lead = layers.lead_of(context)?;
    let text = layers.linear(
        context,
        "text_embedding.0",
        config.text_dim,
        d,
        &context_lead,
    )?;
    let text = layers.graph.gelu(&text, GeluApproximation::Tanh)?;
    let mut context_tokens = layers.linear(&text, "text_embedding.2", d, d, &context_lead)?;

    if let (ModelType::I2v, Some(image_dim)) = (config.model_type, config.image_dim) {
        let image = &inputs[io::IMAGE_CONTEXT];
        let image_lead = layers.lead_of(image)?;
        let h = layers.layer_norm_affine(image, "img_emb.proj.0", image_dim, IMAGE_NORM_EPS)?;
        let h = layers.linear(&h, "img_emb.proj.1", image_dim, image_dim, &image_lead)?;
        let h = layers.graph.gelu(&h, GeluApproximation::None)?;
        let h = layers.linear(&h, "img_emb.proj.3", image_dim, d, &image_lead)?;
        let h = layers.layer_norm_affine(&h, "img_emb.proj.4", d, IMAGE_NORM_EPS)?;
        context_tokens = layers.graph.concat(&[&h, &context_tokens], 1)?;
    }

    let values = [&tokens, &e, &e0, &context_tokens, &rope_cos, &rope_sin];
    for (port, value) in embed_outputs(config).into_iter().zip(values) {
        layers
            .graph
            .output(port.name, value, port.dtype, port.shape)?;
    }
    Ok(())
}
