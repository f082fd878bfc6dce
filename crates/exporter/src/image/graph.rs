//! The CLIP vision tower up to its penultimate block (`VisionTransformer.forward(use_31_block=True)`
//! in <https://github.com/SkyworkAI/SkyReels-V2/blob/main/skyreels_v2_infer/modules/clip.py>; HF
//! `CLIPVisionModel(...).hidden_states[-2]`): patch conv (no bias) → `[CLS | patches]` + positions
//! → pre-LayerNorm → all blocks but the last (`x + attn(LN1 x)`, `x + fc2(gelu(fc1(LN2 x)))`), no
//! post-norm.

use skyreels_contract::image::{IMAGE_HIDDEN_STATES, ImageEncoderConfig, PIXEL_VALUES};
use skyreels_graph::{DType, Dim, GeluApproximation, Value};

use crate::dit::io::Port;
use crate::dit::layers::{Layers, Lead};
use crate::error::Result;

/// The graph's input: `pixel_values` (float32 `[batch, 3, image_size, image_size]`).
pub fn inputs(config: &ImageEncoderConfig) -> Vec<Port> {
    let side = Dim::Known(config.image_size as i64);
    vec![Port {
        name: PIXEL_VALUES,
        dtype: DType::F32,
        shape: vec![Dim::named("batch"), Dim::Known(3), side.clone(), side],
    }]
}

/// The graph's output: `image_hidden_states` (float32 `[batch, tokens, dim]`, CLS first).
pub fn outputs(config: &ImageEncoderConfig) -> Vec<Port> {
    let shape = vec![
        Dim::named("batch"),
        Dim::Known(config.num_tokens() as i64),
        Dim::Known(config.dim as i64),
    ];
    vec![Port {
        name: IMAGE_HIDDEN_STATES,
        dtype: DType::F32,
        shape,
    }]
}

fn block(
    layers: &mut Layers<'_, '_>,
    config: &ImageEncoderConfig,
    index: usize,
    x: Value,
    lead: &Lead,
) -> Result<Value> {
    let (d, eps) = (config.dim, config.eps);
    let p = format!("encoder.layers.{index}");
    let h = layers.layer_norm_affine(&x, &format!("{p}.layer_norm1"), d, eps)?;
    let (q, k, v) = if layers
        .weights
        .contains(&format!("{p}.self_attn.qkv_proj.weight"))
    {
        let qkv = layers.linear(&h, &format!("{p}.self_attn.qkv_proj"), d, 3 * d, lead)?;
        let mut parts = layers.graph.split(&qkv, -1, &[d as i64; 3])?;
        let v = parts.remove(2);
        let k = parts.remove(1);
        (parts.remove(0), k, v)
    } else {
        let q = layers.linear(&h, &format!("{p}.self_attn.q_proj"), d, d, lead)?;
        let k = layers.linear(&h, &format!("{p}.self_attn.k_proj"), d, d, lead)?;
        let v = layers.linear(&h, &format!("{p}.self_attn.v_proj"), d, d, lead)?;
        (q, k, v)
    };
    let a = layers.attention(&q, &k, &v, config.num_heads, None)?;
    let o = layers.linear(&a, &format!("{p}.self_attn.out_proj"), d, d, lead)?;
    let x = layers.graph.add(&x, &o)?;
    let h = layers.layer_norm_affine(&x, &format!("{p}.layer_norm2"), d, eps)?;
    let f = layers.linear(&h, &format!("{p}.mlp.fc1"), d, config.ffn_dim, lead)?;
    let f = layers.graph.gelu(&f, GeluApproximation::None)?;
    let f = layers.linear(&f, &format!("{p}.mlp.fc2"), config.ffn_dim, d, lead)?;
    Ok(layers.graph.add(&x, &f)?)
}

/// Builds the vision-tower graph into `layers` (weights by canonical names, see `config.rs`).
pub fn build(layers: &mut Layers<'_, '_>, config: &ImageEncoderConfig) -> Result<()> {
    let (d, patch, tokens) = (config.dim, config.patch_size, config.num_tokens());
    let port = inputs(config).remove(0);
    let pixels = layers.graph.input(port.name, port.dtype, port.shape)?;
    let compute = layers.compute;
    let weights = &mut *layers.weights;
    let g = &mut layers.graph;
    let kernel = weights.tensor(
        g,
        "embeddings.patch_embedding.weight",
        &[d, 3, patch, patch],
        compute,
    )?;
    let class_shape = weights
        .shape("embeddings.class_embedding")
        .map(<[usize]>::to_vec)
        .unwrap_or_else(|| vec![d]);
    let class = weights.initializer(
        g,
        "embeddings.class_embedding",
        &class_shape,
        &[1, 1, d as i64],
        DType::F32,
    )?;
    let position_shape = weights
        .shape("embeddings.position_embedding.weight")
        .map(<[usize]>::to_vec)
        .unwrap_or_else(|| vec![tokens, d]);
    let positions = weights.initializer(
        g,
        "embeddings.position_embedding.weight",
        &position_shape,
        &[tokens as i64, d as i64],
        DType::F32,
    )?;
    let x = g.cast(&pixels, compute)?;
    let p = patch as i64;
    let x = g.conv(&x, &kernel, None, &[p, p], &[0, 0, 0, 0], &[1, 1], 1)?;
    let x = g.cast(&x, DType::F32)?;
    let x = g.reshape(&x, &[0, d as i64, -1])?;
    let x = g.transpose(&x, &[0, 2, 1])?; // (B, patches, D)
    let batch = g.shape_of(&pixels, 0, 1)?;
    let rest = g.const_i64(&[1, d as i64])?;
    let target = g.concat(&[&batch, &rest], 0)?;
    let class = g.expand(
        &class,
        &target,
        vec![pixels.shape[0].clone(), Dim::Known(1), Dim::Known(d as i64)],
    )?;
    let x = g.concat(&[&class, &x], 1)?;
    let x = g.add(&x, &positions)?; // (B, tokens, D)
    let mut x = layers.layer_norm_affine(&x, "pre_layrnorm", d, config.eps)?;
    let lead = layers.lead_of(&x)?;
    for index in 0..config.num_layers - 1 {
        layers.graph.enter(&format!("encoder.layers.{index}"));
        x = block(layers, config, index, x, &lead)?;
        layers.graph.leave();
    }
    for port in outputs(config) {
        layers.graph.output(port.name, &x, port.dtype, port.shape)?;
    }
    Ok(())
}
