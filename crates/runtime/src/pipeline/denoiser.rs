//! The DiT as the sampling loop sees it: latents and per-frame timesteps in, velocity out, for
//! one guidance branch, or both at once; TeaCache decisions are taken here with state owned by the
//! loop. With streamed weights both branches pass each layer before its weights leave.

use skyreels_contract::io;

use crate::dit::placement::WeightPlacement;
use crate::dit::{Dit, DitInputs};
use crate::error::Result;
use crate::session::TensorPool;
use crate::teacache::{Branch, Decision, TeaCache};
use crate::tensor::Tensor;

/// Predicts the flow velocity for one branch.
pub trait Denoiser {
    /// Velocity `[1, 16, F, H, W]` for latents `[1, C, F, H, W]` at per-frame `timesteps`.
    fn velocity(
        &mut self,
        latents: &Tensor,
        timesteps: &[f32],
        branch: Branch,
        row: usize,
        cache: Option<&mut TeaCache>,
    ) -> Result<Tensor>;

    /// True when the unconditional branch exists (a negative prompt was encoded).
    fn has_unconditional(&self) -> bool;

    /// Called once every window is sampled, before the final decode, when the job frees its
    /// models as it goes: what only sampling needs (the DiT's layer weights) may be dropped.
    fn release_after_sampling(&mut self) {}

    /// The conditional and unconditional velocities of one row, each the one
    /// [`Denoiser::velocity`] gives; by default the two branches one after the other.
    fn guided_velocities(
        &mut self,
        latents: &Tensor,
        timesteps: &[f32],
        row: usize,
        cache: Option<&mut TeaCache>,
    ) -> Result<(Tensor, Tensor)> {
        one_after_the_other(self, latents, timesteps, row, cache)
    }
}

/// The conditional velocity, then the unconditional one (the default of
/// [`Denoiser::guided_velocities`]).
fn one_after_the_other<D: Denoiser + ?Sized>(
    denoiser: &mut D,
    latents: &Tensor,
    timesteps: &[f32],
    row: usize,
    mut cache: Option<&mut TeaCache>,
) -> Result<(Tensor, Tensor)> {
    let conditional = denoiser.velocity(
        latents,
        timesteps,
        Branch::Conditional,
        row,
        cache.as_deref_mut(),
    )?;
    let unconditional = denoiser.velocity(latents, timesteps, Branch::Unconditional, row, cache)?;
    Ok((conditional, unconditional))
}

/// The exported DiT with its text (and image) conditioning.
pub struct DitDenoiser {
    /// The model.
    pub dit: Dit,
    /// Prompt context `[1, 512, text_dim]`.
    pub context: Tensor,
    /// Negative prompt context, when guidance is on.
    pub negative_context: Option<Tensor>,
    /// CLIP context `[1, 257, image_dim]` (I2V).
    pub image_context: Option<Tensor>,
    /// fps bucket.
    pub fps: i64,
    /// Extra conditioning channels appended to the latents (I2V mask + image latents `[1, 20, F, H, W]`).
    pub condition: Option<Tensor>,
}

impl DitDenoiser {
    /// Embeds `latents` at `timesteps` with `branch`'s conditioning.
    fn embed(&mut self, latents: &Tensor, timesteps: &[f32], branch: Branch) -> Result<TensorPool> {
        let context = match branch {
            Branch::Conditional => &self.context,
            Branch::Unconditional => self.negative_context.as_ref().unwrap_or(&self.context),
        };
        let model_input = match &self.condition {
            Some(condition) => concat_channels(latents, condition),
            None => latents.clone(),
        };
        let timesteps = Tensor::new(vec![1, timesteps.len()], timesteps.to_vec())?;
        let fps = [self.fps];
        let inputs = DitInputs {
            latents: &model_input,
            timesteps: &timesteps,
            context,
            fps: Some(&fps),
            image_context: self.image_context.as_ref(),
        };
        self.dit.embed(&inputs)
    }

    /// TeaCache's decision for `branch` at `row` from the embedded `pool` (always compute
    /// without a cache); under sequence parallel the group's (collective).
    fn decide(
        &mut self,
        pool: &TensorPool,
        branch: Branch,
        row: usize,
        cache: Option<&mut TeaCache>,
    ) -> Result<Decision> {
        let Some(cache) = cache else {
            return Ok(Decision::Compute);
        };
        let probe_name = if cache.probes_modulation() {
            io::TIME_MODULATION
        } else {
            io::TIME_EMBEDDING
        };
        let probe = pool.to_host(probe_name)?;
        self.dit.agree(cache.decide(branch, row, &probe.data))
    }

    /// After the layers ran (`Compute`) or instead of them (`Reuse`): keeps or applies
    /// `branch`'s residual, then runs the head and returns the velocity.
    fn finish(
        &mut self,
        pool: &mut TensorPool,
        branch: Branch,
        decision: Decision,
        cache: Option<&mut TeaCache>,
    ) -> Result<Tensor> {
        if let Some(cache) = cache {
            match decision {
                Decision::Compute => {
                    let residual = self.dit.residual(pool)?;
                    cache.store_residual(branch, residual);
                }
                Decision::Reuse => {
                    let residual = cache
                        .take_residual(branch)
                        .expect("reuse is only decided with a stored residual");
                    let residual = self.dit.reuse(pool, residual)?;
                    cache.store_residual(branch, residual);
                }
            }
        }
        self.dit.head(pool)?;
        pool.to_host(io::VELOCITY)
    }
}

impl Denoiser for DitDenoiser {
    fn velocity(
        &mut self,
        latents: &Tensor,
        timesteps: &[f32],
        branch: Branch,
        row: usize,
        mut cache: Option<&mut TeaCache>,
    ) -> Result<Tensor> {
        let mut pool = self.embed(latents, timesteps, branch)?;
        let decision = self.decide(&pool, branch, row, cache.as_deref_mut())?;
        if decision == Decision::Compute {
            self.dit.blocks(&mut pool)?;
        }
        self.finish(&mut pool, branch, decision, cache)
    }

    fn has_unconditional(&self) -> bool {
        self.negative_context.is_some()
    }

    fn release_after_sampling(&mut self) {
        self.dit.release_layer_weights();
    }

    /// With streamed weights, the branches whose layers run pass each layer together (one copy
    /// of the weights per row instead of two); resident, one after the other as by default.
    fn guided_velocities(
        &mut self,
        latents: &Tensor,
        timesteps: &[f32],
        row: usize,
        mut cache: Option<&mut TeaCache>,
    ) -> Result<(Tensor, Tensor)> {
        if self.dit.placement() == WeightPlacement::Resident {
            return one_after_the_other(self, latents, timesteps, row, cache);
        }
        let branches = [Branch::Conditional, Branch::Unconditional];
        let mut pools = Vec::with_capacity(branches.len());
        let mut decisions = Vec::with_capacity(branches.len());
        for branch in branches {
            let pool = self.embed(latents, timesteps, branch)?;
            decisions.push(self.decide(&pool, branch, row, cache.as_deref_mut())?);
            pools.push(pool);
        }
        let mut computed: Vec<&mut TensorPool> = pools
            .iter_mut()
            .zip(&decisions)
            .filter(|(_, decision)| **decision == Decision::Compute)
            .map(|(pool, _)| pool)
            .collect();
        if !computed.is_empty() {
            self.dit.blocks_of(&mut computed)?;
        }
        let mut velocities = Vec::with_capacity(branches.len());
        for ((mut pool, branch), decision) in pools.into_iter().zip(branches).zip(decisions) {
            velocities.push(self.finish(&mut pool, branch, decision, cache.as_deref_mut())?);
        }
        let unconditional = velocities.pop().expect("two branches");
        let conditional = velocities.pop().expect("two branches");
        Ok((conditional, unconditional))
    }
}

/// Concatenates `[1, A, F, H, W]` and `[1, B, F, H, W]` along channels.
fn concat_channels(a: &Tensor, b: &Tensor) -> Tensor {
    let mut data = a.data.clone();
    data.extend_from_slice(&b.data);
    let mut shape = a.shape.clone();
    shape[1] += b.shape[1];
    Tensor { shape, data }
}
