//! The DiT as chained graphs: `embed`, then per transformer layer `block_qkv` → self-attention
//! ([`attention::SelfAttention`], the seam) → `block_out` with that layer's weights bound
//! ([`weights::LayerWeights`]), then `head`. Tokens stay where the graphs run from layer to layer.
//! TeaCache skips the layers and reuses a cached residual; block-causal attention is a choice of
//! query blocks at load, not another graph. With streamed weights ([`placement`], [`streaming`])
//! the layers bind their weights from two slots refilled one layer ahead, and several branches
//! pass a layer before its weights leave ([`Dit::blocks_of`]).

pub mod attention;
pub mod cuda_copier;
pub mod forward_file;
pub mod placement;
pub mod sequence;
pub mod streaming;
pub mod weights;

use skyreels_contract::io;
use skyreels_contract::manifest::{Component, DitComponent, GraphEntry};

use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::session::{Backend, GraphSession, TensorPool};
use crate::teacache::{Decision, Residual};
use crate::tensor::Tensor;
use attention::{GraphAttention, SelfAttention, query_block_ends};
use ort::value::DynValue;
use placement::WeightPlacement;
use sequence::SequenceParallel;
use streaming::{HostCopier, LayerCopier, stream_layers};
use weights::{LayerTable, LayerWeights};

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

/// Where the layers' weights are bound from.
enum Weights {
    /// Every layer's, loaded once.
    Resident(LayerWeights),
    /// Two slots refilled layer by layer from host memory.
    Streamed(Box<dyn LayerCopier>),
    /// Dropped once sampling was done ([`Dit::release_layer_weights`]); how they were held.
    Released(WeightPlacement),
}

/// A loaded DiT.
pub struct Dit {
    /// Manifest entry.
    pub component: DitComponent,
    embed: GraphSession,
    block_qkv: GraphSession,
    attention: Box<dyn SelfAttention>,
    block_out: GraphSession,
    weights: Weights,
    head: GraphSession,
    /// `teacache_residual` and `teacache_reuse`, when the engine has them.
    teacache: TeaCacheGraphs,
    causal_block_size: Option<usize>,
    /// Sequence parallel (Ulysses): this rank's slice, its attention and the head's gather.
    sequence: Option<Box<dyn SequenceParallel>>,
    engine_dir: std::path::PathBuf,
    backend: Backend,
}

/// The TeaCache graphs of an engine, loaded at their first use: a run without TeaCache holds no
/// sessions for them, and every CUDA session keeps about 150 MiB of device memory of its own
/// outside the shared arena (its cuBLAS and cuDNN handles; H200, run 10).
enum TeaCacheGraphs {
    /// The engine has none.
    Absent,
    /// `teacache_residual` and `teacache_reuse`, not loaded yet.
    Listed {
        residual: GraphEntry,
        reuse: GraphEntry,
    },
    /// Both sessions.
    Loaded {
        residual: GraphSession,
        reuse: GraphSession,
    },
}

impl TeaCacheGraphs {
    /// The two sessions (loading them the first time), `None` when the engine has none.
    fn sessions(
        &mut self,
        engine_dir: &std::path::Path,
        backend: &Backend,
    ) -> Result<Option<(&mut GraphSession, &mut GraphSession)>> {
        if let TeaCacheGraphs::Listed { residual, reuse } = self {
            *self = TeaCacheGraphs::Loaded {
                residual: GraphSession::load(engine_dir, residual, backend)?,
                reuse: GraphSession::load(engine_dir, reuse, backend)?,
            };
        }
        Ok(match self {
            TeaCacheGraphs::Loaded { residual, reuse } => Some((residual, reuse)),
            _ => None,
        })
    }
}

impl Dit {
    /// Loads the DiT graphs and every layer's weights; `causal_block_size` makes self-attention
    /// block-causal over blocks of that many latent frames.
    pub fn load(
        engine: &Engine,
        backend: &Backend,
        causal_block_size: Option<usize>,
    ) -> Result<Dit> {
        Dit::load_with(
            engine,
            backend,
            causal_block_size,
            WeightPlacement::Resident,
        )
    }

    /// [`Dit::load`] with the layers' weights held as `placement` says: resident, or streamed
    /// from host memory (pinned on GPUs) through two slots.
    pub fn load_with(
        engine: &Engine,
        backend: &Backend,
        causal_block_size: Option<usize>,
        placement: WeightPlacement,
    ) -> Result<Dit> {
        let component = engine
            .manifest
            .dit
            .clone()
            .ok_or_else(|| engine.missing(Component::Dit))?;
        if causal_block_size == Some(0) {
            return Err(RuntimeError::Invalid(
                "causal block size 0\n  fix: pass --causal-block-size 1 or more".into(),
            ));
        }
        let graph = |name: &str| engine.graph(&component.graphs, Component::Dit, name);
        engine.check_backend(backend)?;
        let embed = GraphSession::load(&engine.dir, graph("embed")?, backend)?;
        let block_qkv = GraphSession::load(&engine.dir, graph("block_qkv")?, backend)?;
        let attention = GraphSession::load(&engine.dir, graph("attention")?, backend)?;
        let block_out = GraphSession::load(&engine.dir, graph("block_out")?, backend)?;
        let head = GraphSession::load(&engine.dir, graph("head")?, backend)?;
        let block_graphs = [&block_qkv.entry, &block_out.entry];
        let weights = match (placement, block_qkv.device()) {
            (WeightPlacement::Resident, _) => Weights::Resident(LayerWeights::load(
                &engine.dir,
                &LayerTable::dit(&component),
                &block_graphs,
                block_qkv.device_upload()?.as_ref(),
            )?),
            (WeightPlacement::Streamed, None) => Weights::Streamed(Box::new(HostCopier::load(
                &engine.dir,
                &LayerTable::dit(&component),
                &block_graphs,
            )?)),
            (WeightPlacement::Streamed, Some(device)) => {
                let allocator = block_qkv.device_allocator()?.ok_or_else(|| {
                    RuntimeError::Invalid("a CUDA session without a device allocator".into())
                })?;
                Weights::Streamed(Box::new(cuda_copier::CudaCopier::load(
                    &engine.dir,
                    &LayerTable::dit(&component),
                    &block_graphs,
                    device,
                    allocator,
                )?))
            }
        };
        let teacache_graph = |name: &str| component.teacache.iter().find(|g| g.name == name);
        let teacache = match (
            teacache_graph("teacache_residual"),
            teacache_graph("teacache_reuse"),
        ) {
            (Some(residual), Some(reuse)) => {
                // Loaded at their first use, but checked now, before anything runs.
                for entry in [residual, reuse] {
                    crate::session::graph_file(&engine.dir, entry)?;
                }
                TeaCacheGraphs::Listed {
                    residual: residual.clone(),
                    reuse: reuse.clone(),
                }
            }
            _ => TeaCacheGraphs::Absent,
        };
        Ok(Dit {
            component,
            embed,
            block_qkv,
            attention: Box::new(GraphAttention::new(attention)?),
            block_out,
            weights,
            head,
            teacache,
            causal_block_size,
            sequence: None,
            engine_dir: engine.dir.clone(),
            backend: backend.clone(),
        })
    }

    /// Replaces the self-attention (the seam between `block_qkv` and `block_out`), e.g. by a
    /// distributed one; the layers then call `attention` instead of the engine's graph.
    pub fn set_attention(&mut self, attention: Box<dyn SelfAttention>) {
        self.attention = attention;
    }

    /// Makes the forward sequence parallel: `sequence` slices the embedded pool, replaces the
    /// self-attention and gathers the head's output (`crate::parallel::sequence`); `None` makes
    /// it whole again.
    pub fn set_sequence_parallel(&mut self, sequence: Option<Box<dyn SequenceParallel>>) {
        self.sequence = sequence;
    }

    /// The statistics of the arena the DiT allocates from (the GPU's, with per-session arenas the
    /// embedding graph's; or the process's CPU arena).
    pub fn arena_stats(&self) -> Result<Option<crate::cuda_arena::ArenaStats>> {
        self.embed.arena_stats()
    }

    /// The engine's attention graph over `heads` of the heads (`attention_heads_{heads}`), for a
    /// rank of a Ulysses group.
    pub fn load_sharded_attention(&self, heads: usize) -> Result<GraphAttention> {
        // A group of one attends over every head: the engine's own attention graph.
        let name = if heads == self.component.config.num_heads {
            "attention".to_string()
        } else {
            io::sharded_attention_graph(heads)
        };
        let entry = self
            .component
            .graphs
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| RuntimeError::Engine {
                path: self.engine_dir.clone(),
                message: format!(
                    "manifest lists no DiT graph `{name}` (attention over {heads} of {} heads, for sequence parallel)\n  fix: re-export the engine with this skyreels-export",
                    self.component.config.num_heads
                ),
            })?;
        GraphAttention::new(GraphSession::load(&self.engine_dir, entry, &self.backend)?)
    }

    /// Collective under sequence parallel: the TeaCache decision every rank of the group takes.
    pub fn agree(&mut self, decision: Decision) -> Result<Decision> {
        match &mut self.sequence {
            Some(sequence) => sequence.agree(decision),
            None => Ok(decision),
        }
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
        self.embed.run(&mut pool)?;
        Ok(pool)
    }

    /// How the layers' weights are held.
    pub fn placement(&self) -> WeightPlacement {
        match self.weights {
            Weights::Resident(_) => WeightPlacement::Resident,
            Weights::Streamed(_) => WeightPlacement::Streamed,
            Weights::Released(placement) => placement,
        }
    }

    /// Drops the layers' weights (device memory when resident, pinned host memory and the two
    /// slots when streamed), for a job that has sampled its last window and decodes next; a
    /// forward after this is refused.
    pub fn release_layer_weights(&mut self) {
        self.weights = Weights::Released(self.placement());
    }

    /// Whether [`Dit::release_layer_weights`] dropped the layers' weights.
    pub fn is_released(&self) -> bool {
        matches!(self.weights, Weights::Released(_))
    }

    /// Runs the transformer layers on an embedded pool (adds `block_tokens`). Each layer reads the
    /// previous layer's tokens (the first reads `patch_tokens`, which stays for TeaCache) and its
    /// own weights; its intermediate values leave the pool before the next layer starts.
    pub fn blocks(&mut self, pool: &mut TensorPool) -> Result<()> {
        self.blocks_of(&mut [pool])
    }

    /// [`Dit::blocks`] on several embedded pools (the guidance branches) layer by layer: every
    /// pool passes layer `i` before layer `i + 1` starts, so streamed weights are copied once for
    /// all of them. Each pool's result is the one [`Dit::blocks`] gives it alone.
    pub fn blocks_of(&mut self, pools: &mut [&mut TensorPool]) -> Result<()> {
        let mut query_ends = Vec::with_capacity(pools.len());
        for pool in pools.iter() {
            let num_tokens = pool.shape(io::PATCH_TOKENS)?[1];
            let num_frames = pool.shape(io::TIME_MODULATION)?[1];
            query_ends.push(query_block_ends(
                num_tokens,
                num_frames,
                self.causal_block_size,
            )?);
        }
        if let Some(sequence) = &mut self.sequence {
            for pool in pools.iter_mut() {
                sequence.shard(pool)?;
            }
        }
        let Dit {
            block_qkv,
            attention,
            block_out,
            weights,
            sequence,
            ..
        } = self;
        let attention: &mut dyn SelfAttention = match sequence {
            Some(sequence) => sequence.as_mut(),
            None => attention.as_mut(),
        };
        let mut graphs = LayerGraphs {
            block_qkv,
            attention,
            block_out,
        };
        match weights {
            Weights::Resident(resident) => {
                for layer in 0..resident.len() {
                    let weights = resident.layer(layer);
                    for (pool, ends) in pools.iter_mut().zip(&query_ends) {
                        graphs.run(pool, layer, &|name| weights.get(name), ends)?;
                    }
                }
            }
            Weights::Streamed(copier) => {
                stream_layers(copier.as_mut(), |copier, layer, slot| {
                    for (pool, ends) in pools.iter_mut().zip(&query_ends) {
                        graphs.run(pool, layer, &|name| copier.weight(slot, name), ends)?;
                    }
                    Ok(())
                })?;
            }
            Weights::Released(_) => {
                return Err(RuntimeError::Invalid(
                    "the DiT's layer weights were released after sampling\n  fix: load the DiT again for another forward"
                        .into(),
                ));
            }
        }
        for pool in pools.iter_mut() {
            let tokens = pool
                .remove(io::LAYER_TOKENS)
                .ok_or_else(|| RuntimeError::Tensor {
                    name: io::LAYER_OUTPUT.into(),
                    message: "not produced: the DiT has no transformer layers".into(),
                })?;
            pool.insert(io::BLOCK_TOKENS, tokens);
        }
        Ok(())
    }

    /// After `blocks`: what they added to the tokens, kept where the tokens are.
    pub fn residual(&mut self, pool: &mut TensorPool) -> Result<Residual> {
        match self.teacache.sessions(&self.engine_dir, &self.backend)? {
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
        if let Some(sequence) = &mut self.sequence {
            sequence.shard(pool)?;
        }
        match (
            residual,
            self.teacache.sessions(&self.engine_dir, &self.backend)?,
        ) {
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
        match &mut self.sequence {
            Some(sequence) => sequence.head(&mut self.head, pool),
            None => self.head.run(pool),
        }
    }

    /// A full forward pass: the flow-matching velocity `[B, 16, F, H, W]`.
    pub fn forward(&mut self, inputs: &DitInputs<'_>) -> Result<Tensor> {
        let mut pool = self.embed(inputs)?;
        self.blocks(&mut pool)?;
        self.head(&mut pool)?;
        pool.to_host(io::VELOCITY)
    }
}

/// The graphs of one transformer layer, borrowed from the [`Dit`] for a pass over the layers.
struct LayerGraphs<'a> {
    block_qkv: &'a mut GraphSession,
    attention: &'a mut dyn SelfAttention,
    block_out: &'a mut GraphSession,
}

impl LayerGraphs<'_> {
    /// Runs layer `layer` on `pool` with its weights looked up in `weights`; the layer's output
    /// replaces `layer_tokens` (the first layer reads `patch_tokens`).
    fn run<'w>(
        &mut self,
        pool: &mut TensorPool,
        layer: usize,
        weights: &dyn Fn(&str) -> Option<&'w DynValue>,
        query_ends: &[usize],
    ) -> Result<()> {
        let tokens = match layer {
            0 => io::PATCH_TOKENS,
            _ => io::LAYER_TOKENS,
        };
        let produced = self.block_qkv.run_with(|name| match name {
            io::LAYER_TOKENS => pool.get(tokens),
            _ => weights(name).or_else(|| pool.get(name)),
        })?;
        pool.extend(produced);
        self.attention.attend(pool, query_ends)?;
        for name in [io::QUERY, io::KEY, io::VALUE] {
            pool.remove(name);
        }
        let produced = self.block_out.run_with(|name| match name {
            io::LAYER_TOKENS => pool.get(tokens),
            _ => weights(name).or_else(|| pool.get(name)),
        })?;
        pool.remove(io::ATTENTION_OUTPUT);
        pool.extend(
            produced
                .into_iter()
                .map(|(name, value)| match name.as_str() {
                    io::LAYER_OUTPUT => (io::LAYER_TOKENS.to_string(), value),
                    _ => (name, value),
                }),
        );
        Ok(())
    }
}
