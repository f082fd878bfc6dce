//! Block-causal attention when the causal block size does not divide the frame count. Neither
//! reference runs that case: diffusers 0.42.1 and upstream's `WanModel.forward` both build the mask
//! from `F // cbs` blocks of `cbs` frames and view it as `F` frames, which fails unless `cbs`
//! divides `F` (upstream's unused `_prepare_blockwise_causal_attn_mask` would give the last block
//! the remaining frames, as we do; `generate` refuses such block sizes before running). So there is
//! no reference fixture: the engine's per-block prefix attention is checked against a dense-mask
//! attention written here, swapped in through the attention seam (`Dit::set_attention`), over the
//! whole DiT forward of the `df` fixture model.

use std::path::Path;

use safetensors::SafeTensors;
use skyreels_contract::{Attention, io};
use skyreels_exporter::dit::{self, DitExportOptions};
use skyreels_runtime::Tensor;
use skyreels_runtime::dit::attention::SelfAttention;
use skyreels_runtime::dit::placement::WeightPlacement;
use skyreels_runtime::dit::{Dit, DitInputs};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::session::{Backend, TensorPool};

/// Full attention with the additive mask `block(frame(k)) <= block(frame(q))`, on the host.
struct DenseMaskAttention {
    num_heads: usize,
    causal_block_size: usize,
}

impl SelfAttention for DenseMaskAttention {
    fn attend(
        &mut self,
        pool: &mut TensorPool,
        _query_ends: &[usize],
    ) -> skyreels_runtime::Result<()> {
        let (q, k, v) = (
            pool.to_host(io::QUERY)?,
            pool.to_host(io::KEY)?,
            pool.to_host(io::VALUE)?,
        );
        let frames = pool.shape(io::TIME_MODULATION)?[1];
        let (batch, length, dim) = (q.shape[0], q.shape[1], q.shape[2]);
        let head_dim = dim / self.num_heads;
        let block = |token: usize| token / (length / frames) / self.causal_block_size;
        let mut out = vec![0f32; q.data.len()];
        for b in 0..batch {
            for h in 0..self.num_heads {
                let at = |t: usize, i: usize| (b * length + t) * dim + h * head_dim + i;
                for query in 0..length {
                    let scores: Vec<f32> = (0..length)
                        .map(|key| {
                            if block(key) > block(query) {
                                return f32::NEG_INFINITY;
                            }
                            let dot: f32 = (0..head_dim)
                                .map(|i| q.data[at(query, i)] * k.data[at(key, i)])
                                .sum();
                            dot / (head_dim as f32).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f32 = weights.iter().sum();
                    for i in 0..head_dim {
                        out[at(query, i)] = (0..length)
                            .map(|key| weights[key] * v.data[at(key, i)])
                            .sum::<f32>()
                            / total;
                    }
                }
            }
        }
        pool.insert_f32(io::ATTENTION_OUTPUT, &Tensor::new(q.shape, out)?)
    }
}

fn float(file: &SafeTensors<'_>, name: &str) -> Tensor {
    let view = file.tensor(name).unwrap();
    let data = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::new(view.shape().to_vec(), data).unwrap()
}

fn export(attention: Attention, out: &Path) -> Engine {
    let options = DitExportOptions {
        compute: skyreels_graph::DType::F32,
        attention,
        link_weights: true,
    };
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dit/df/diffusers");
    let export = dit::export(&source, out, &options).unwrap();
    let manifest = skyreels_contract::Manifest {
        format_version: skyreels_contract::manifest::FORMAT_VERSION,
        producer: "test".into(),
        target: skyreels_contract::Target::Cpu,
        precision: skyreels_contract::Precision::Fp32,
        attention,
        dit: Some(export.component),
        vae: None,
        text_encoder: None,
        image_encoder: None,
        build: None,
        source: None,
    };
    manifest.save(out).unwrap();
    Engine::open(out).unwrap()
}

/// The latents, timesteps and context of the DF DiT fixture case `name`.
fn fixture_inputs(name: &str) -> (Tensor, Tensor, Tensor) {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../tests/fixtures/dit/df/cases/{name}.safetensors"
    ));
    let bytes = fs_err::read(case).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    (
        float(&file, "latents"),
        float(&file, "timesteps"),
        float(&file, "context"),
    )
}

#[test]
fn a_ragged_last_frame_block_matches_a_dense_mask() {
    let (latents, timesteps, context) = fixture_inputs("df_async");
    assert_eq!(
        latents.shape[2], 3,
        "3 latent frames: blocks of 2 leave a last block of 1"
    );
    let inputs = DitInputs {
        latents: &latents,
        timesteps: &timesteps,
        context: &context,
        fps: Some(&[1]),
        image_context: None,
    };
    let backend = Backend::Cpu { threads: 2 };
    for attention in [
        Attention::MatMul,
        Attention::ContribMha,
        Attention::OnnxAttention,
    ] {
        let directory = tempfile::tempdir().unwrap();
        let engine = export(attention, directory.path());
        let num_heads = engine.manifest.dit.as_ref().unwrap().config.num_heads;
        let prefix = Dit::load(&engine, &backend, Some(2))
            .unwrap()
            .forward(&inputs)
            .unwrap();
        let mut dense = Dit::load(&engine, &backend, Some(2)).unwrap();
        dense.set_attention(Box::new(DenseMaskAttention {
            num_heads,
            causal_block_size: 2,
        }));
        let dense = dense.forward(&inputs).unwrap();
        let full = Dit::load(&engine, &backend, None)
            .unwrap()
            .forward(&inputs)
            .unwrap();
        let error = prefix.max_abs_diff(&dense);
        let causality = prefix.max_abs_diff(&full);
        eprintln!(
            "{}: prefix vs dense mask {error:.3e}; block-causal vs full {causality:.3e}",
            attention.name()
        );
        assert!(error <= 1e-5, "{}: {error}", attention.name());
        assert!(causality > 1e-3, "the mask must matter: {causality}");
    }
}

#[test]
fn a_dit_whose_layer_weights_were_released_refuses_a_forward() {
    let (latents, timesteps, context) = fixture_inputs("df_sync");
    let inputs = DitInputs {
        latents: &latents,
        timesteps: &timesteps,
        context: &context,
        fps: Some(&[1]),
        image_context: None,
    };
    let directory = tempfile::tempdir().unwrap();
    let engine = export(Attention::MatMul, directory.path());
    let mut dit = Dit::load(&engine, &Backend::Cpu { threads: 1 }, None).unwrap();
    dit.forward(&inputs).unwrap();
    assert!(!dit.is_released());
    dit.release_layer_weights();
    assert!(dit.is_released());
    assert_eq!(dit.placement(), WeightPlacement::Resident);
    let message = dit.forward(&inputs).unwrap_err().to_string();
    assert!(
        message.contains("the DiT's layer weights were released after sampling"),
        "{message}"
    );
}
