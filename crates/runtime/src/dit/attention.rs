//! The DiT's self-attention seam. Each transformer layer's `block_qkv` graph leaves `query`, `key`
//! and `value` `[B, L, D]` in the pool; a [`SelfAttention`] turns them into `attention_output`
//! `[B, L, D]`, which `block_out` reads. The graphs around it never see how attention was computed,
//! so a sequence-parallel attention (an all-to-all before and after the local computation) can
//! replace [`GraphAttention`] without touching them.
//!
//! Block-causal attention (asynchronous diffusion forcing) needs no mask: tokens are frame-major, so
//! the keys a frame block may see (blocks `0..=i`) are a prefix of the sequence. Query block `i`
//! attends to keys `0..query_ends[i]`, one call per block; the work is `(n + 1) / 2n` of full
//! attention for `n` equal blocks, and the flash kernels apply because there is no mask.

use ort::memory::Allocator;
use ort::value::{DynTensor, DynValue, Tensor as OrtTensor, TensorElementType};
use skyreels_contract::io;

use crate::error::{Result, RuntimeError, ort_error};
use crate::session::{GraphSession, TensorPool};

/// Self-attention of one transformer layer.
pub trait SelfAttention: Send {
    /// Reads `query`, `key`, `value` `[B, L, D]` from `pool` and adds `attention_output`
    /// `[B, L, D]`: the queries before `query_ends[i]` (and from `query_ends[i - 1]` on) attend to
    /// the keys and values before `query_ends[i]`. `query_ends` is increasing and ends at `L`.
    fn attend(&mut self, pool: &mut TensorPool, query_ends: &[usize]) -> Result<()>;
}

/// Where each query block ends, in tokens: one block of all `num_tokens` without
/// `causal_block_size`, otherwise blocks of `causal_block_size` frames (the last one shorter when
/// the frames do not divide evenly: block `i` holds frames `i·cbs .. min((i+1)·cbs, F)`).
pub fn query_block_ends(
    num_tokens: usize,
    num_frames: usize,
    causal_block_size: Option<usize>,
) -> Result<Vec<usize>> {
    let Some(block_size) = causal_block_size else {
        return Ok(vec![num_tokens]);
    };
    if block_size == 0 {
        return Err(RuntimeError::Invalid(
            "causal block size 0\n  fix: pass --causal-block-size 1 or more".into(),
        ));
    }
    if num_frames == 0 || !num_tokens.is_multiple_of(num_frames) {
        return Err(RuntimeError::Tensor {
            name: io::PATCH_TOKENS.into(),
            message: format!("{num_tokens} tokens do not split into {num_frames} frames"),
        });
    }
    let per_frame = num_tokens / num_frames;
    Ok((0..num_frames.div_ceil(block_size))
        .map(|block| ((block + 1) * block_size).min(num_frames) * per_frame)
        .collect())
}

/// [`SelfAttention`] through the engine's `attention` graph: one run per query block, each
/// appending its block's output to the previous blocks' (`attention_prefix` → `attention_output`).
pub struct GraphAttention {
    session: GraphSession,
    dtype: TensorElementType,
}

impl GraphAttention {
    /// Wraps the loaded `attention` graph.
    pub fn new(session: GraphSession) -> Result<GraphAttention> {
        let spec = session
            .entry
            .inputs
            .iter()
            .find(|spec| spec.name == io::ATTENTION_PREFIX)
            .ok_or_else(|| RuntimeError::Tensor {
                name: io::ATTENTION_PREFIX.into(),
                message: format!(
                    "not an input of graph `{}`; re-export the engine",
                    session.entry.name
                ),
            })?;
        let dtype = match spec.dtype.as_str() {
            "float32" => TensorElementType::Float32,
            "float16" => TensorElementType::Float16,
            "bfloat16" => TensorElementType::Bfloat16,
            other => {
                return Err(RuntimeError::Tensor {
                    name: io::ATTENTION_PREFIX.into(),
                    message: format!("has dtype {other}; re-export the engine"),
                });
            }
        };
        Ok(GraphAttention { session, dtype })
    }

    /// The dtype of the queries, keys and values it reads.
    pub fn dtype(&self) -> TensorElementType {
        self.dtype
    }

    /// The loaded graph.
    pub fn session(&self) -> &GraphSession {
        &self.session
    }
}

impl SelfAttention for GraphAttention {
    fn attend(&mut self, pool: &mut TensorPool, query_ends: &[usize]) -> Result<()> {
        let shape = pool.shape(io::QUERY)?;
        let (batch, dim) = match shape.as_slice() {
            [batch, _, dim] => (*batch, *dim),
            _ => {
                return Err(RuntimeError::Tensor {
                    name: io::QUERY.into(),
                    message: format!("is {shape:?}, expected [batch, tokens, dim]"),
                });
            }
        };
        let context = "creating the attention inputs";
        let mut prefix: DynValue =
            DynTensor::new(&Allocator::default(), self.dtype, [batch, 0, dim])
                .map_err(ort_error(context))?
                .into_dyn();
        for &end in query_ends {
            let query_end = OrtTensor::from_array(([1usize], vec![end as i64]))
                .map_err(ort_error(context))?
                .into_dyn();
            let produced = self.session.run_with(|name| match name {
                io::ATTENTION_PREFIX => Some(&prefix),
                io::QUERY_END => Some(&query_end),
                _ => pool.get(name),
            })?;
            prefix = produced
                .into_iter()
                .find(|(name, _)| name == io::ATTENTION_OUTPUT)
                .map(|(_, value)| value)
                .ok_or_else(|| RuntimeError::Tensor {
                    name: io::ATTENTION_OUTPUT.into(),
                    message: "not produced by graph `attention`".into(),
                })?;
        }
        pool.insert(io::ATTENTION_OUTPUT, prefix);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_blocks_cover_the_frames_with_a_shorter_last_block() {
        assert_eq!(query_block_ends(60, 5, None).unwrap(), vec![60]);
        assert_eq!(query_block_ends(60, 5, Some(5)).unwrap(), vec![60]);
        assert_eq!(query_block_ends(60, 5, Some(9)).unwrap(), vec![60]);
        assert_eq!(
            query_block_ends(60, 5, Some(1)).unwrap(),
            vec![12, 24, 36, 48, 60]
        );
        assert_eq!(query_block_ends(60, 5, Some(2)).unwrap(), vec![24, 48, 60]);
        assert_eq!(
            query_block_ends(25 * 2040, 25, Some(5)).unwrap(),
            vec![10200, 20400, 30600, 40800, 51000]
        );
    }

    #[test]
    fn impossible_blocks_are_refused() {
        let zero = query_block_ends(60, 5, Some(0)).unwrap_err().to_string();
        assert!(zero.contains("fix:"), "{zero}");
        let uneven = query_block_ends(61, 5, Some(2)).unwrap_err().to_string();
        assert!(uneven.contains("61 tokens"), "{uneven}");
    }
}
