//! Ulysses attention over any [`Communicator`]: sequence-sharded q, k, v `[B, S, N, D]` go through
//! an all-to-all to head-sharded full sequences `[B, S·W, N/W, D]`, attention runs there (block-
//! causal by query blocks over key prefixes, padding keys never attended), and a second
//! all-to-all brings the output back to the rank's tokens. The attention here is a host
//! reference; the DiT's attention seam replaces it with the engine's kernels.

use super::axis::AllToAll;
use super::communicator::Communicator;
use super::error::Result;
use super::shard::{AttentionBlock, TokenSharding, attention_blocks};

/// Scaled dot-product attention on host tensors `[B, L, N, D]` (queries and keys/values of the
/// same length), per block: each query row of a block attends to keys `0..keys_end`.
pub fn attend(
    query: &[f32],
    key: &[f32],
    value: &[f32],
    shape: [usize; 4],
    blocks: &[AttentionBlock],
) -> Vec<f32> {
    let [batch, length, heads, head_dim] = shape;
    assert_eq!(query.len(), batch * length * heads * head_dim);
    assert_eq!(key.len(), query.len());
    assert_eq!(value.len(), query.len());
    let scale = 1.0 / (head_dim as f64).sqrt();
    let at = |b: usize, t: usize, n: usize| ((b * length + t) * heads + n) * head_dim;
    let mut out = vec![0.0f32; query.len()];
    let mut scores = Vec::new();
    for b in 0..batch {
        for block in blocks {
            for t in block.queries.clone() {
                for n in 0..heads {
                    let q = &query[at(b, t, n)..at(b, t, n) + head_dim];
                    scores.clear();
                    scores.extend((0..block.keys_end).map(|s| {
                        let k = &key[at(b, s, n)..at(b, s, n) + head_dim];
                        q.iter()
                            .zip(k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale
                    }));
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let mut total = 0.0;
                    for score in scores.iter_mut() {
                        *score = (*score - max).exp();
                        total += *score;
                    }
                    let row = &mut out[at(b, t, n)..at(b, t, n) + head_dim];
                    for (d, slot) in row.iter_mut().enumerate() {
                        let sum: f64 = scores
                            .iter()
                            .enumerate()
                            .map(|(s, w)| w * value[at(b, s, n) + d] as f64)
                            .sum();
                        *slot = (sum / total) as f32;
                    }
                }
            }
        }
    }
    out
}

/// Sizes of one Ulysses attention layer on a group of `ranks` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UlyssesGeometry {
    /// Batch rows.
    pub batch: usize,
    /// How the real tokens are split.
    pub sharding: TokenSharding,
    /// Attention heads (divisible by the number of ranks).
    pub heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// `(causal_block_size, tokens_per_frame)` for block-causal attention.
    pub causal: Option<(usize, usize)>,
}

/// Ulysses attention with its communication buffers, allocated once.
pub struct UlyssesAttention<C: Communicator> {
    geometry: UlyssesGeometry,
    forward: AllToAll,
    backward: AllToAll,
    send: C::Buffer,
    receive: C::Buffer,
}

impl<C: Communicator> UlyssesAttention<C> {
    /// Allocates the buffers for `geometry` on `communicator`'s group.
    pub fn new(communicator: &mut C, geometry: UlyssesGeometry) -> Result<UlyssesAttention<C>> {
        let ranks = communicator.size();
        let shard_len = geometry.sharding.shard_len();
        let forward = AllToAll::sequence_to_heads(
            geometry.batch,
            shard_len,
            geometry.heads,
            geometry.head_dim,
            ranks,
            4,
        )?;
        let backward = AllToAll::heads_to_sequence(
            geometry.batch,
            shard_len,
            geometry.heads,
            geometry.head_dim,
            ranks,
            4,
        )?;
        let bytes = forward.bytes();
        Ok(UlyssesAttention {
            geometry,
            forward,
            backward,
            send: communicator.allocate(bytes)?,
            receive: communicator.allocate(bytes)?,
        })
    }

    fn exchange(&mut self, communicator: &mut C, data: &[f32], forward: bool) -> Result<Vec<f32>> {
        let exchange = if forward {
            &self.forward
        } else {
            &self.backward
        };
        communicator.write(&mut self.send, bytemuck::cast_slice(data))?;
        communicator.all_to_all(&self.send, &mut self.receive, exchange)?;
        let mut out = vec![0.0f32; data.len()];
        communicator.read(&self.receive, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// Collective: attention output `[B, S, N, D]` for this rank's shards of q, k, v `[B, S, N, D]`.
    pub fn run(
        &mut self,
        communicator: &mut C,
        query: &[f32],
        key: &[f32],
        value: &[f32],
    ) -> Result<Vec<f32>> {
        let geometry = self.geometry;
        let query = self.exchange(communicator, query, true)?;
        let key = self.exchange(communicator, key, true)?;
        let value = self.exchange(communicator, value, true)?;
        let padded = geometry.sharding.padded_len();
        let blocks = attention_blocks(geometry.sharding.num_tokens, padded, geometry.causal);
        let heads = geometry.heads / communicator.size();
        let out = attend(
            &query,
            &key,
            &value,
            [geometry.batch, padded, heads, geometry.head_dim],
            &blocks,
        );
        self.exchange(communicator, &out, false)
    }
}
