//! The umT5 encoder graph (`T5Encoder` in
//! <https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/t5.py>, HF
//! `UMT5EncoderModel`): token embedding (Gather on the external table) → blocks of
//! `x + Attn(RMS(x))`, `x + FFN(RMS(x))` → final RMS norm → padded rows zeroed.
//!
//! The relative-position bias is computed in-graph from the sequence length: `key − query` is
//! clamped to `±max_distance` (every distance past it shares the last bucket), looked up in a
//! constant bucket table, then in each layer's `[num_buckets, heads]` table. Padded keys get
//! `f32::MIN` added, as HF's extended attention mask does.
//!
//! The same encoder also comes in pieces, for streaming its weights (`--offload`):
//! `layers_prepare` (buckets and mask bias), `layer` (one block, weights as inputs, run once per
//! block) and `layers_final` (final norm and padding); the token embedding's rows are then read
//! on the host. Every piece is built by the functions the whole graph is built from.

use skyreels_contract::text::{
    ATTENTION_MASK, AXIS_TOKENS, INPUT_IDS, TEXT_HIDDEN_STATES, TEXT_LAYER_HIDDEN,
    TEXT_LAYER_OUTPUT, TEXT_MASK_BIAS, TEXT_POSITION_BUCKETS, TextEncoderConfig,
};
use skyreels_graph::{AttentionBias, DType, Dim, GeluApproximation, Graph, Value};

use super::config::relative_position_bucket;
pub use crate::dit::io::Port;
use crate::dit::layers::{Layers, Lead, heads_attention};
use crate::error::Result;
use crate::prefix::Prefix;
use skyreels_contract::Attention;

fn port(name: &'static str, dtype: DType, shape: Vec<Dim>) -> Port {
    Port { name, dtype, shape }
}

fn tokens_by_tokens(name: &'static str) -> Port {
    port(
        name,
        DType::I64,
        vec![Dim::named("batch"), Dim::named(AXIS_TOKENS)],
    )
}

fn hidden(name: &'static str, config: &TextEncoderConfig) -> Port {
    port(
        name,
        DType::F32,
        vec![
            Dim::named("batch"),
            Dim::named(AXIS_TOKENS),
            Dim::Known(config.dim as i64),
        ],
    )
}

fn buckets_port() -> Port {
    port(
        TEXT_POSITION_BUCKETS,
        DType::I64,
        vec![Dim::named(AXIS_TOKENS), Dim::named(AXIS_TOKENS)],
    )
}

fn mask_bias_port() -> Port {
    port(
        TEXT_MASK_BIAS,
        DType::F32,
        vec![
            Dim::named("batch"),
            Dim::Known(1),
            Dim::Known(1),
            Dim::named(AXIS_TOKENS),
        ],
    )
}

/// The graph's inputs: `input_ids`, `attention_mask` (int64 `[batch, text_tokens]`); also the
/// inputs of `layers_prepare`.
pub fn inputs() -> Vec<Port> {
    vec![
        tokens_by_tokens(INPUT_IDS),
        tokens_by_tokens(ATTENTION_MASK),
    ]
}

/// The graph's output: `text_hidden_states` (float32 `[batch, text_tokens, dim]`); also the
/// output of `layers_final`.
pub fn outputs(config: &TextEncoderConfig) -> Vec<Port> {
    vec![hidden(TEXT_HIDDEN_STATES, config)]
}

/// `layers_prepare` outputs: the position buckets `[L, L]` and the padding bias `[B, 1, 1, L]`.
pub fn prepare_outputs() -> Vec<Port> {
    vec![buckets_port(), mask_bias_port()]
}

/// `layer` inputs before its weights: hidden states, position buckets, padding bias.
pub fn layer_inputs(config: &TextEncoderConfig) -> Vec<Port> {
    vec![
        hidden(TEXT_LAYER_HIDDEN, config),
        buckets_port(),
        mask_bias_port(),
    ]
}

/// `layer` output: the block's hidden states.
pub fn layer_outputs(config: &TextEncoderConfig) -> Vec<Port> {
    vec![hidden(TEXT_LAYER_OUTPUT, config)]
}

/// `layers_final` inputs: the last block's hidden states and the attention mask.
pub fn final_inputs(config: &TextEncoderConfig) -> Vec<Port> {
    vec![
        hidden(TEXT_LAYER_HIDDEN, config),
        tokens_by_tokens(ATTENTION_MASK),
    ]
}

fn declare(layers: &mut Layers<'_, '_>, ports: Vec<Port>) -> Result<Vec<Value>> {
    ports
        .into_iter()
        .map(|p| Ok(layers.graph.input(p.name, p.dtype, p.shape)?))
        .collect()
}

fn emit(layers: &mut Layers<'_, '_>, ports: Vec<Port>, values: &[&Value]) -> Result<()> {
    for (port, value) in ports.into_iter().zip(values) {
        layers
            .graph
            .output(port.name, value, port.dtype, port.shape)?;
    }
    Ok(())
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

/// What every block shares: the position buckets `[L, L]`, the padding bias `[B, 1, 1, L]`,
/// and the rows to keep `[B, L, 1]` (1 for tokens, 0 for padding).
struct Shared {
    buckets: Value,
    mask_bias: Value,
    keep: Value,
}

fn prepare(g: &mut Graph, ids: &Value, mask: &Value, config: &TextEncoderConfig) -> Result<Shared> {
    let buckets = bucket_matrix(g, ids, config)?;
    let mask = g.cast(mask, DType::F32)?;
    let one = g.scalar(1.0, DType::F32)?;
    let padding = g.sub(&one, &mask)?;
    let lowest = g.scalar(f32::MIN as f64, DType::F32)?;
    let mask_bias = g.mul(&padding, &lowest)?;
    let mask_bias = g.unsqueeze(&mask_bias, &[1, 2])?; // (B, 1, 1, key)
    let keep = g.unsqueeze(&mask, &[2])?; // (B, L, 1)
    Ok(Shared {
        buckets,
        mask_bias,
        keep,
    })
}

/// The final RMS norm with padded rows zeroed.
fn finish(
    layers: &mut Layers<'_, '_>,
    x: &Value,
    keep: &Value,
    config: &TextEncoderConfig,
) -> Result<Value> {
    let x = layers.rms_norm(x, "norm.weight", config.dim, config.eps)?;
    Ok(layers.graph.mul(&x, keep)?)
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

/// Encoder block `p` (`blocks.{i}`) on `x`.
fn block(
    layers: &mut Layers<'_, '_>,
    config: &TextEncoderConfig,
    p: &Prefix,
    x: Value,
    buckets: &Value,
    mask_bias: &Value,
    lead: &Lead,
) -> Result<Value> {
    let (d, width, eps) = (config.dim, config.num_heads * config.head_dim, config.eps);
    let (buckets_n, heads) = (config.num_buckets, config.num_heads);
    let table = layers.weight(
        &format!("{p}.pos_embedding.embedding.weight"),
        &[buckets_n, heads],
        &[buckets_n as i64, heads as i64],
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

/// Builds the whole encoder graph into `layers` (weights by canonical Wan names).
pub fn build(layers: &mut Layers<'_, '_>, config: &TextEncoderConfig) -> Result<()> {
    let values = declare(layers, inputs())?;
    let (ids, mask) = (&values[0], &values[1]);
    let compute = layers.compute;
    let embedding = layers.weights.tensor(
        &mut layers.graph,
        "token_embedding.weight",
        &[config.vocab_size, config.dim],
        compute,
    )?;
    let g = &mut layers.graph;
    let x = g.gather(&embedding, ids)?;
    let x = g.cast(&x, DType::F32)?; // (B, L, D)
    let shared = prepare(g, ids, mask, config)?;
    let lead = layers.lead_of(&x)?;
    let mut x = x;
    for index in 0..config.num_layers {
        let p = Prefix::root().pp("blocks").pp(index);
        layers.graph.enter(&p.to_string());
        x = block(
            layers,
            config,
            &p,
            x,
            &shared.buckets,
            &shared.mask_bias,
            &lead,
        )?;
        layers.graph.leave();
    }
    let x = finish(layers, &x, &shared.keep, config)?;
    emit(layers, outputs(config), &[&x])
}

/// Builds `layers_prepare`: token ids and mask → position buckets and padding bias.
pub fn build_prepare(layers: &mut Layers<'_, '_>, config: &TextEncoderConfig) -> Result<()> {
    let values = declare(layers, inputs())?;
    let shared = prepare(&mut layers.graph, &values[0], &values[1], config)?;
    emit(
        layers,
        prepare_outputs(),
        &[&shared.buckets, &shared.mask_bias],
    )
}

/// Builds `layer`: block `p` with its weights as graph inputs (`layers` binds them so).
pub fn build_layer(
    layers: &mut Layers<'_, '_>,
    config: &TextEncoderConfig,
    p: &Prefix,
) -> Result<()> {
    let values = declare(layers, layer_inputs(config))?;
    let lead = layers.lead_of(&values[0])?;
    let x = block(
        layers,
        config,
        p,
        values[0].clone(),
        &values[1],
        &values[2],
        &lead,
    )?;
    emit(layers, layer_outputs(config), &[&x])
}

/// Builds `layers_final`: the last block's hidden states and the mask → `text_hidden_states`.
pub fn build_final(layers: &mut Layers<'_, '_>, config: &TextEncoderConfig) -> Result<()> {
    let values = declare(layers, final_inputs(config))?;
    let g = &mut layers.graph;
    let mask = g.cast(&values[1], DType::F32)?;
    let keep = g.unsqueeze(&mask, &[2])?;
    let x = finish(layers, &values[0], &keep, config)?;
    emit(layers, outputs(config), &[&x])
}
