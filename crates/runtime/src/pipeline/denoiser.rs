//! The DiT as the sampling loop sees it: latents and per-frame timesteps in, velocity out, for
//! one guidance branch; TeaCache decisions are taken here with state owned by the loop.

use skyreels_contract::io;

use crate::dit::{Dit, DitInputs};
use crate::error::Result;
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

impl Denoiser for DitDenoiser {
    fn velocity(
        &mut self,
        latents: &Tensor,
        timesteps: &[f32],
        branch: Branch,
        row: usize,
        cache: Option<&mut TeaCache>,
    ) -> Result<Tensor> {
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
        let mut pool = self.dit.embed(&inputs)?;
        match cache {
            None => self.dit.blocks(&mut pool)?,
            Some(cache) => {
                let probe_name = if cache.probes_modulation() {
                    io::TIME_MODULATION
                } else {
                    io::TIME_EMBEDDING
                };
                let probe = pool.to_host(probe_name)?;
                match self.dit.agree(cache.decide(branch, row, &probe.data))? {
                    Decision::Compute => {
                        self.dit.blocks(&mut pool)?;
                        let residual = self.dit.residual(&mut pool)?;
                        cache.store_residual(branch, residual);
                    }
                    Decision::Reuse => {
                        let residual = cache
                            .take_residual(branch)
                            .expect("reuse is only decided with a stored residual");
                        let residual = self.dit.reuse(&mut pool, residual)?;
                        cache.store_residual(branch, residual);
                    }
                }
            }
        }
        self.dit.head(&mut pool)?;
        pool.to_host(io::VELOCITY)
    }

    fn has_unconditional(&self) -> bool {
        self.negative_context.is_some()
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
