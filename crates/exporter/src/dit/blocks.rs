//! `blocks` graph: the transformer blocks (`WanAttentionBlock`), optionally with block-causal
//! self-attention over frame blocks for asynchronous diffusion forcing.

use std::collections::HashMap;

use skyreels_contract::io;
use skyreels_contract::{DitConfig, ModelType};
use skyreels_graph::{DType, Dim, GeluApproximation, Graph, Value};

use super::embed::scalar_at;
use super::io::{blocks_inputs, blocks_outputs};
use super::layers::{Layers, Lead};
use crate::error::Result;
use skyreels_contract::Attention;

struct Shared {
    /// Token positions `[B, L]` for the fused rotary op (contrib-MHA exports).
    position_ids: Option<Value>,
    /// RoPE tables `[L, head_dim/2]` as given (fused rotary op).
    rope_table: (Value, Value),
    /// `[B, F, HW]` as a run-time vector, for Linear reshapes.
    lead: Lead,
    /// `[B, F, HW, D]` as a run-time vector.
    shape4: Value,
    rope_cos: Value,
    rope_sin: Value,
    context: Value,
    causal_bias: Option<Value>,
}

/// Rotates interleaved pairs `(x[2j], x[2j+1])` of `[B, L, D]` queries/keys per head.
fn apply_rope(
    g: &mut Graph,
    x: &Value,
    config: &DitConfig,
    cos: &Value,
    sin: &Value,
) -> Result<Value> {
    let heads = config.num_heads as i64;
    let half = (config.head_dim() / 2) as i64;
    let pairs = g.reshape(x, &[0, -1, heads, half, 2])?;
    let parts = g.split(&pairs, -1, &[1, 1])?;
    let (x1, x2) = (&parts[0], &parts[1]);
    let a = g.mul(x1, cos)?;
    let b = g.mul(x2, sin)?;
    let real = g.sub(&a, &b)?;
    let c = g.mul(x1, sin)?;
    let e = g.mul(x2, cos)?;
    let imaginary = g.add(&c, &e)?;
    let rotated = g.concat(&[&real, &imaginary], -1)?;
    Ok(g.reshape(&rotated, &[0, -1, config.dim as i64])?)
}

/// Additive `[1, 1, L, L]` mask: token q may see token k iff `block(k) <= block(q)`, where
/// `block = frame / causal_block_size` (diffusers' `num_frame_per_block` mask, built structurally).
fn causal_bias(g: &mut Graph, tokens: &Value, frames: &Value, block_size: &Value) -> Result<Value> {
    let length = g.shape_of(tokens, 1, 2)?;
    let per_frame = g.div(&length, frames)?;
    let length = g.squeeze(&length, &[0])?;
    let zero = g.scalar(0.0, DType::I64)?;
    let one = g.scalar(1.0, DType::I64)?;
    let positions = g.range(&zero, &length, &one, Dim::Unknown)?;
    let frame = g.div(&positions, &per_frame)?;
    let block = g.div(&frame, block_size)?;
    let query_block = g.unsqueeze(&block, &[1])?;
    let key_block = g.unsqueeze(&block, &[0])?;
    let allowed = g.less_or_equal(&key_block, &query_block)?;
    let open = g.scalar(0.0, DType::F32)?;
    let closed = g.scalar(f64::NEG_INFINITY, DType::F32)?;
    let bias = g.where_(&allowed, &open, &closed)?;
    Ok(g.unsqueeze(&bias, &[0, 1])?)
}

fn modulate(g: &mut Graph, x: &Value, shift: &Value, scale: &Value) -> Result<Value> {
    let one = g.scalar(1.0, DType::F32)?;
    let factor = g.add(scale, &one)?;
    let y = g.mul(x, &factor)?;
    Ok(g.add(&y, shift)?)
}

fn to_tokens(g: &mut Graph, x: &Value, dim: usize) -> Result<Value> {
    Ok(g.reshape(x, &[0, -1, dim as i64])?)
}

fn to_frames(g: &mut Graph, x: &Value, shared: &Shared, dim: usize) -> Result<Value> {
    let shape = vec![
        x.shape[0].clone(),
        Dim::Unknown,
        Dim::Unknown,
        Dim::Known(dim as i64),
    ];
    Ok(g.reshape_to(x, &shared.shape4, shape)?)
}

fn block(
    layers: &mut Layers<'_, '_>,
    config: &DitConfig,
    index: usize,
    x: Value,
    modulation: &Value,
    shared: &Shared,
) -> Result<Value> {
    let d = config.dim;
    let p = format!("blocks.{index}");
    let table = layers.weights.initializer(
        &mut layers.graph,
        &format!("{p}.modulation"),
        &[1, 6, d],
        &[1, 1, 6, d as i64],
        DType::F32,
    )?;
    let g = &mut layers.graph;
    let m = g.add(&table, modulation)?;
    let m = g.split(&m, 2, &[1; 6])?;
    let (shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff) =
        (&m[0], &m[1], &m[2], &m[3], &m[4], &m[5]);
    let lead = &shared.lead;

    let h = layers.layer_norm_plain(&x, d, config.eps)?;
    let h = modulate(&mut layers.graph, &h, shift_sa, scale_sa)?;
    let q = layers.linear(&h, &format!("{p}.self_attn.q"), d, d, lead)?;
    let q = layers.rms_norm(&q, &format!("{p}.self_attn.norm_q.weight"), d, config.eps)?;
    let k = layers.linear(&h, &format!("{p}.self_attn.k"), d, d, lead)?;
    let k = layers.rms_norm(&k, &format!("{p}.self_attn.norm_k.weight"), d, config.eps)?;
    let v = layers.linear_compute(&h, &format!("{p}.self_attn.v"), d, d, lead)?;
    let g = &mut layers.graph;
    let (q, k) = match &shared.position_ids {
        // The fused op computes the same interleaved rotation in one kernel per tensor.
        Some(positions) => {
            let q = to_tokens(g, &q, d)?;
            let k = to_tokens(g, &k, d)?;
            let (cos, sin) = &shared.rope_table;
            let heads = config.num_heads as i64;
            (
                g.rotary_embedding(&q, positions, cos, sin, heads, true)?,
                g.rotary_embedding(&k, positions, cos, sin, heads, true)?,
            )
        }
        None => (
            apply_rope(g, &q, config, &shared.rope_cos, &shared.rope_sin)?,
            apply_rope(g, &k, config, &shared.rope_cos, &shared.rope_sin)?,
        ),
    };
    let v = to_tokens(g, &v, d)?;
    let a = layers.attention_compute(&q, &k, &v, config.num_heads, shared.causal_bias.as_ref())?;
    let a = to_frames(&mut layers.graph, &a, shared, d)?;
    let o = layers.linear(&a, &format!("{p}.self_attn.o"), d, d, lead)?;
    let g = &mut layers.graph;
    let o = g.mul(&o, gate_sa)?;
    let x = g.add(&x, &o)?;

    let n = layers.layer_norm_affine(&x, &format!("{p}.norm3"), d, config.eps)?;
    let q = layers.linear_compute(&n, &format!("{p}.cross_attn.q"), d, d, lead)?;
    let q = layers.rms_norm(&q, &format!("{p}.cross_attn.norm_q.weight"), d, config.eps)?;
    let q = to_tokens(&mut layers.graph, &q, d)?;
    let (image, text) = match (config.model_type, config.image_len) {
        (ModelType::I2v, Some(image_len)) => {
            let g = &mut layers.graph;
            let image = g.slice(&shared.context, 1, 0, image_len as i64)?;
            let text = g.slice(&shared.context, 1, image_len as i64, i64::MAX)?;
            (Some(image), text)
        }
        _ => (None, shared.context.clone()),
    };
    let text_lead = layers.lead_of(&text)?;
    let k = layers.linear(&text, &format!("{p}.cross_attn.k"), d, d, &text_lead)?;
    let k = layers.rms_norm(&k, &format!("{p}.cross_attn.norm_k.weight"), d, config.eps)?;
    let v = layers.linear_compute(&text, &format!("{p}.cross_attn.v"), d, d, &text_lead)?;
    let mut a = layers.attention_compute(&q, &k, &v, config.num_heads, None)?;
    if let Some(image) = image {
        let image_lead = layers.lead_of(&image)?;
        let k = layers.linear(&image, &format!("{p}.cross_attn.k_img"), d, d, &image_lead)?;
        let k = layers.rms_norm(
            &k,
            &format!("{p}.cross_attn.norm_k_img.weight"),
            d,
            config.eps,
        )?;
        let v =
            layers.linear_compute(&image, &format!("{p}.cross_attn.v_img"), d, d, &image_lead)?;
        let image_attention = layers.attention_compute(&q, &k, &v, config.num_heads, None)?;
        a = layers.graph.add(&image_attention, &a)?;
    }
    let a = to_frames(&mut layers.graph, &a, shared, d)?;
    let o = layers.linear(&a, &format!("{p}.cross_attn.o"), d, d, lead)?;
    let x = layers.graph.add(&x, &o)?;

    let h = layers.layer_norm_plain(&x, d, config.eps)?;
    let h = modulate(&mut layers.graph, &h, shift_ff, scale_ff)?;
    let f = layers.linear_compute(&h, &format!("{p}.ffn.0"), d, config.ffn_dim, lead)?;
    let f = layers.graph.gelu(&f, GeluApproximation::Tanh)?;
    let f = layers.linear(&f, &format!("{p}.ffn.2"), config.ffn_dim, d, lead)?;
    let g = &mut layers.graph;
    let f = g.mul(&f, gate_ff)?;
    Ok(g.add(&x, &f)?)
}

/// Builds the `blocks` graph (or its block-causal variant).
pub(super) fn build(layers: &mut Layers<'_, '_>, config: &DitConfig, causal: bool) -> Result<()> {
    let d = config.dim;
    let mut inputs = HashMap::new();
    for port in blocks_inputs(config, causal) {
        let value = layers.graph.input(port.name, port.dtype, port.shape)?;
        inputs.insert(port.name, value);
    }
    let g = &mut layers.graph;
    let tokens = &inputs[io::PATCH_TOKENS];
    let modulation = &inputs[io::TIME_MODULATION];
    let frames = g.shape_of(modulation, 1, 2)?;
    let zero = g.const_i64(&[0])?;
    let rest = g.const_i64(&[-1, d as i64])?;
    let target = g.concat(&[&zero, &frames, &rest], 0)?;
    let x = g.reshape_to(
        tokens,
        &target,
        vec![
            tokens.shape[0].clone(),
            modulation.shape[1].clone(),
            Dim::Unknown,
            Dim::Known(d as i64),
        ],
    )?;
    let half = (config.head_dim() / 2) as i64;
    let rope_cos = g.reshape(&inputs[io::ROPE_COS], &[-1, 1, half, 1])?;
    let rope_sin = g.reshape(&inputs[io::ROPE_SIN], &[-1, 1, half, 1])?;
    let causal_bias = match causal {
        true => {
            let frames_scalar = scalar_at(g, &frames, 0)?;
            Some(causal_bias(
                g,
                tokens,
                &frames_scalar,
                &inputs[io::CAUSAL_BLOCK_SIZE],
            )?)
        }
        false => None,
    };
    let lead = layers.lead_of(&x)?;
    let g = &mut layers.graph;
    let dim = g.const_i64(&[d as i64])?;
    let lead_value = g.shape_of(&x, 0, 3)?;
    let shape4 = g.concat(&[&lead_value, &dim], 0)?;
    let position_ids = match layers.attention {
        Attention::ContribMha => {
            let g = &mut layers.graph;
            let length = g.shape_of(&inputs[io::ROPE_COS], 0, 1)?;
            let length = g.squeeze(&length, &[0])?;
            let zero = g.scalar(0.0, DType::I64)?;
            let one = g.scalar(1.0, DType::I64)?;
            let positions = g.range(&zero, &length, &one, Dim::Unknown)?;
            let positions = g.unsqueeze(&positions, &[0])?;
            let batch = g.shape_of(tokens, 0, 1)?;
            let count = g.shape_of(&positions, 1, 2)?;
            let target = g.concat(&[&batch, &count], 0)?;
            Some(g.expand(
                &positions,
                &target,
                vec![tokens.shape[0].clone(), Dim::Unknown],
            )?)
        }
        Attention::MatMul | Attention::OnnxAttention => None,
    };
    let rope_table = (inputs[io::ROPE_COS].clone(), inputs[io::ROPE_SIN].clone());
    let shared = Shared {
        position_ids,
        rope_table,
        lead,
        shape4,
        rope_cos,
        rope_sin,
        context: inputs[io::CONTEXT_TOKENS].clone(),
        causal_bias,
    };
    let mut x = x;
    for index in 0..config.num_layers {
        layers.graph.enter(&format!("blocks.{index}"));
        x = block(layers, config, index, x, modulation, &shared)?;
        layers.graph.leave();
    }
    let g = &mut layers.graph;
    let out = to_tokens(g, &x, d)?;
    for port in blocks_outputs(config) {
        g.output(port.name, &out, port.dtype, port.shape)?;
    }
    Ok(())
}
