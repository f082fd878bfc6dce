//! The umT5 encoder graph (`T5Encoder` in
//! <https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/t5.py>, HF
//! `UMT5EncoderModel`): token embedding (Gather on the external table) → blocks of
//! `x + Attn(RMS(x))`, `x + FFN(RMS(x))` → final RMS norm → padded rows zeroed.
//!
//! The relative-position bias is computed in-graph from the sequence length: `key − query` is
//! clamped to `±max_distance` (every distance past it shares the last bucket), looked up in a
//! constant bucket table, then in each layer's `[num_buckets, heads]` table. Padded keys get
//! `f32::MIN` added, as HF's extended attention mask does.

use skyreels_contract::text::{
    ATTENTION_MASK, AXIS_TOKENS, INPUT_IDS, TEXT_HIDDEN_STATES, TextEncoderConfig,
};
use skyreels_graph::{AttentionBias, DType, Dim, GeluApproximation, Graph, Value};

use super::config::relative_position_bucket;
use crate::dit::io::Port;
use crate::dit::layers::{Layers, Lead, heads_attention};
use crate::error::Result;
use skyreels_contract::Attention;

/// The graph's inputs: `input_ids`, `attention_mask` (int64 `[batch, text_tokens]`).
pub fn inputs() -> Vec<Port> {
    let shape = vec![Dim::named("batch"), Dim::named(AXIS_TOKENS)];
    vec![
        Port {
            name: INPUT_IDS,
            dtype: DType::I64,
            shape: shape.clone(),
        },
        Port {
            name: ATTENTION_MASK,
            dtype: DType::I64,
            shape,
        },
    ]
}

/// The graph's output: `text_hidden_states` (float32 `[batch, text_tokens, dim]`).
pub fn outputs(config: &TextEncoderConfig) -> Vec<Port> {
    let shape = vec![
        Dim::named("batch"),
        Dim::named(AXIS_TOKENS),
        Dim::Known(config.dim as i64),
    ];
    vec![Port {
        name: TEXT_HIDDEN_STATES,
        dtype: DType::F32,
        shape,
    }]
}

/// `[L, L]` int64 buckets of `key − query` for the run-time length of `ids`' axis 1.
fn bucket_matrix(g: &mut Graph, ids: &Value, config: &TextEncoderConfig) -> Result<Value> {
    let max = config.max_distance as i64;
    let table: Vec<i64> = (-max..=max)
        .map(|r| relative_position_bucket(r, config.num_buckets, config.max_distance))
        .collect();
    let table = g.inline_initializer(
        "relative_buckets",
        DType::I64,
        &[table.len() as i64],
        bytemuck::cast_slice(&table).to_vec(),
    )?;
    let length = g.shape_of(ids, 1, 2)?;
    let length = g.squeeze(&length, &[0])?;
    let zero = g.scalar(0.0, DType::I64)?;
    let one = g.scalar(1.0, DType::I64)?;
    let positions = g.range(&zero, &length, &one, ids.shape[1].clone())?;
    let keys = g.unsqueeze(&positions, &[0])?;
    let queries = g.unsqueeze(&positions, &[1])?;
    let relative = g.sub(&keys, &queries)?; // (query, key)
    let low = g.scalar(-max as f64, DType::I64)?;
    let high = g.scalar(max as f64, DType::I64)?;
    let relative = g.min(&relative, &high)?;
    let relative = g.max(&relative, &low)?;
    let shift = g.scalar(max as f64, DType::I64)?;
    let index = g.add(&relative, &shift)?;
    Ok(g.gather(&table, &index)?)
}

/// Attention with logits `q·kᵀ + bias` (no `1/√d`), float32, on `[B, L, heads·head_dim]`.
fn attention(
    layers: &mut Layers<'_, '_>,
    q: &Value,
    k: &Value,
    v: &Value,
    bias: &Value,
    config: &TextEncoderConfig,
) -> Result<Value> {
    let heads = config.num_heads as i64;
    let g = &mut layers.graph;
    match layers.attention {
        Attention::ContribMha => {
            Ok(g.multi_head_attention_scaled(q, k, v, AttentionBias::Additive(bias), heads, 1.0)?)
        }
        Attention::MatMul | Attention::OnnxAttention => Ok(heads_attention(
            g,
            layers.attention,
            [q, k, v],
            Some(bias),
            heads as usize,
            1.0,
        )?),
    }
}

fn block(
    layers: &mut Layers<'_, '_>,
    config: &TextEncoderConfig,
    index: usize,
    x: Value,
    buckets: &Value,
    mask_bias: &Value,
    lead: &Lead,
) -> Result<Value> {
    let (d, width, eps) = (config.dim, config.num_heads * config.head_dim, config.eps);
    let p = format!("blocks.{index}");
    let table = layers.weights.tensor(
        &mut layers.graph,
        &format!("{p}.pos_embedding.embedding.weight"),
        &[config.num_buckets, config.num_heads],
        DType::F32,
    )?;
    let g = &mut layers.graph;
    let bias = g.gather(&table, buckets)?; // (query, key, heads)
    let bias = g.transpose(&bias, &[2, 0, 1])?;
    let bias = g.unsqueeze(&bias, &[0])?;
    let bias = g.add(&bias, mask_bias)?; // (B, heads, query, key)

    let h = layers.rms_norm(&x, &format!("{p}.norm1.weight"), d, eps)?;
    let q = layers.linear(&h, &format!("{p}.attn.q"), d, width, lead)?;
    let k = layers.linear(&h, &format!("{p}.attn.k"), d, width, lead)?;
    let v = layers.linear(&h, &format!("{p}.attn.v"), d, width, lead)?;
    let a = attention(layers, &q, &k, &v, &bias, config)?;
    let a = layers.graph.cast(&a, DType::F32)?;
    let o = layers.linear(&a, &format!("{p}.attn.o"), width, d, lead)?;
    let x = layers.graph.add(&x, &o)?;

    let h = layers.rms_norm(&x, &format!("{p}.norm2.weight"), d, eps)?;
    let gate = layers.linear(&h, &format!("{p}.ffn.gate.0"), d, config.ffn_dim, lead)?;
    let gate = layers.graph.gelu(&gate, GeluApproximation::Tanh)?;
    let up = layers.linear(&h, &format!("{p}.ffn.fc1"), d, config.ffn_dim, lead)?;
    let f = layers.graph.mul(&up, &gate)?;
    let f = layers.linear(&f, &format!("{p}.ffn.fc2"), config.ffn_dim, d, lead)?;
    Ok(layers.graph.add(&x, &f)?)
}

/// Builds the encoder graph into `layers` (weights by canonical Wan names).
pub fn build(layers: &mut Layers<'_, '_>, config: &TextEncoderConfig) -> Result<()> {
    let d = config.dim;
    let mut values = Vec::new();
    for port in inputs() {
        values.push(layers.graph.input(port.name, port.dtype, port.shape)?);
    }
    let (ids, mask) = (&values[0], &values[1]);
    let compute = layers.compute;
    let embedding = layers.weights.tensor(
        &mut layers.graph,
        "token_embedding.weight",
        &[config.vocab_size, d],
        compute,
    )?;
    let g = &mut layers.graph;
    let x = g.gather(&embedding, ids)?;
    let x = g.cast(&x, DType::F32)?; // (B, L, D)
    let buckets = bucket_matrix(g, ids, config)?;
    let mask = g.cast(mask, DType::F32)?;
    let one = g.scalar(1.0, DType::F32)?;
    let padding = g.sub(&one, &mask)?;
    let lowest = g.scalar(f32::MIN as f64, DType::F32)?;
    let mask_bias = g.mul(&padding, &lowest)?;
    let mask_bias = g.unsqueeze(&mask_bias, &[1, 2])?; // (B, 1, 1, key)
    let keep = g.unsqueeze(&mask, &[2])?; // (B, L, 1)
    let lead = layers.lead_of(&x)?;
    let mut x = x;
    for index in 0..config.num_layers {
        layers.graph.enter(&format!("blocks.{index}"));
        x = block(layers, config, index, x, &buckets, &mask_bias, &lead)?;
        layers.graph.leave();
    }
    let x = layers.rms_norm(&x, "norm.weight", d, config.eps)?;
    let g = &mut layers.graph;
    let x = g.mul(&x, &keep)?;
    for port in outputs(config) {
        g.output(port.name, &x, port.dtype, port.shape)?;
    }
    Ok(())
}
