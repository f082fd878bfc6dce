//! The DiT as three chained graphs (`embed` → `blocks` → `head`). The split lets TeaCache skip
//! `blocks` and reuse a cached residual; the block-causal `blocks` variant is chosen at load.

use skyreels_contract::io;
use skyreels_contract::manifest::DitComponent;

use crate::engine::Engine;
use crate::error::Result;
use crate::session::{Backend, GraphSession, TensorPool};
use crate::tensor::Tensor;

/// Conditioning for one DiT forward pass (batch `B`).
pub struct DitInputs<'a> {
    /// Latents `[B, C, F, H, W]`.
    pub latents: &'a Tensor,
    /// Per-frame timesteps `[B, F]`.
    pub timesteps: &'a Tensor,
    /// Text context `[B, 512, text_dim]`.
    pub context: &'a Tensor,
    /// fps bucket per batch row (0 = 16 fps, 1 = 24 fps); used only if the model has it.
    pub fps: Option<&'a [i64]>,
    /// CLIP image context `[B, 257, image_dim]` (I2V).
    pub image_context: Option<&'a Tensor>,
}

/// A loaded DiT.
pub struct Dit {
    /// Manifest entry.
    pub component: DitComponent,
    embed: GraphSession,
    blocks: GraphSession,
    head: GraphSession,
    causal_block_size: Option<i64>,
}

impl Dit {
    /// Loads the DiT graphs; `causal_block_size` selects the block-causal `blocks` variant.
    pub fn load(
        engine: &Engine,
        backend: &Backend,
        causal_block_size: Option<usize>,
    ) -> Result<Dit> {
        let component = engine.manifest.dit.clone().ok_or_else(|| {
            engine.error("has no DiT\n  fix: export a DiT checkpoint into it with skyreels-export")
        })?;
        let graph = |name: &str| {
            component
                .graphs
                .iter()
                .find(|g| g.name == name)
                .ok_or_else(|| {
                    engine.error(format!(
                        "manifest lists no DiT graph `{name}`; re-export the engine"
                    ))
                })
        };
        engine.check_backend(backend)?;
        let embed = GraphSession::load(&engine.dir, graph("embed")?, backend)?;
        let head = GraphSession::load(&engine.dir, graph("head")?, backend)?;
        let blocks = match causal_block_size {
            Some(_) => {
                let entry = component.blocks_causal.as_ref().ok_or_else(|| {
                    engine.error(
                        "has no block-causal blocks graph\n  fix: re-export without --no-causal",
                    )
                })?;
                GraphSession::load(&engine.dir, entry, backend)?
            }
            None => GraphSession::load(&engine.dir, graph("blocks")?, backend)?,
        };
        Ok(Dit {
            component,
            embed,
            blocks,
            head,
            causal_block_size: causal_block_size.map(|s| s as i64),
        })
    }

    /// Runs `embed`, leaving its outputs (tokens, modulation, context, RoPE) in the returned pool.
    pub fn embed(&mut self, inputs: &DitInputs<'_>) -> Result<TensorPool> {
        let mut pool = TensorPool::new();
        pool.insert_f32(io::LATENTS, inputs.latents)?;
        pool.insert_f32(io::TIMESTEPS, inputs.timesteps)?;
        pool.insert_f32(io::CONTEXT, inputs.context)?;
        if self.component.config.inject_sample_info {
            let batch = inputs.latents.shape[0];
            let fps = inputs
                .fps
                .map(<[i64]>::to_vec)
                .unwrap_or_else(|| vec![1; batch]);
            pool.insert_i64(io::FPS, vec![batch], fps)?;
        }
        if let Some(image) = inputs.image_context {
            pool.insert_f32(io::IMAGE_CONTEXT, image)?;
        }
        if let Some(size) = self.causal_block_size {
            pool.insert_i64(io::CAUSAL_BLOCK_SIZE, vec![1], vec![size])?;
        }
        self.embed.run(&mut pool)?;
        Ok(pool)
    }

    /// Runs the transformer blocks on an embedded pool (adds `block_tokens`).
    pub fn blocks(&mut self, pool: &mut TensorPool) -> Result<()> {
        self.blocks.run(pool)
    }

    /// Runs the head (adds `velocity`).
    pub fn head(&mut self, pool: &mut TensorPool) -> Result<()> {
        self.head.run(pool)
    }

    /// A full forward pass: the flow-matching velocity `[B, 16, F, H, W]`.
    pub fn forward(&mut self, inputs: &DitInputs<'_>) -> Result<Tensor> {
        let mut pool = self.embed(inputs)?;
        self.blocks(&mut pool)?;
        self.head(&mut pool)?;
        pool.to_host(io::VELOCITY)
    }
}
