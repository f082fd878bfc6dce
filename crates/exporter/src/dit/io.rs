//! The DiT graphs' signatures, declared once: the graphs are built from them and the manifest
//! is written from them.

use skyreels_contract::io::{self, axis};
use skyreels_contract::{DitConfig, ModelType, TensorSpec};
use skyreels_graph::{DType, Dim, Shape};

/// One input or output: name, element type, shape.
pub struct Port {
    /// Value name.
    pub name: &'static str,
    /// Element type.
    pub dtype: DType,
    /// Shape with symbolic axes.
    pub shape: Shape,
}

fn port(name: &'static str, dtype: DType, shape: &[Dim]) -> Port {
    Port {
        name,
        dtype,
        shape: shape.to_vec(),
    }
}

fn n(name: &str) -> Dim {
    Dim::named(name)
}

fn k(v: usize) -> Dim {
    Dim::Known(v as i64)
}

impl Port {
    /// Manifest form.
    pub fn spec(&self) -> TensorSpec {
        TensorSpec {
            name: self.name.to_string(),
            dtype: self.dtype.name().to_string(),
            shape: self.shape.iter().map(|d| d.to_string()).collect(),
        }
    }
}

/// `embed` inputs.
pub fn embed_inputs(config: &DitConfig) -> Vec<Port> {
    let mut ports = vec![
        port(
            io::LATENTS,
            DType::F32,
            &[
                n(axis::BATCH),
                k(config.in_dim),
                n(axis::FRAMES),
                n(axis::HEIGHT),
                n(axis::WIDTH),
            ],
        ),
        port(
            io::TIMESTEPS,
            DType::F32,
            &[n(axis::BATCH), n(axis::FRAMES)],
        ),
        port(
            io::CONTEXT,
            DType::F32,
            &[n(axis::BATCH), n(axis::CONTEXT_LEN), k(config.text_dim)],
        ),
    ];
    if config.inject_sample_info {
        ports.push(port(io::FPS, DType::I64, &[n(axis::BATCH)]));
    }
    if let (ModelType::I2v, Some(image_dim), Some(image_len)) =
        (config.model_type, config.image_dim, config.image_len)
    {
        ports.push(port(
            io::IMAGE_CONTEXT,
            DType::F32,
            &[n(axis::BATCH), k(image_len), k(image_dim)],
        ));
    }
    ports
}

/// `embed` outputs.
pub fn embed_outputs(config: &DitConfig) -> Vec<Port> {
    let d = k(config.dim);
    let half_head = k(config.head_dim() / 2);
    vec![
        port(
            io::PATCH_TOKENS,
            DType::F32,
            &[n(axis::BATCH), n(axis::TOKENS), d.clone()],
        ),
        port(
            io::TIME_EMBEDDING,
            DType::F32,
            &[n(axis::BATCH), n(axis::FRAMES), d.clone()],
        ),
        port(
            io::TIME_MODULATION,
            DType::F32,
            &[n(axis::BATCH), n(axis::FRAMES), k(6), d.clone()],
        ),
        port(
            io::CONTEXT_TOKENS,
            DType::F32,
            &[n(axis::BATCH), n("context_tokens"), d],
        ),
        port(
            io::ROPE_COS,
            DType::F32,
            &[n(axis::TOKENS), half_head.clone()],
        ),
        port(io::ROPE_SIN, DType::F32, &[n(axis::TOKENS), half_head]),
    ]
}

/// `[B, num_tokens, D]` float32 tokens (the residual stream between the graphs).
fn tokens(name: &'static str, config: &DitConfig) -> Port {
    port(
        name,
        DType::F32,
        &[n(axis::BATCH), n(axis::TOKENS), k(config.dim)],
    )
}

/// `[B, tokens, D]` in the compute dtype (what attention reads and writes).
fn attention_values(name: &'static str, tokens: &str, config: &DitConfig, compute: DType) -> Port {
    port(name, compute, &[n(axis::BATCH), n(tokens), k(config.dim)])
}

fn embedded(config: &DitConfig, name: &str) -> Port {
    embed_outputs(config)
        .into_iter()
        .find(|p| p.name == name)
        .expect("an embed output")
}

/// `block_qkv` inputs (before the layer's weights).
pub fn block_qkv_inputs(config: &DitConfig) -> Vec<Port> {
    vec![
        tokens(io::LAYER_TOKENS, config),
        embedded(config, io::TIME_MODULATION),
        embedded(config, io::ROPE_COS),
        embedded(config, io::ROPE_SIN),
    ]
}

/// `block_qkv` outputs: self-attention queries and keys (after RMSNorm and RoPE) and values.
pub fn block_qkv_outputs(config: &DitConfig, compute: DType) -> Vec<Port> {
    [io::QUERY, io::KEY, io::VALUE]
        .into_iter()
        .map(|name| attention_values(name, axis::TOKENS, config, compute))
        .collect()
}

/// `attention` inputs: all queries, keys and values, the output so far and where this call ends.
pub fn attention_inputs(config: &DitConfig, compute: DType) -> Vec<Port> {
    let mut ports = block_qkv_outputs(config, compute);
    ports.push(attention_values(
        io::ATTENTION_PREFIX,
        axis::PREFIX_TOKENS,
        config,
        compute,
    ));
    ports.push(port(io::QUERY_END, DType::I64, &[k(1)]));
    ports
}

/// `attention` outputs: the prefix extended by this call's query tokens.
pub fn attention_outputs(config: &DitConfig, compute: DType) -> Vec<Port> {
    vec![attention_values(
        io::ATTENTION_OUTPUT,
        axis::ATTENDED_TOKENS,
        config,
        compute,
    )]
}

/// `block_out` inputs (before the layer's weights).
pub fn block_out_inputs(config: &DitConfig, compute: DType) -> Vec<Port> {
    vec![
        attention_values(io::ATTENTION_OUTPUT, axis::TOKENS, config, compute),
        tokens(io::LAYER_TOKENS, config),
        embedded(config, io::TIME_MODULATION),
        embedded(config, io::CONTEXT_TOKENS),
    ]
}

/// `block_out` outputs.
pub fn block_out_outputs(config: &DitConfig) -> Vec<Port> {
    vec![tokens(io::LAYER_OUTPUT, config)]
}

/// `head` inputs.
pub fn head_inputs(config: &DitConfig) -> Vec<Port> {
    vec![
        port(
            io::BLOCK_TOKENS,
            DType::F32,
            &[n(axis::BATCH), n(axis::TOKENS), k(config.dim)],
        ),
        port(
            io::TIME_EMBEDDING,
            DType::F32,
            &[n(axis::BATCH), n(axis::FRAMES), k(config.dim)],
        ),
        port(
            io::LATENTS,
            DType::F32,
            &[
                n(axis::BATCH),
                k(config.in_dim),
                n(axis::FRAMES),
                n(axis::HEIGHT),
                n(axis::WIDTH),
            ],
        ),
    ]
}

/// `head` outputs.
pub fn head_outputs(config: &DitConfig) -> Vec<Port> {
    vec![port(
        io::VELOCITY,
        DType::F32,
        &[
            n(axis::BATCH),
            k(config.out_dim),
            n(axis::FRAMES),
            n(axis::HEIGHT),
            n(axis::WIDTH),
        ],
    )]
}

/// `teacache_residual` inputs and outputs: `block_tokens − patch_tokens`.
pub fn teacache_residual_ports(config: &DitConfig) -> (Vec<Port>, Vec<Port>) {
    (
        vec![
            tokens(io::BLOCK_TOKENS, config),
            tokens(io::PATCH_TOKENS, config),
        ],
        vec![tokens(io::TEACACHE_RESIDUAL, config)],
    )
}

/// `teacache_reuse` inputs and outputs: `patch_tokens + teacache_residual → block_tokens`.
pub fn teacache_reuse_ports(config: &DitConfig) -> (Vec<Port>, Vec<Port>) {
    (
        vec![
            tokens(io::PATCH_TOKENS, config),
            tokens(io::TEACACHE_RESIDUAL, config),
        ],
        vec![tokens(io::BLOCK_TOKENS, config)],
    )
}
