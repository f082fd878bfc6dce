//! The memory layout of the Ulysses exchanges, as strided copies: an all-to-all splits one axis of
//! the local tensor into `parts` chunks (chunk `j` goes to rank `j`) and concatenates the chunks
//! received along another axis; an all-gather only concatenates. Sequence-sharded
//! `[B, L/W, N, D]` → head-sharded `[B, L, N/W, D]` is `scatter_axis = 2, gather_axis = 1`, and the
//! way back is `scatter_axis = 1, gather_axis = 2`. Each chunk's pack and unpack is one 2-D copy
//! (rows × bytes with pitches), so the host transport and the GPU transport (`cuMemcpy2DAsync`)
//! run the same descriptors.

use super::error::{ParallelError, Result};

/// A 2-D byte copy: `rows` rows of `row_bytes`, rows `source_pitch` / `destination_pitch` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StridedCopy {
    /// Number of rows.
    pub rows: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    /// Byte offset of the first row in the source.
    pub source_offset: usize,
    /// Bytes between source rows.
    pub source_pitch: usize,
    /// Byte offset of the first row in the destination.
    pub destination_offset: usize,
    /// Bytes between destination rows.
    pub destination_pitch: usize,
}

impl StridedCopy {
    /// Runs the copy on host memory.
    pub fn apply(&self, source: &[u8], destination: &mut [u8]) {
        for row in 0..self.rows {
            let from = self.source_offset + row * self.source_pitch;
            let to = self.destination_offset + row * self.destination_pitch;
            destination[to..to + self.row_bytes]
                .copy_from_slice(&source[from..from + self.row_bytes]);
        }
    }
}

fn product(values: &[usize]) -> usize {
    values.iter().product()
}

/// Concatenation of `parts` equal chunks (contiguous, one after the other in a staging buffer)
/// along `axis`: what an all-gather produces and the second half of an all-to-all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concat {
    /// Shape of one chunk.
    pub part_shape: Vec<usize>,
    /// Axis the chunks are concatenated along.
    pub axis: usize,
    /// Number of chunks (ranks).
    pub parts: usize,
    /// Bytes per element.
    pub element_bytes: usize,
}

impl Concat {
    /// A concatenation; the axis must exist.
    pub fn new(
        part_shape: Vec<usize>,
        axis: usize,
        parts: usize,
        element_bytes: usize,
    ) -> Result<Concat> {
        if axis >= part_shape.len() || parts == 0 || element_bytes == 0 {
            return Err(ParallelError::Buffer(format!(
                "cannot concatenate {parts} chunks of shape {part_shape:?} along axis {axis}"
            )));
        }
        Ok(Concat {
            part_shape,
            axis,
            parts,
            element_bytes,
        })
    }

    /// Bytes of one chunk.
    pub fn part_bytes(&self) -> usize {
        product(&self.part_shape) * self.element_bytes
    }

    /// Shape of the result.
    pub fn output_shape(&self) -> Vec<usize> {
        let mut shape = self.part_shape.clone();
        shape[self.axis] *= self.parts;
        shape
    }

    /// Bytes of the result.
    pub fn output_bytes(&self) -> usize {
        self.part_bytes() * self.parts
    }

    /// Whether the output is the chunks one after the other (nothing before the axis but ones),
    /// so a gather can write it directly.
    pub fn is_contiguous(&self) -> bool {
        product(&self.part_shape[..self.axis]) == 1
    }

    /// Chunk `part` (at `part · part_bytes` in the staging buffer) into its place in the output.
    pub fn copy(&self, part: usize) -> StridedCopy {
        let rows = product(&self.part_shape[..self.axis]);
        let row_bytes = product(&self.part_shape[self.axis..]) * self.element_bytes;
        StridedCopy {
            rows,
            row_bytes,
            source_offset: part * self.part_bytes(),
            source_pitch: row_bytes,
            destination_offset: part * row_bytes,
            destination_pitch: row_bytes * self.parts,
        }
    }

    /// Host reference: the output from the staging buffer of all chunks.
    pub fn unpack(&self, staging: &[u8]) -> Vec<u8> {
        assert_eq!(staging.len(), self.output_bytes());
        let mut output = vec![0; self.output_bytes()];
        for part in 0..self.parts {
            self.copy(part).apply(staging, &mut output);
        }
        output
    }
}

/// An all-to-all over `parts` ranks: the local tensor `shape` is split along `scatter_axis`
/// (chunk `j` to rank `j`) and the received chunks are concatenated along `gather_axis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllToAll {
    /// Shape of the local input.
    pub shape: Vec<usize>,
    /// Axis split into `parts` chunks.
    pub scatter_axis: usize,
    /// Axis the received chunks are concatenated along.
    pub gather_axis: usize,
    /// Ranks of the group.
    pub parts: usize,
    /// Bytes per element.
    pub element_bytes: usize,
}

impl AllToAll {
    /// An all-to-all; `shape[scatter_axis]` must divide by `parts`.
    pub fn new(
        shape: Vec<usize>,
        scatter_axis: usize,
        gather_axis: usize,
        parts: usize,
        element_bytes: usize,
    ) -> Result<AllToAll> {
        let rank = shape.len();
        if scatter_axis >= rank || gather_axis >= rank || parts == 0 || element_bytes == 0 {
            return Err(ParallelError::Buffer(format!(
                "all-to-all of shape {shape:?}: axes {scatter_axis} → {gather_axis} over {parts} ranks do not exist"
            )));
        }
        if !shape[scatter_axis].is_multiple_of(parts) {
            return Err(ParallelError::Buffer(format!(
                "all-to-all of shape {shape:?}: axis {scatter_axis} ({}) does not split over {parts} ranks",
                shape[scatter_axis]
            )));
        }
        Ok(AllToAll {
            shape,
            scatter_axis,
            gather_axis,
            parts,
            element_bytes,
        })
    }

    /// Ulysses before attention: `[B, S, N, D]` sequence-sharded → `[B, S·W, N/W, D]`.
    pub fn sequence_to_heads(
        batch: usize,
        shard_len: usize,
        heads: usize,
        head_dim: usize,
        ranks: usize,
        element_bytes: usize,
    ) -> Result<AllToAll> {
        AllToAll::new(
            vec![batch, shard_len, heads, head_dim],
            2,
            1,
            ranks,
            element_bytes,
        )
    }

    /// Ulysses after attention: `[B, S·W, N/W, D]` head-sharded → `[B, S, N, D]`.
    pub fn heads_to_sequence(
        batch: usize,
        shard_len: usize,
        heads: usize,
        head_dim: usize,
        ranks: usize,
        element_bytes: usize,
    ) -> Result<AllToAll> {
        AllToAll::new(
            vec![batch, shard_len * ranks, heads / ranks, head_dim],
            1,
            2,
            ranks,
            element_bytes,
        )
    }

    /// Bytes of the local input (and of the output).
    pub fn bytes(&self) -> usize {
        product(&self.shape) * self.element_bytes
    }

    /// Shape of one chunk.
    pub fn part_shape(&self) -> Vec<usize> {
        let mut shape = self.shape.clone();
        shape[self.scatter_axis] /= self.parts;
        shape
    }

    /// Bytes of one chunk.
    pub fn part_bytes(&self) -> usize {
        self.bytes() / self.parts
    }

    /// Chunk `destination` of the input into its slot of the send staging buffer.
    pub fn pack_copy(&self, destination: usize) -> StridedCopy {
        let rows = product(&self.shape[..self.scatter_axis]);
        let inner = product(&self.shape[self.scatter_axis + 1..]) * self.element_bytes;
        let chunk = self.shape[self.scatter_axis] / self.parts;
        StridedCopy {
            rows,
            row_bytes: chunk * inner,
            source_offset: destination * chunk * inner,
            source_pitch: self.shape[self.scatter_axis] * inner,
            destination_offset: destination * self.part_bytes(),
            destination_pitch: chunk * inner,
        }
    }

    /// How the received chunks (in source-rank order) form the output.
    pub fn concat(&self) -> Concat {
        Concat::new(
            self.part_shape(),
            self.gather_axis,
            self.parts,
            self.element_bytes,
        )
        .expect("axes checked in new")
    }

    /// Shape of the output.
    pub fn output_shape(&self) -> Vec<usize> {
        self.concat().output_shape()
    }

    /// Host reference: the send staging buffer (chunk `j` at `j · part_bytes`).
    pub fn pack(&self, input: &[u8]) -> Vec<u8> {
        assert_eq!(input.len(), self.bytes());
        let mut staging = vec![0; self.bytes()];
        for destination in 0..self.parts {
            self.pack_copy(destination).apply(input, &mut staging);
        }
        staging
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes(values: &[f32]) -> Vec<u8> {
        bytemuck::cast_slice(values).to_vec()
    }

    fn as_floats(bytes: &[u8]) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(bytes)
    }

    /// Element-wise reference of Ulysses: rank r holds tokens [r·S, (r+1)·S) of a [B, L, N, D]
    /// tensor; after the exchange rank r holds heads [r·N/W, (r+1)·N/W) of all L tokens.
    #[test]
    fn sequence_to_heads_and_back_match_index_arithmetic() {
        let (batch, ranks, shard_len, heads, head_dim) = (2, 3, 2, 6, 2);
        let tokens = ranks * shard_len;
        let value = |b: usize, t: usize, n: usize, d: usize| {
            (((b * tokens + t) * heads + n) * head_dim + d) as f32
        };
        let shards: Vec<Vec<f32>> = (0..ranks)
            .map(|r| {
                let mut shard = Vec::new();
                for b in 0..batch {
                    for s in 0..shard_len {
                        for n in 0..heads {
                            for d in 0..head_dim {
                                shard.push(value(b, r * shard_len + s, n, d));
                            }
                        }
                    }
                }
                shard
            })
            .collect();
        let forward =
            AllToAll::sequence_to_heads(batch, shard_len, heads, head_dim, ranks, 4).unwrap();
        assert_eq!(forward.output_shape(), vec![2, 6, 2, 2]);
        let staged: Vec<Vec<u8>> = shards.iter().map(|s| forward.pack(&as_bytes(s))).collect();
        let part = forward.part_bytes();
        let head_sharded: Vec<Vec<f32>> = (0..ranks)
            .map(|me| {
                let received: Vec<u8> = (0..ranks)
                    .flat_map(|source| staged[source][me * part..(me + 1) * part].to_vec())
                    .collect();
                as_floats(&forward.concat().unpack(&received))
            })
            .collect();
        let per_rank = heads / ranks;
        for (me, held) in head_sharded.iter().enumerate() {
            let mut expected = Vec::new();
            for b in 0..batch {
                for t in 0..tokens {
                    for n in 0..per_rank {
                        for d in 0..head_dim {
                            expected.push(value(b, t, me * per_rank + n, d));
                        }
                    }
                }
            }
            assert_eq!(held, &expected, "rank {me}");
        }
        let backward =
            AllToAll::heads_to_sequence(batch, shard_len, heads, head_dim, ranks, 4).unwrap();
        assert_eq!(backward.output_shape(), vec![2, 2, 6, 2]);
        let staged: Vec<Vec<u8>> = head_sharded
            .iter()
            .map(|h| backward.pack(&as_bytes(h)))
            .collect();
        for me in 0..ranks {
            let received: Vec<u8> = (0..ranks)
                .flat_map(|source| staged[source][me * part..(me + 1) * part].to_vec())
                .collect();
            assert_eq!(as_floats(&backward.concat().unpack(&received)), shards[me]);
        }
    }

    #[test]
    fn concat_along_the_sequence_interleaves_batch_rows() {
        // Two ranks, each [B=2, S=1, C=2]: the gather is [2, 2, 2] with rank order per batch row.
        let concat = Concat::new(vec![2, 1, 2], 1, 2, 4).unwrap();
        let staging = as_bytes(&[0.0, 1.0, 10.0, 11.0, 100.0, 101.0, 110.0, 111.0]);
        assert_eq!(
            as_floats(&concat.unpack(&staging)),
            vec![0.0, 1.0, 100.0, 101.0, 10.0, 11.0, 110.0, 111.0]
        );
        assert!(!concat.is_contiguous());
        // With one batch row the gather is the chunks in rank order, as they arrive.
        let single = Concat::new(vec![1, 2, 2], 1, 2, 4).unwrap();
        assert!(single.is_contiguous());
        assert_eq!(single.unpack(&staging), staging);
    }

    #[test]
    fn bad_splits_are_refused() {
        assert!(AllToAll::new(vec![1, 4, 5, 2], 2, 1, 2, 4).is_err());
        assert!(AllToAll::new(vec![1, 4], 2, 1, 2, 4).is_err());
        assert!(Concat::new(vec![1, 4], 2, 2, 4).is_err());
    }
}
