//! Ulysses sequence sharding as pure functions: which tokens a rank holds (contiguous slices,
//! padded at the end when the token count does not divide), the exact removal of that padding
//! after the gather, and the matching slices of the RoPE tables and the per-frame modulation.
//! Tokens are frame-major (`embed` patches 1×2×2): token `t` belongs to frame
//! `t / tokens_per_frame`, `tokens_per_frame = (H/2)·(W/2)` in latent pixels (docs/GRAPHS.md).
//! Upstream (`xdit_context_parallel.py`) requires the count to divide; padding lifts that.

use std::ops::Range;

use super::error::{Result, config_error};

/// How one sequence of `num_tokens` is split over `ranks` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSharding {
    /// Real tokens in the sequence.
    pub num_tokens: usize,
    /// Ranks of the Ulysses group.
    pub ranks: usize,
}

/// One rank's part of the sequence: `real` tokens of the global sequence, then padding up to
/// `shard_len` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenShard {
    /// Global token range of the real tokens (empty when the rank holds only padding).
    pub real: Range<usize>,
    /// Rows every rank holds (real + padding).
    pub shard_len: usize,
}

impl TokenShard {
    /// Padding rows at the end of this shard.
    pub fn padding(&self) -> usize {
        self.shard_len - self.real.len()
    }
}

impl TokenSharding {
    /// A sharding of `num_tokens` over `ranks` ranks.
    pub fn new(num_tokens: usize, ranks: usize) -> Result<TokenSharding> {
        if ranks == 0 || num_tokens == 0 {
            return Err(config_error(
                format!("cannot shard {num_tokens} tokens over {ranks} ranks"),
                "use at least one token and one rank",
            ));
        }
        Ok(TokenSharding { num_tokens, ranks })
    }

    /// Rows per rank: `⌈num_tokens / ranks⌉`.
    pub fn shard_len(&self) -> usize {
        self.num_tokens.div_ceil(self.ranks)
    }

    /// The sequence length after padding: `shard_len · ranks`.
    pub fn padded_len(&self) -> usize {
        self.shard_len() * self.ranks
    }

    /// Padding rows in total (all at the end of the sequence).
    pub fn padding(&self) -> usize {
        self.padded_len() - self.num_tokens
    }

    /// The shard of `rank`.
    pub fn shard(&self, rank: usize) -> TokenShard {
        assert!(rank < self.ranks, "rank {rank} of {}", self.ranks);
        let shard_len = self.shard_len();
        let start = (rank * shard_len).min(self.num_tokens);
        let end = ((rank + 1) * shard_len).min(self.num_tokens);
        TokenShard {
            real: start..end,
            shard_len,
        }
    }
}

/// `rank`'s rows of a `[batch, num_tokens, row]` tensor as `[batch, shard_len, row]`, padding
/// rows filled with `pad`.
pub fn take_shard<T: Copy>(
    tokens: &[T],
    batch: usize,
    row: usize,
    sharding: &TokenSharding,
    rank: usize,
    pad: T,
) -> Vec<T> {
    assert_eq!(tokens.len(), batch * sharding.num_tokens * row);
    let shard = sharding.shard(rank);
    let mut out = Vec::with_capacity(batch * shard.shard_len * row);
    for b in 0..batch {
        let base = b * sharding.num_tokens * row;
        out.extend_from_slice(&tokens[base + shard.real.start * row..base + shard.real.end * row]);
        out.extend(std::iter::repeat_n(pad, shard.padding() * row));
    }
    out
}

/// The gathered `[batch, padded_len, row]` (rank shards in rank order) without the padding:
/// exactly `[batch, num_tokens, row]`.
pub fn drop_padding<T: Copy>(
    gathered: &[T],
    batch: usize,
    row: usize,
    sharding: &TokenSharding,
) -> Vec<T> {
    let padded = sharding.padded_len();
    assert_eq!(gathered.len(), batch * padded * row);
    let mut out = Vec::with_capacity(batch * sharding.num_tokens * row);
    for b in 0..batch {
        let base = b * padded * row;
        out.extend_from_slice(&gathered[base..base + sharding.num_tokens * row]);
    }
    out
}

/// The frames a shard touches and, per shard row, the index of its frame among them: what a
/// sharded `blocks` graph needs to apply the per-frame modulation `[B, F, 6, D]` to its tokens
/// without expanding it per token over the whole sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSlice {
    /// Global frames whose modulation the shard uses.
    pub frames: Range<usize>,
    /// Per shard row (`shard_len`), the frame's index within `frames`; padding rows repeat the
    /// last frame (their outputs are dropped).
    pub token_frame: Vec<i64>,
}

/// The frames of `rank`'s tokens when every frame has `tokens_per_frame` tokens.
pub fn frame_slice(sharding: &TokenSharding, rank: usize, tokens_per_frame: usize) -> FrameSlice {
    assert!(tokens_per_frame > 0 && sharding.num_tokens.is_multiple_of(tokens_per_frame));
    let shard = sharding.shard(rank);
    let frames = if shard.real.is_empty() {
        let last = sharding.num_tokens / tokens_per_frame - 1;
        last..last + 1
    } else {
        shard.real.start / tokens_per_frame..(shard.real.end - 1) / tokens_per_frame + 1
    };
    let last_local = (frames.len() - 1) as i64;
    let token_frame = (0..shard.shard_len)
        .map(|row| match shard.real.start + row {
            t if t < shard.real.end => (t / tokens_per_frame - frames.start) as i64,
            _ => last_local,
        })
        .collect();
    FrameSlice {
        frames,
        token_frame,
    }
}

/// The frames `slice.frames` of a per-frame tensor `[batch, num_frames, row]` (e.g. the time
/// modulation with `row = 6·D`).
pub fn slice_frames(
    per_frame: &[f32],
    batch: usize,
    num_frames: usize,
    row: usize,
    frames: &Range<usize>,
) -> Vec<f32> {
    assert_eq!(per_frame.len(), batch * num_frames * row);
    let mut out = Vec::with_capacity(batch * frames.len() * row);
    for b in 0..batch {
        let base = (b * num_frames) * row;
        out.extend_from_slice(&per_frame[base + frames.start * row..base + frames.end * row]);
    }
    out
}

/// A sliced per-frame tensor `[batch, slice.frames.len(), row]` expanded to the shard's rows,
/// `[batch, shard_len, row]` (reference for the graph's gather by `token_frame`).
pub fn expand_to_tokens(sliced: &[f32], batch: usize, row: usize, slice: &FrameSlice) -> Vec<f32> {
    let frames = slice.frames.len();
    assert_eq!(sliced.len(), batch * frames * row);
    let mut out = Vec::with_capacity(batch * slice.token_frame.len() * row);
    for b in 0..batch {
        for &frame in &slice.token_frame {
            let start = (b * frames + frame as usize) * row;
            out.extend_from_slice(&sliced[start..start + row]);
        }
    }
    out
}

/// One attention call of the block-causal rule: queries `queries` attend to keys `0..keys_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionBlock {
    /// Query rows (of the padded sequence).
    pub queries: Range<usize>,
    /// End of the key prefix (never past the real tokens: padding keys are never attended).
    pub keys_end: usize,
}

/// The attention calls over a (possibly padded) full sequence: one over everything without
/// `causal`, else one per block of `causal_block_size` frames over its key prefix (token `q` sees
/// `k` iff `⌊frame(k)/cbs⌋ ≤ ⌊frame(q)/cbs⌋`). Padding queries join the last block.
pub fn attention_blocks(
    num_tokens: usize,
    padded_len: usize,
    causal: Option<(usize, usize)>,
) -> Vec<AttentionBlock> {
    assert!(padded_len >= num_tokens && num_tokens > 0);
    let Some((causal_block_size, tokens_per_frame)) = causal else {
        return vec![AttentionBlock {
            queries: 0..padded_len,
            keys_end: num_tokens,
        }];
    };
    let block_tokens = causal_block_size * tokens_per_frame;
    assert!(block_tokens > 0);
    let mut blocks = Vec::new();
    let mut start = 0;
    while start < num_tokens {
        let end = (start + block_tokens).min(num_tokens);
        blocks.push(AttentionBlock {
            queries: start..end,
            keys_end: end,
        });
        start = end;
    }
    if let Some(last) = blocks.last_mut() {
        last.queries.end = padded_len;
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_contiguous_and_padded_at_the_end() {
        let sharding = TokenSharding::new(10, 4).unwrap();
        assert_eq!(
            (
                sharding.shard_len(),
                sharding.padded_len(),
                sharding.padding()
            ),
            (3, 12, 2)
        );
        let shards: Vec<_> = (0..4).map(|r| sharding.shard(r)).collect();
        assert_eq!(shards[0].real, 0..3);
        assert_eq!(shards[3].real, 9..10);
        assert_eq!(shards[3].padding(), 2);
        // 5 tokens over 4 ranks: the last rank holds only padding.
        let sparse = TokenSharding::new(5, 4).unwrap();
        assert_eq!(sparse.shard(2).real, 4..5);
        assert_eq!(sparse.shard(3).real, 5..5);
        assert_eq!(sparse.shard(3).padding(), 2);
        assert!(TokenSharding::new(0, 2).is_err());
        assert!(TokenSharding::new(4, 0).is_err());
    }

    #[test]
    fn shard_then_gather_then_drop_padding_is_exact() {
        for (tokens, ranks) in [(10, 4), (12, 4), (7, 3), (5, 4), (1, 2)] {
            let sharding = TokenSharding::new(tokens, ranks).unwrap();
            let (batch, row) = (2, 3);
            let full: Vec<f32> = (0..batch * tokens * row).map(|i| i as f32).collect();
            let mut gathered = vec![0.0; batch * sharding.padded_len() * row];
            let shard_rows = sharding.shard_len() * row;
            for rank in 0..ranks {
                let shard = take_shard(&full, batch, row, &sharding, rank, f32::NAN);
                // Gather along the sequence: batch row b of rank r lands at [b, r·S .. (r+1)·S].
                for b in 0..batch {
                    let to = b * sharding.padded_len() * row + rank * shard_rows;
                    gathered[to..to + shard_rows]
                        .copy_from_slice(&shard[b * shard_rows..(b + 1) * shard_rows]);
                }
            }
            let back = drop_padding(&gathered, batch, row, &sharding);
            assert_eq!(back, full, "{tokens} tokens over {ranks}");
        }
    }

    #[test]
    fn frame_slices_match_upstreams_expand_then_chunk() {
        // 3 frames of 4 tokens (a 4×4 latent after 2×2 patching), 5 ranks: shards of 3 rows cut
        // frames in the middle and the last rank is padding only.
        let (batch, frames, tokens_per_frame, row) = (2, 3, 4, 2);
        let sharding = TokenSharding::new(frames * tokens_per_frame, 5).unwrap();
        let modulation: Vec<f32> = (0..batch * frames * row).map(|i| i as f32).collect();
        // Upstream: expand per token, then chunk the token axis.
        let mut per_token = Vec::new();
        for b in 0..batch {
            for t in 0..frames * tokens_per_frame {
                let start = (b * frames + t / tokens_per_frame) * row;
                per_token.extend_from_slice(&modulation[start..start + row]);
            }
        }
        for rank in 0..5 {
            let slice = frame_slice(&sharding, rank, tokens_per_frame);
            let sliced = slice_frames(&modulation, batch, frames, row, &slice.frames);
            let expanded = expand_to_tokens(&sliced, batch, row, &slice);
            let shard = sharding.shard(rank);
            let expected = take_shard(&per_token, batch, row, &sharding, rank, f32::NAN);
            for b in 0..batch {
                let rows = shard.shard_len * row;
                let real = shard.real.len() * row;
                assert_eq!(
                    expanded[b * rows..b * rows + real],
                    expected[b * rows..b * rows + real],
                    "rank {rank}"
                );
            }
        }
        assert_eq!(
            frame_slice(&sharding, 1, tokens_per_frame),
            FrameSlice {
                frames: 0..2,
                token_frame: vec![0, 1, 1],
            }
        );
        assert_eq!(
            frame_slice(&sharding, 3, tokens_per_frame),
            FrameSlice {
                frames: 2..3,
                token_frame: vec![0, 0, 0],
            }
        );
        assert_eq!(frame_slice(&sharding, 4, tokens_per_frame).frames, 2..3);
    }

    #[test]
    fn attention_blocks_follow_the_prefix_rule_and_never_see_padding() {
        assert_eq!(
            attention_blocks(10, 12, None),
            vec![AttentionBlock {
                queries: 0..12,
                keys_end: 10
            }]
        );
        // 5 frames of 2 tokens, blocks of 2 frames: [0,4) [4,8) [8,10) + padding rows 10, 11.
        assert_eq!(
            attention_blocks(10, 12, Some((2, 2))),
            vec![
                AttentionBlock {
                    queries: 0..4,
                    keys_end: 4
                },
                AttentionBlock {
                    queries: 4..8,
                    keys_end: 8
                },
                AttentionBlock {
                    queries: 8..12,
                    keys_end: 10
                },
            ]
        );
    }
}
