//! The DiT's sequence-parallel seam (Ulysses, `crate::parallel::sequence`): `embed` runs on the
//! whole latent on every rank; before the layers (or TeaCache's reuse) the pool's tokens, RoPE
//! tables and modulation are replaced by this rank's slice; self-attention exchanges q, k, v with
//! the group; the head runs on the slice and its per-token outputs are gathered back into the
//! full velocity. TeaCache's probe is read from the full pool before the slicing, and the group
//! takes one decision so that no rank skips a collective the others run.

use super::attention::SelfAttention;
use crate::error::Result;
use crate::session::{GraphSession, TensorPool};
use crate::teacache::Decision;

/// One rank's share of a sequence-parallel DiT forward.
pub trait SequenceParallel: SelfAttention {
    /// Replaces the full-sequence `embed` outputs in `pool` by this rank's slice (once per
    /// forward, before the layers or TeaCache's reuse).
    fn shard(&mut self, pool: &mut TensorPool) -> Result<()>;

    /// Collective: runs `head` on this rank's slice and leaves the whole `velocity` in `pool`.
    fn head(&mut self, head: &mut GraphSession, pool: &mut TensorPool) -> Result<()>;

    /// Collective: the group's TeaCache decision (its first rank's).
    fn agree(&mut self, decision: Decision) -> Result<Decision>;
}
