//! The DiT as three chained graphs (`embed` → `blocks` → `head`). The split lets TeaCache skip
//! `blocks` and reuse a cached residual; the block-causal `blocks` variant is chosen at load.

use skyreels_contract::io;
use skyreels_contract::manifest::{Component, DitComponent};

use crate::engine::Engine;
use crate::error::Result;
use crate::session::{Backend, GraphSession, TensorPool};
use crate::teacache::Residual;
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
    /// `teacache_residual` and `teacache_reuse`, when the engine has them.
    teacache: Option<(GraphSession, GraphSession)>,
    causal_block_size: Option<i64>,
}

impl Dit {
    /// Loads the DiT graphs; `causal_block_size` selects the block-causal `blocks` variant.
    pub fn load(
        engine: &Engine,
        backend: &Backend,
        causal_block_size: Option<usize>,
    ) -> Result<Dit> {
        let component = engine
            .manifest
            .dit
            .clone()
            .ok_or_else(|| engine.missing(Component::Dit))?;
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
        let teacache_graph = |name: &str| component.teacache.iter().find(|g| g.name == name);
        let teacache = match (
            teacache_graph("teacache_residual"),
            teacache_graph("teacache_reuse"),
        ) {
            (Some(residual), Some(reuse)) => Some((
                GraphSession::load(&engine.dir, residual, backend)?,
                GraphSession::load(&engine.dir, reuse, backend)?,
            )),
            _ => None,
        };
        Ok(Dit {
            component,
            embed,
            blocks,
            head,
            teacache,
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

    /// After `blocks`: what they added to the tokens, kept where the tokens are.
    pub fn residual(&mut self, pool: &mut TensorPool) -> Result<Residual> {
        match &mut self.teacache {
            Some((residual, _)) => {
                residual.run(pool)?;
                let value = pool.remove(io::TEACACHE_RESIDUAL).ok_or_else(|| {
                    crate::error::RuntimeError::Tensor {
                        name: io::TEACACHE_RESIDUAL.into(),
                        message: "not produced by graph `teacache_residual`".into(),
                    }
                })?;
                Ok(Residual::Value(value))
            }
            None => {
                let (before, after) = (
                    pool.to_host(io::PATCH_TOKENS)?,
                    pool.to_host(io::BLOCK_TOKENS)?,
                );
                let data = after
                    .data
                    .iter()
                    .zip(&before.data)
                    .map(|(a, b)| a - b)
                    .collect();
                Ok(Residual::Host(Tensor::new(after.shape, data)?))
            }
        }
    }

    /// Instead of `blocks`: the embedded tokens plus a cached residual (adds `block_tokens`).
    /// The residual is handed back for the next reuse.
    pub fn reuse(&mut self, pool: &mut TensorPool, residual: Residual) -> Result<Residual> {
        match (residual, &mut self.teacache) {
            (Residual::Value(value), Some((_, reuse))) => {
                pool.insert(io::TEACACHE_RESIDUAL, value);
                reuse.run(pool)?;
                let value = pool.remove(io::TEACACHE_RESIDUAL).expect("inserted above");
                Ok(Residual::Value(value))
            }
            (Residual::Value(_), None) => Err(crate::error::RuntimeError::Invalid(
                "a device residual needs the engine's teacache_reuse graph".into(),
            )),
            (Residual::Host(host), _) => {
                self.add_on_host(pool, &host)?;
                Ok(Residual::Host(host))
            }
        }
    }

    fn add_on_host(&self, pool: &mut TensorPool, residual: &Tensor) -> Result<()> {
        let tokens = pool.to_host(io::PATCH_TOKENS)?;
        let data = tokens
            .data
            .iter()
            .zip(&residual.data)
            .map(|(x, r)| x + r)
            .collect();
        pool.insert_f32(io::BLOCK_TOKENS, &Tensor::new(tokens.shape, data)?)
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
