//! Ulysses sequence parallel in the DiT ([`crate::dit::sequence::SequenceParallel`]), after
//! `xdit_context_parallel.py` (SkyReels-V2, from Wan2.1) with padding instead of divisibility and
//! block-causal attention kept exact. Every rank of a group embeds the whole latent; `shard` keeps
//! this rank's contiguous token slice (`shard.rs`). The block graphs view tokens per frame (they
//! reshape `[B, L, D]` by the modulation's frame count), and a slice may cut frames, so the slice
//! is cut into groups of `g = gcd(tokens_per_frame, shard_len)` tokens that never straddle a frame
//! and the per-frame modulation is gathered per group (`FrameSlice`): `[B, S/g, 6, D]`, not per
//! token (`S` the slice's rows). Per layer: q, k, v `[B, S, D]` go through an all-to-all to `[B, S·W, D/W]` (all tokens,
//! `N/W` heads), the engine's attention over those heads (`attention_heads_{N/W}`) runs per query
//! block on key prefixes up to the real tokens (padding is never a key; padding queries get
//! zeros), and an all-to-all brings `[B, S, D]` back. The head runs on the slice as `S/g` groups
//! of `1×g` patches; its 64 values per token are all-gathered, the padding dropped, and the
//! velocity unpatchified on the host.

use std::time::Instant;

use ort::memory::Allocator;
use ort::value::{DynValue, TensorElementType};
use skyreels_contract::io;

use super::axis::{AllToAll, Concat};
use super::layout::agree;
use super::shard::{TokenSharding, frame_slice, slice_frames};
use super::values::{ValueTransfer, element_bytes, tensor_type};
use crate::device_upload::DeviceUpload;
use crate::dit::attention::{GraphAttention, SelfAttention};
use crate::dit::sequence::SequenceParallel;
use crate::error::{Result, RuntimeError};
use crate::session::{GraphSession, TensorPool};
use crate::teacache::Decision;
use crate::tensor::Tensor;

/// How the current forward's sequence is split (set by `shard`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slice {
    sharding: TokenSharding,
    /// Tokens per group: `gcd(tokens_per_frame, shard_len)`.
    group_len: usize,
    /// Latent frames, height and width of the whole latent.
    latent: [usize; 3],
}

impl Slice {
    fn groups(&self) -> usize {
        self.sharding.shard_len() / self.group_len
    }
}

/// Communication buffers for one slice length and dtype, allocated once per window shape.
struct Buffers<B> {
    key: (usize, usize),
    forward: AllToAll,
    backward: AllToAll,
    send: B,
    receive: B,
    /// The attention output's send side: only the real tokens are written, the padding rows
    /// stay zero from the allocation.
    output_send: B,
    output_receive: B,
}

/// The rank's rows of `rope_cos` and `rope_sin`, for one (bytes, real rows) `key`; their padding
/// rows hold the identity rotation (cos 1, sin 0), written once.
struct RopeBuffers<B> {
    key: (usize, usize),
    cos: B,
    sin: B,
}

/// One rank of a Ulysses group running the DiT's layers on its token slice.
pub struct UlyssesDit<C: ValueTransfer> {
    group: C,
    attention: GraphAttention,
    allocator: Option<Allocator>,
    num_heads: usize,
    head_dim: usize,
    out_dim: usize,
    slice: Option<Slice>,
    buffers: Option<Buffers<C::Buffer>>,
    gather: Option<(usize, C::Buffer, C::Buffer)>,
    /// The rank's rows of `patch_tokens`, keyed by (bytes, real rows).
    slice_buffer: Option<((usize, usize), C::Buffer)>,
    rope_buffers: Option<RopeBuffers<C::Buffer>>,
    decision: C::Buffer,
    /// Uploads to the GPU the graphs run on (CUDA): sliced inputs go there once per forward.
    upload: Option<DeviceUpload>,
    timings: Timings,
}

/// Where a rank's sequence-parallel time goes, logged when it is dropped.
#[derive(Debug, Default)]
struct Timings {
    forwards: usize,
    /// Slicing the embed outputs (the token rows where the graphs run, the rest on the host).
    slicing: f64,
    /// The four all-to-alls per layer, with the copies in and out of their buffers.
    all_to_all: f64,
    /// The head's gather and the unpatchify.
    gather: f64,
}

/// The velocity `[1, out, frames, height, width]` from the sliced head's outputs of every rank
/// in rank order, each `[out, groups, 2, 2·group_len]`: row `ph` of group `k` holds the 2×2
/// patches of the group's `group_len` tokens side by side (`column = 2·token + pw`). Padding
/// tokens (past the real ones, at the end of the last shards) are dropped.
fn unpatchify_rank_blocks(gathered: &[f32], slice: &Slice, out: usize) -> Result<Tensor> {
    let (groups, group_len) = (slice.groups(), slice.group_len);
    let width_in_block = 2 * group_len;
    let block = out * groups * 2 * width_in_block;
    let (shard_len, num_tokens) = (slice.sharding.shard_len(), slice.sharding.num_tokens);
    let [frames, height, width] = slice.latent;
    let (half_height, half_width) = (height / 2, width / 2);
    if gathered.len() != block * slice.sharding.ranks
        || num_tokens != frames * half_height * half_width
    {
        return Err(tensor_error(
            io::VELOCITY,
            format!(
                "{} gathered values do not make {} ranks of [{out}, {groups}, 2, {width_in_block}] for {num_tokens} tokens of {:?}",
                gathered.len(),
                slice.sharding.ranks,
                slice.latent
            ),
        ));
    }
    let mut full = vec![0.0f32; out * frames * height * width];
    for (rank, values) in gathered.chunks_exact(block).enumerate() {
        for c in 0..out {
            for group in 0..groups {
                for ph in 0..2 {
                    let base = ((c * groups + group) * 2 + ph) * width_in_block;
                    for column in 0..width_in_block {
                        let token = rank * shard_len + group * group_len + column / 2;
                        if token >= num_tokens {
                            break;
                        }
                        let frame = token / (half_height * half_width);
                        let y = token / half_width % half_height;
                        let x = token % half_width;
                        let at = ((c * frames + frame) * height + 2 * y + ph) * width
                            + 2 * x
                            + column % 2;
                        full[at] = values[base + column];
                    }
                }
            }
        }
    }
    Tensor::new(vec![1, out, frames, height, width], full)
}

impl<C: ValueTransfer> UlyssesDit<C> {
    /// This rank of `group` (its Ulysses group), with the engine's attention over
    /// `num_heads / group.size()` heads (`Dit::load_sharded_attention`); `out_dim` is the
    /// velocity's channels.
    pub fn new(
        mut group: C,
        attention: GraphAttention,
        num_heads: usize,
        head_dim: usize,
        out_dim: usize,
    ) -> Result<UlyssesDit<C>> {
        if !num_heads.is_multiple_of(group.size()) {
            return Err(RuntimeError::Invalid(format!(
                "{num_heads} heads do not split over a Ulysses group of {}",
                group.size()
            )));
        }
        let allocator = attention.session().device_allocator()?;
        let upload = attention.session().device_upload()?;
        let decision = group.allocate(1)?;
        Ok(UlyssesDit {
            group,
            attention,
            allocator,
            num_heads,
            head_dim,
            out_dim,
            slice: None,
            buffers: None,
            gather: None,
            slice_buffer: None,
            rope_buffers: None,
            decision,
            upload,
            timings: Timings::default(),
        })
    }

    /// Replaces `rope_cos` and `rope_sin` `[tokens, columns]` in `pool` by the rows `real` of this
    /// rank, copied where the tables are (no trip through the host), then `shard_len - real.len()`
    /// padding rows of the identity rotation.
    fn slice_rope_rows(
        &mut self,
        pool: &mut TensorPool,
        real: std::ops::Range<usize>,
        shard_len: usize,
    ) -> Result<()> {
        let shape = pool.shape(io::ROPE_COS)?;
        let [_, columns] = shape[..] else {
            return Err(tensor_error(
                io::ROPE_COS,
                format!("is {shape:?}, expected [tokens, columns]"),
            ));
        };
        let bytes = shard_len * columns * 4;
        let key = (bytes, real.len());
        let UlyssesDit {
            group,
            rope_buffers,
            allocator,
            ..
        } = self;
        if rope_buffers.as_ref().map(|buffers| buffers.key) != Some(key) {
            *rope_buffers = None;
            let mut cos = group.allocate(bytes)?;
            let ones = vec![1.0f32; shard_len * columns];
            group.write(&mut cos, bytemuck::cast_slice(&ones))?;
            let sin = group.allocate(bytes)?;
            *rope_buffers = Some(RopeBuffers { key, cos, sin });
        }
        let RopeBuffers { cos, sin, .. } = rope_buffers.as_mut().expect("allocated above");
        for (name, buffer) in [(io::ROPE_COS, cos), (io::ROPE_SIN, sin)] {
            let table = produced(pool, name, "embed")?;
            let (dtype, table_shape) = tensor_type(table)?;
            if dtype != TensorElementType::Float32 || table_shape != shape {
                return Err(tensor_error(
                    name,
                    format!("is {dtype:?} {table_shape:?}, expected float32 {shape:?}"),
                ));
            }
            group.write_value_range(
                buffer,
                table,
                real.start * columns * 4..real.end * columns * 4,
            )?;
            let sliced = group.read_value(
                buffer,
                TensorElementType::Float32,
                &[shard_len, columns],
                allocator.as_ref(),
            )?;
            pool.insert(name, sliced);
        }
        Ok(())
    }

    /// Puts a host tensor into `pool` where the graphs run.
    fn insert(&self, pool: &mut TensorPool, name: &str, tensor: &Tensor) -> Result<()> {
        let Some(upload) = &self.upload else {
            return pool.insert_f32(name, tensor);
        };
        let value = upload.upload(
            TensorElementType::Float32,
            &tensor.shape,
            bytemuck::cast_slice(&tensor.data),
            &format!("`{name}`"),
        )?;
        pool.insert(name, value);
        Ok(())
    }

    fn slice(&self) -> Result<&Slice> {
        self.slice.as_ref().ok_or_else(|| {
            RuntimeError::Invalid("sequence parallel was used before the pool was sliced".into())
        })
    }

    fn buffers(&mut self, shard_len: usize, element: usize) -> Result<()> {
        if self.buffers.as_ref().map(|b| b.key) == Some((shard_len, element)) {
            return Ok(());
        }
        self.buffers = None;
        let ranks = self.group.size();
        let forward = AllToAll::sequence_to_heads(
            1,
            shard_len,
            self.num_heads,
            self.head_dim,
            ranks,
            element,
        )?;
        let backward = AllToAll::heads_to_sequence(
            1,
            shard_len,
            self.num_heads,
            self.head_dim,
            ranks,
            element,
        )?;
        let bytes = forward.bytes();
        self.group.reserve_staging(bytes)?;
        self.buffers = Some(Buffers {
            key: (shard_len, element),
            send: self.group.allocate(bytes)?,
            receive: self.group.allocate(bytes)?,
            output_send: self.group.allocate(bytes)?,
            output_receive: self.group.allocate(bytes)?,
            forward,
            backward,
        });
        Ok(())
    }
}

fn greatest_common_divisor(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        greatest_common_divisor(b, a % b)
    }
}

fn tensor_error(name: &str, message: String) -> RuntimeError {
    RuntimeError::Tensor {
        name: name.into(),
        message,
    }
}

/// `name` in `pool`, which graph `graph` should have produced.
fn produced<'p>(pool: &'p TensorPool, name: &str, graph: &str) -> Result<&'p DynValue> {
    pool.get(name)
        .ok_or_else(|| tensor_error(name, format!("not produced by graph `{graph}`")))
}

/// Rows of the per-frame tensor `[1, F, row]` for each group of a slice, `[1, groups, row]`.
fn per_group(
    per_frame: &Tensor,
    row: usize,
    frames: &std::ops::Range<usize>,
    group_frames: &[usize],
) -> Vec<f32> {
    let sliced = slice_frames(&per_frame.data, 1, per_frame.shape[1], row, frames);
    group_frames
        .iter()
        .flat_map(|&frame| sliced[frame * row..(frame + 1) * row].iter().copied())
        .collect()
}

impl<C> SelfAttention for UlyssesDit<C>
where
    C: ValueTransfer + Send,
    C::Buffer: Send,
{
    fn attend(&mut self, pool: &mut TensorPool, query_ends: &[usize]) -> Result<()> {
        let slice = self.slice()?.clone();
        let (dtype, shape) = tensor_type(produced(pool, io::QUERY, "block_qkv")?)?;
        let shard_len = slice.sharding.shard_len();
        let dim = self.num_heads * self.head_dim;
        if shape != [1, shard_len, dim] {
            return Err(tensor_error(
                io::QUERY,
                format!("is {shape:?}, expected this rank's slice [1, {shard_len}, {dim}]"),
            ));
        }
        if query_ends.last() != Some(&slice.sharding.num_tokens) {
            return Err(RuntimeError::Invalid(format!(
                "query blocks end at {:?}, not at the sequence's {} tokens",
                query_ends.last(),
                slice.sharding.num_tokens
            )));
        }
        self.buffers(shard_len, element_bytes(dtype)?)?;
        let started = Instant::now();
        let buffers = self.buffers.as_mut().expect("allocated above");
        let heads_dim = dim / self.group.size();
        let padded = slice.sharding.padded_len();
        let mut local = TensorPool::new();
        for name in [io::QUERY, io::KEY, io::VALUE] {
            let value = produced(pool, name, "block_qkv")?;
            self.group.write_value(&mut buffers.send, value)?;
            self.group
                .all_to_all(&buffers.send, &mut buffers.receive, &buffers.forward)?;
            let exchanged = self.group.read_value(
                &buffers.receive,
                dtype,
                &[1, padded, heads_dim],
                self.allocator.as_ref(),
            )?;
            local.insert(name, exchanged);
        }
        let exchanged = started.elapsed();
        self.attention.attend(&mut local, query_ends)?;
        let started = Instant::now();
        let output = local
            .remove(io::ATTENTION_OUTPUT)
            .ok_or_else(|| tensor_error(io::ATTENTION_OUTPUT, "not produced".into()))?;
        drop(local);
        self.group.write_value(&mut buffers.output_send, &output)?;
        self.group.all_to_all(
            &buffers.output_send,
            &mut buffers.output_receive,
            &buffers.backward,
        )?;
        let back = self.group.read_value(
            &buffers.output_receive,
            dtype,
            &[1, shard_len, dim],
            self.allocator.as_ref(),
        )?;
        pool.insert(io::ATTENTION_OUTPUT, back);
        self.timings.all_to_all += (exchanged + started.elapsed()).as_secs_f64();
        Ok(())
    }
}

impl<C> SequenceParallel for UlyssesDit<C>
where
    C: ValueTransfer + Send,
    C::Buffer: Send,
{
    fn shard(&mut self, pool: &mut TensorPool) -> Result<()> {
        let started = Instant::now();
        let rank = self.group.rank();
        let tokens = produced(pool, io::PATCH_TOKENS, "embed")?;
        let (dtype, shape) = tensor_type(tokens)?;
        let (num_tokens, dim) = match (dtype, shape.as_slice()) {
            (TensorElementType::Float32, [1, tokens, dim]) => (*tokens, *dim),
            _ => {
                return Err(tensor_error(
                    io::PATCH_TOKENS,
                    format!(
                        "is {dtype:?} {shape:?}; sequence parallel runs one float32 batch row [1, tokens, dim]"
                    ),
                ));
            }
        };
        let modulation = pool.to_host(io::TIME_MODULATION)?;
        let embedding = pool.to_host(io::TIME_EMBEDDING)?;
        let latents = pool.shape(io::LATENTS)?;
        let num_frames = modulation.shape[1];
        if num_frames == 0 || !num_tokens.is_multiple_of(num_frames) || latents.len() != 5 {
            return Err(tensor_error(
                io::PATCH_TOKENS,
                format!("{num_tokens} tokens do not split into {num_frames} frames of {latents:?}"),
            ));
        }
        let tokens_per_frame = num_tokens / num_frames;
        let sharding = TokenSharding::new(num_tokens, self.group.size())?;
        let shard_len = sharding.shard_len();
        let group_len = greatest_common_divisor(tokens_per_frame, shard_len);
        let frames = frame_slice(&sharding, rank, tokens_per_frame);
        let group_frames: Vec<usize> = (0..shard_len / group_len)
            .map(|group| frames.token_frame[group * group_len] as usize)
            .collect();
        let groups = group_frames.len();

        // The rank's rows stay where the graphs run; the padding rows are the slice buffer's
        // zeros (it is kept only while the number of real rows stays the same).
        let real = sharding.shard(rank).real;
        let key = (shard_len * dim * 4, real.len());
        if self.slice_buffer.as_ref().map(|(k, _)| *k) != Some(key) {
            self.slice_buffer = None;
            let buffer = self.group.allocate(key.0)?;
            self.slice_buffer = Some((key, buffer));
        }
        let (_, buffer) = self.slice_buffer.as_mut().expect("allocated above");
        self.group
            .write_value_range(buffer, tokens, real.start * dim * 4..real.end * dim * 4)?;
        let sliced = self.group.read_value(
            buffer,
            TensorElementType::Float32,
            &[1, shard_len, dim],
            self.allocator.as_ref(),
        )?;
        pool.insert(io::PATCH_TOKENS, sliced);
        self.slice_rope_rows(pool, real, shard_len)?;
        let row = 6 * dim;
        let modulation = per_group(&modulation, row, &frames.frames, &group_frames);
        self.insert(
            pool,
            io::TIME_MODULATION,
            &Tensor::new(vec![1, groups, 6, dim], modulation)?,
        )?;
        let embedding = per_group(&embedding, dim, &frames.frames, &group_frames);
        self.insert(
            pool,
            io::TIME_EMBEDDING,
            &Tensor::new(vec![1, groups, dim], embedding)?,
        )?;
        // The head reads the latents' shape only: groups of 1×g patches.
        let shape = vec![1, latents[1], groups, 2, 2 * group_len];
        let zeros = vec![0.0; shape.iter().product()];
        self.insert(pool, io::LATENTS, &Tensor::new(shape, zeros)?)?;
        self.timings.slicing += started.elapsed().as_secs_f64();
        self.timings.forwards += 1;
        self.slice = Some(Slice {
            sharding,
            group_len,
            latent: [latents[2], latents[3], latents[4]],
        });
        Ok(())
    }

    fn head(&mut self, head: &mut GraphSession, pool: &mut TensorPool) -> Result<()> {
        // Both guidance branches may be sliced before either head runs: same latents, same slice.
        let slice = self.slice()?.clone();
        head.run(pool)?;
        let started = Instant::now();
        let (out, groups, group_len) = (self.out_dim, slice.groups(), slice.group_len);
        let width = 2 * group_len;
        let value = produced(pool, io::VELOCITY, "head")?;
        let (dtype, shape) = tensor_type(value)?;
        if dtype != TensorElementType::Float32 || shape != [1, out, groups, 2, width] {
            return Err(tensor_error(
                io::VELOCITY,
                format!(
                    "is {dtype:?} {shape:?}, expected float32 [1, {out}, {groups}, 2, {width}] from the sliced head"
                ),
            ));
        }
        // Every rank's head output is gathered as it is (a device copy into the send buffer on
        // GPUs) and unpatchified from the rank blocks in one pass on the host, which reads the
        // velocity anyway.
        let ranks = self.group.size();
        let block = out * groups * 2 * width;
        let bytes = block * 4;
        if self.gather.as_ref().map(|g| g.0) != Some(bytes) {
            self.gather = None;
            let send = self.group.allocate(bytes)?;
            let receive = self.group.allocate(bytes * ranks)?;
            self.gather = Some((bytes, send, receive));
        }
        let (_, send, receive) = self.gather.as_mut().expect("allocated above");
        self.group.write_value_range(send, value, 0..bytes)?;
        let concat = Concat::new(vec![block], 0, ranks, 4)?;
        self.group.all_gather(send, receive, &concat)?;
        let mut gathered = vec![0.0f32; block * ranks];
        self.group
            .read(receive, bytemuck::cast_slice_mut(&mut gathered))?;
        let velocity = unpatchify_rank_blocks(&gathered, &slice, out)?;
        // The sampler reads the velocity on the host: it stays there.
        pool.insert_f32(io::VELOCITY, &velocity)?;
        self.timings.gather += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn agree(&mut self, decision: Decision) -> Result<Decision> {
        let reuse = agree(
            &mut self.group,
            &mut self.decision,
            decision == Decision::Reuse,
        )?;
        Ok(if reuse {
            Decision::Reuse
        } else {
            Decision::Compute
        })
    }
}

impl<C: ValueTransfer> Drop for UlyssesDit<C> {
    fn drop(&mut self) {
        let t = &self.timings;
        if t.forwards > 0 {
            tracing::info!(
                "sequence parallel: {} forwards on rank {} of {}: all-to-all {:.3} s, head gather {:.3} s, slicing {:.3} s",
                t.forwards,
                self.group.rank(),
                self.group.size(),
                t.all_to_all,
                t.gather,
                t.slicing
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_blocks_unpatchify_to_the_whole_velocity_without_the_padding() {
        // 1 frame of 4×6 latents: 6 tokens of 2×2 patches over 4 ranks (shards of 2 rows, the
        // last rank all padding), groups of 2 tokens; 2 channels.
        let (out, frames, height, width) = (2, 1, 4, 6);
        let slice = Slice {
            sharding: TokenSharding::new(6, 4).unwrap(),
            group_len: 2,
            latent: [frames, height, width],
        };
        let value = |c: usize, y: usize, x: usize| (c * 100 + y * 10 + x) as f32;
        let block = out * slice.groups() * 2 * 2 * slice.group_len;
        let mut gathered = vec![f32::NAN; block * 4];
        for rank in 0..4 {
            for c in 0..out {
                for ph in 0..2 {
                    for column in 0..2 * slice.group_len {
                        let token = rank * 2 + column / 2;
                        if token >= 6 {
                            continue;
                        }
                        let (y, x) = (token / 3, token % 3);
                        gathered[rank * block + (c * 2 + ph) * 2 * slice.group_len + column] =
                            value(c, 2 * y + ph, 2 * x + column % 2);
                    }
                }
            }
        }
        let velocity = unpatchify_rank_blocks(&gathered, &slice, out).unwrap();
        assert_eq!(velocity.shape, vec![1, out, frames, height, width]);
        let expected: Vec<f32> = (0..out)
            .flat_map(|c| (0..height).flat_map(move |y| (0..width).map(move |x| value(c, y, x))))
            .collect();
        assert_eq!(velocity.data, expected);
        assert!(unpatchify_rank_blocks(&gathered[1..], &slice, out).is_err());
    }
}
