//! Classifier-free guidance on two rank groups (`--cfg-parallel`): a [`Denoiser`] that runs only
//! this rank's branch, all-gathers the two velocities with its guidance pair (conditional rank
//! first), and answers the sampler's two calls per row from that exchange. Both ranks then
//! combine and step with the same host arithmetic, so their latents stay bit-identical and the
//! sampling loop is unchanged. TeaCache state is only ever touched for this rank's own branch.

use super::communicator::Communicator;
use super::error::ParallelError;
use crate::error::{Result, RuntimeError};
use crate::pipeline::denoiser::Denoiser;
use crate::teacache::{Branch, TeaCache};
use crate::tensor::Tensor;

/// This rank's branch of a guidance pair around `inner`.
pub struct GuidancePair<D: Denoiser, C: Communicator> {
    inner: D,
    branch: Branch,
    pair: C,
    /// Exchange buffers, reallocated only when the velocity size changes (a new window shape).
    buffers: Option<(usize, C::Buffer, C::Buffer)>,
    unconditional: Option<Tensor>,
}

impl<D: Denoiser, C: Communicator> GuidancePair<D, C> {
    /// Wraps `inner` for `branch` on `pair` (a two-rank communicator whose rank 0 holds the
    /// conditional branch, as [`Communicator::split`] by the guidance color gives).
    pub fn new(inner: D, branch: Branch, pair: C) -> Result<GuidancePair<D, C>> {
        let expected_rank = usize::from(branch == Branch::Unconditional);
        if pair.size() != 2 || pair.rank() != expected_rank {
            return Err(RuntimeError::Parallel(ParallelError::Buffer(format!(
                "a guidance pair is two ranks with the conditional one first; got rank {} of {} for the {branch:?} branch",
                pair.rank(),
                pair.size()
            ))));
        }
        Ok(GuidancePair {
            inner,
            branch,
            pair,
            buffers: None,
            unconditional: None,
        })
    }

    /// The wrapped denoiser.
    pub fn into_inner(self) -> D {
        self.inner
    }

    fn exchange(&mut self, own: &Tensor) -> Result<(Tensor, Tensor)> {
        let count = own.data.len();
        if self.buffers.as_ref().map(|(n, _, _)| *n) != Some(count) {
            let send = self.pair.allocate(count * 4)?;
            let receive = self.pair.allocate(count * 8)?;
            self.buffers = Some((count, send, receive));
        }
        let (_, send, receive) = self.buffers.as_mut().expect("allocated above");
        let concat = super::axis::Concat::new(vec![count], 0, 2, 4)?;
        self.pair.write(send, bytemuck::cast_slice(&own.data))?;
        self.pair.all_gather(send, receive, &concat)?;
        let mut both = vec![0.0f32; 2 * count];
        self.pair
            .read(receive, bytemuck::cast_slice_mut(&mut both))?;
        let unconditional = both.split_off(count);
        Ok((
            Tensor::new(own.shape.clone(), both)?,
            Tensor::new(own.shape.clone(), unconditional)?,
        ))
    }
}

impl<D: Denoiser, C: Communicator> Denoiser for GuidancePair<D, C> {
    fn velocity(
        &mut self,
        latents: &Tensor,
        timesteps: &[f32],
        branch: Branch,
        row: usize,
        cache: Option<&mut TeaCache>,
    ) -> Result<Tensor> {
        match branch {
            Branch::Conditional => {
                let own = self
                    .inner
                    .velocity(latents, timesteps, self.branch, row, cache)?;
                let (conditional, unconditional) = self.exchange(&own)?;
                self.unconditional = Some(unconditional);
                Ok(conditional)
            }
            Branch::Unconditional => self.unconditional.take().ok_or_else(|| {
                RuntimeError::Invalid(
                    "the unconditional velocity was asked for before the conditional one of the same row"
                        .into(),
                )
            }),
        }
    }

    fn has_unconditional(&self) -> bool {
        true
    }

    fn release_after_sampling(&mut self) {
        self.inner.release_after_sampling();
    }
}
