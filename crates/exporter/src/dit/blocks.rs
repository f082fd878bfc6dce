//! The transformer block (`WanAttentionBlock`,
//! <https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/transformer.py>)
//! as three graphs around its self-attention, which the runtime runs:
//! - `block_qkv`: modulated LayerNorm, q/k/v projections, RMSNorm, RoPE → `query`, `key`, `value`;
//! - `attention`: one self-attention call over a key prefix (the runtime's attention seam, see
//!   [`build_attention`]);
//! - `block_out`: output projection and gated residual, cross-attention, FFN → `layer_output`.
//!
//! The block graphs take their layer's weights as inputs ([`WeightBinding::Inputs`]), so one graph
//! serves every layer; [`qkv`] and [`output`] are the block's description, split at the seam.
//!
//! [`WeightBinding::Inputs`]: crate::layers::WeightBinding::Inputs

use std::collections::HashMap;

use skyreels_contract::io;
use skyreels_contract::{Attention, DitConfig, ModelType};
use skyreels_graph::{DType, Dim, Graph, Value};

use super::io::{
    Port, attention_inputs, attention_outputs, block_out_inputs, block_out_outputs,
    block_qkv_inputs, block_qkv_outputs,
};
use crate::error::Result;
use crate::layers::{Layers, Lead};
use crate::prefix::Prefix;

/// The residual stream viewed per frame, with what the Linear layers need to reshape back.
struct Frames {
    /// Tokens `[B, F, HW, D]`.
    x: Value,
    /// `[B, F, HW]` as a run-time vector, for Linear reshapes.
    lead: Lead,
    /// `[B, F, HW, D]` as a run-time vector.
    shape4: Value,
}

/// The six per-frame modulation vectors `[B, F, 1, D]` of one block: `modulation` (the block's
/// learned `[1, 6, D]` table) plus the time modulation.
struct Modulation {
    parts: Vec<Value>,
}

impl Modulation {
    fn shift_self(&self) -> &Value {
        &self.parts[0]
    }
    fn scale_self(&self) -> &Value {
        &self.parts[1]
    }
    fn gate_self(&self) -> &Value {
        &self.parts[2]
    }
    fn shift_ffn(&self) -> &Value {
        &self.parts[3]
    }
    fn scale_ffn(&self) -> &Value {
        &self.parts[4]
    }
    fn gate_ffn(&self) -> &Value {
        &self.parts[5]
    }
}

fn inputs(layers: &mut Layers<'_, '_>, ports: Vec<Port>) -> Result<HashMap<&'static str, Value>> {
    let mut values = HashMap::new();
    for port in ports {
        let value = layers.graph.input(port.name, port.dtype, port.shape)?;
        values.insert(port.name, value);
    }
    Ok(values)
}

fn outputs(g: &mut Graph, ports: Vec<Port>, values: &[Value]) -> Result<()> {
    for (port, value) in ports.into_iter().zip(values) {
        g.output(port.name, value, port.dtype, port.shape)?;
    }
    Ok(())
}

/// `[B, L, D]` tokens as frames, `F` taken from `time_modulation` `[B, F, 6, D]`.
fn frames(
    layers: &mut Layers<'_, '_>,
    config: &DitConfig,
    tokens: &Value,
    time_modulation: &Value,
) -> Result<Frames> {
    let d = config.dim as i64;
    let g = &mut layers.graph;
    let count = g.shape_of(time_modulation, 1, 2)?;
    let zero = g.const_i64(&[0])?;
    let rest = g.const_i64(&[-1, d])?;
    let target = g.concat(&[&zero, &count, &rest], 0)?;
    let x = g.reshape_to(
        tokens,
        &target,
        vec![
            tokens.shape[0].clone(),
            time_modulation.shape[1].clone(),
            Dim::Unknown,
            Dim::Known(d),
        ],
    )?;
    let lead = layers.lead_of(&x)?;
    let g = &mut layers.graph;
    let dim = g.const_i64(&[d])?;
    let lead_value = g.shape_of(&x, 0, 3)?;
    let shape4 = g.concat(&[&lead_value, &dim], 0)?;
    Ok(Frames { x, lead, shape4 })
}

fn modulation(
    layers: &mut Layers<'_, '_>,
    config: &DitConfig,
    p: &Prefix,
    time_modulation: &Value,
) -> Result<Modulation> {
    let d = config.dim;
    let table = layers.weight(
        &p.pp("modulation"),
        &[1, 6, d],
        &[1, 1, 6, d as i64],
        DType::F32,
    )?;
    let g = &mut layers.graph;
    let sum = g.add(&table, time_modulation)?;
    Ok(Modulation {
        parts: g.split(&sum, 2, &[1; 6])?,
    })
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

/// RoPE on `[B, F, HW, D]` queries or keys, giving `[B, L, D]`: the fused contrib op for
/// contrib-MHA exports (one kernel per tensor), the explicit rotation otherwise.
fn rope(
    layers: &mut Layers<'_, '_>,
    config: &DitConfig,
    x: &Value,
    cos: &Value,
    sin: &Value,
) -> Result<Value> {
    let d = config.dim;
    let g = &mut layers.graph;
    match layers.attention {
        Attention::ContribMha => {
            let tokens = to_tokens(g, x, d)?;
            let length = g.shape_of(cos, 0, 1)?;
            let length = g.squeeze(&length, &[0])?;
            let zero = g.scalar(0.0, DType::I64)?;
            let one = g.scalar(1.0, DType::I64)?;
            let positions = g.range(&zero, &length, &one, Dim::Unknown)?;
            let positions = g.unsqueeze(&positions, &[0])?;
            let batch = g.shape_of(&tokens, 0, 1)?;
            let count = g.shape_of(&positions, 1, 2)?;
            let target = g.concat(&[&batch, &count], 0)?;
            let positions = g.expand(
                &positions,
                &target,
                vec![tokens.shape[0].clone(), Dim::Unknown],
            )?;
            let heads = config.num_heads as i64;
            Ok(g.rotary_embedding(&tokens, &positions, cos, sin, heads, true)?)
        }
        Attention::MatMul | Attention::OnnxAttention => {
            let half = (config.head_dim() / 2) as i64;
            let cos = g.reshape(cos, &[-1, 1, half, 1])?;
            let sin = g.reshape(sin, &[-1, 1, half, 1])?;
            apply_rope(g, x, config, &cos, &sin)
        }
    }
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

fn to_frames(g: &mut Graph, x: &Value, frames: &Frames, dim: usize) -> Result<Value> {
    let shape = vec![
        x.shape[0].clone(),
        Dim::Unknown,
        Dim::Unknown,
        Dim::Known(dim as i64),
    ];
    Ok(g.reshape_to(x, &frames.shape4, shape)?)
}

/// The block up to its self-attention: `(query, key, value)` `[B, L, D]` in the compute dtype,
/// queries and keys after RMSNorm and RoPE.
fn qkv(
    layers: &mut Layers<'_, '_>,
    config: &DitConfig,
    p: &Prefix,
    frames: &Frames,
    modulation: &Modulation,
    rope_table: (&Value, &Value),
) -> Result<[Value; 3]> {
    let d = config.dim;
    let lead = &frames.lead;
    let attention = p.pp("self_attn");
    let h = layers.layer_norm_plain(&frames.x, d, config.eps)?;
    let h = modulate(
        &mut layers.graph,
        &h,
        modulation.shift_self(),
        modulation.scale_self(),
    )?;
    let q = layers.linear(&h, &attention.pp("q"), d, d, lead)?;
    let q = layers.rms_norm(&q, &attention.pp("norm_q").pp("weight"), d, config.eps)?;
    let k = layers.linear(&h, &attention.pp("k"), d, d, lead)?;
    let k = layers.rms_norm(&k, &attention.pp("norm_k").pp("weight"), d, config.eps)?;
    let v = layers.linear_compute(&h, &attention.pp("v"), d, d, lead)?;
    let (cos, sin) = rope_table;
    let q = rope(layers, config, &q, cos, sin)?;
    let k = rope(layers, config, &k, cos, sin)?;
    let compute = layers.compute;
    let g = &mut layers.graph;
    Ok([
        g.cast(&q, compute)?,
        g.cast(&k, compute)?,
        to_tokens(g, &v, d)?,
    ])
}

/// The block after its self-attention: output projection with the gated residual,
/// cross-attention over the context (text, plus image tokens for I2V), gated FFN.
fn output(
    layers: &mut Layers<'_, '_>,
    config: &DitConfig,
    p: &Prefix,
    frames: &Frames,
    modulation: &Modulation,
    self_attention: &Value,
    context: &Value,
) -> Result<Value> {
    let d = config.dim;
    let lead = &frames.lead;
    let a = to_frames(&mut layers.graph, self_attention, frames, d)?;
    let o = layers.linear(&a, &p.pp("self_attn").pp("o"), d, d, lead)?;
    let g = &mut layers.graph;
    let o = g.mul(&o, modulation.gate_self())?;
    let x = g.add(&frames.x, &o)?;

    let cross = p.pp("cross_attn");
    let n = layers.layer_norm_affine(&x, &p.pp("norm3"), d, config.eps)?;
    let q = layers.linear_compute(&n, &cross.pp("q"), d, d, lead)?;
    let q = layers.rms_norm(&q, &cross.pp("norm_q").pp("weight"), d, config.eps)?;
    let q = to_tokens(&mut layers.graph, &q, d)?;
    let (image, text) = match (config.model_type, config.image_len) {
        (ModelType::I2v, Some(image_len)) => {
            let g = &mut layers.graph;
            let image = g.slice(context, 1, 0, image_len as i64)?;
            let text = g.slice(context, 1, image_len as i64, i64::MAX)?;
            (Some(image), text)
        }
        _ => (None, context.clone()),
    };
    let text_lead = layers.lead_of(&text)?;
    let k = layers.linear(&text, &cross.pp("k"), d, d, &text_lead)?;
    let k = layers.rms_norm(&k, &cross.pp("norm_k").pp("weight"), d, config.eps)?;
    let v = layers.linear_compute(&text, &cross.pp("v"), d, d, &text_lead)?;
    let mut a = layers.attention_compute(&q, &k, &v, config.num_heads, None)?;
    if let Some(image) = image {
        let image_lead = layers.lead_of(&image)?;
        let k = layers.linear(&image, &cross.pp("k_img"), d, d, &image_lead)?;
        let k = layers.rms_norm(&k, &cross.pp("norm_k_img").pp("weight"), d, config.eps)?;
        let v = layers.linear_compute(&image, &cross.pp("v_img"), d, d, &image_lead)?;
        let image_attention = layers.attention_compute(&q, &k, &v, config.num_heads, None)?;
        a = layers.graph.add(&image_attention, &a)?;
    }
    let a = to_frames(&mut layers.graph, &a, frames, d)?;
    let o = layers.linear(&a, &cross.pp("o"), d, d, lead)?;
    let x = layers.graph.add(&x, &o)?;

    let ffn = p.pp("ffn");
    let h = layers.layer_norm_plain(&x, d, config.eps)?;
    let h = modulate(
        &mut layers.graph,
        &h,
        modulation.shift_ffn(),
        modulation.scale_ffn(),
    )?;
    let f = layers.feed_forward(&h, (&ffn.pp(0), &ffn.pp(2)), (d, config.ffn_dim), lead)?;
    let g = &mut layers.graph;
    let f = g.mul(&f, modulation.gate_ffn())?;
    let x = g.add(&x, &f)?;
    to_tokens(g, &x, d)
}

/// Builds `block_qkv` for the block at `p` (`blocks.3`).
pub(super) fn build_qkv(layers: &mut Layers<'_, '_>, config: &DitConfig, p: &Prefix) -> Result<()> {
    let inputs = inputs(layers, block_qkv_inputs(config))?;
    let time_modulation = &inputs[io::TIME_MODULATION];
    let frames = frames(layers, config, &inputs[io::LAYER_TOKENS], time_modulation)?;
    let modulation = modulation(layers, config, p, time_modulation)?;
    let rope_table = (&inputs[io::ROPE_COS], &inputs[io::ROPE_SIN]);
    let values = qkv(layers, config, p, &frames, &modulation, rope_table)?;
    outputs(
        &mut layers.graph,
        block_qkv_outputs(config, layers.compute),
        &values,
    )
}

/// Builds `block_out` for the block at `p`.
pub(super) fn build_out(layers: &mut Layers<'_, '_>, config: &DitConfig, p: &Prefix) -> Result<()> {
    let inputs = inputs(layers, block_out_inputs(config, layers.compute))?;
    let time_modulation = &inputs[io::TIME_MODULATION];
    let frames = frames(layers, config, &inputs[io::LAYER_TOKENS], time_modulation)?;
    let modulation = modulation(layers, config, p, time_modulation)?;
    let tokens = output(
        layers,
        config,
        p,
        &frames,
        &modulation,
        &inputs[io::ATTENTION_OUTPUT],
        &inputs[io::CONTEXT_TOKENS],
    )?;
    outputs(&mut layers.graph, block_out_outputs(config), &[tokens])
}

/// Builds `attention`: the queries `prefix_tokens..query_end` attend to the keys and values
/// `0..query_end`, and the result is appended to `attention_prefix`. One call over everything is
/// full attention; one call per frame block (`query_end` at each block's end) is block-causal
/// attention without a mask: tokens are frame-major, so a block's keys are a prefix.
pub(super) fn build_attention(layers: &mut Layers<'_, '_>, config: &DitConfig) -> Result<()> {
    let inputs = inputs(layers, attention_inputs(config, layers.compute))?;
    let prefix = &inputs[io::ATTENTION_PREFIX];
    let end = &inputs[io::QUERY_END];
    let g = &mut layers.graph;
    let start = g.shape_of(prefix, 1, 2)?;
    let zero = g.const_i64(&[0])?;
    let query = g.slice_between(&inputs[io::QUERY], 1, &start, end, Dim::Unknown)?;
    let key = g.slice_between(&inputs[io::KEY], 1, &zero, end, Dim::Unknown)?;
    let value = g.slice_between(&inputs[io::VALUE], 1, &zero, end, Dim::Unknown)?;
    let attended = layers.attention_compute(&query, &key, &value, config.num_heads, None)?;
    let g = &mut layers.graph;
    let out = g.concat(&[prefix, &attended], 1)?;
    outputs(g, attention_outputs(config, layers.compute), &[out])
}
