//! The text encoder block by block, its block weights streamed from host memory (`--offload`):
//! the token embedding's rows are read on the host from the engine's weight file (the table never
//! goes to the device), `layers_prepare` computes the position buckets and padding bias, the
//! `layer` graph runs once per block with that block's weights bound from one of two slots
//! refilled one block ahead (the DiT's [`stream_layers`] schedule), and `layers_final` applies
//! the final norm. The graphs are the pieces the whole encoder graph is built from.

use std::io::{Read, Seek, SeekFrom};

use skyreels_contract::manifest::Component;
use skyreels_contract::text::{
    INPUT_IDS, LAYER_GRAPH, LAYERS_FINAL_GRAPH, LAYERS_PREPARE_GRAPH, TEXT_LAYER_HIDDEN,
    TEXT_LAYER_OUTPUT, TEXT_MASK_BIAS, TEXT_POSITION_BUCKETS, TextEncoderComponent, TokenEmbedding,
};

use crate::dit::cuda_copier::CudaCopier;
use crate::dit::streaming::{HostCopier, LayerCopier, stream_layers};
use crate::dit::weights::{LayerTable, element_size, outside_its_file};
use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::session::{Backend, GraphSession, TensorPool};
use crate::tensor::Tensor;

/// The `layer` graph's inputs that are activations; every other input is a block weight.
const ACTIVATIONS: [&str; 3] = [TEXT_LAYER_HIDDEN, TEXT_POSITION_BUCKETS, TEXT_MASK_BIAS];

/// A text encoder run block by block.
pub struct LayeredEncoder {
    prepare: GraphSession,
    layer: GraphSession,
    last: GraphSession,
    copier: Box<dyn LayerCopier>,
    embedding: EmbeddingRows,
}

impl LayeredEncoder {
    /// Loads the three graphs of `component` and reads every block's weights into host memory
    /// (pinned on a GPU).
    pub fn load(
        engine: &Engine,
        component: &TextEncoderComponent,
        backend: &Backend,
    ) -> Result<LayeredEncoder> {
        let graph = |name: &str| engine.graph(&component.graphs, Component::TextEncoder, name);
        let embedding = EmbeddingRows::check(engine, component)?;
        let prepare = GraphSession::load(&engine.dir, graph(LAYERS_PREPARE_GRAPH)?, backend)?;
        let layer = GraphSession::load(&engine.dir, graph(LAYER_GRAPH)?, backend)?;
        let last = GraphSession::load(&engine.dir, graph(LAYERS_FINAL_GRAPH)?, backend)?;
        let table = LayerTable {
            model: "text encoder",
            layers: &component.layers,
            expected_layers: component.config.num_layers,
            activations: &ACTIVATIONS,
        };
        let graphs = [&layer.entry];
        let copier: Box<dyn LayerCopier> = match layer.device() {
            None => Box::new(HostCopier::load(&engine.dir, &table, &graphs)?),
            Some(device) => {
                let allocator = layer.device_allocator()?.ok_or_else(|| {
                    RuntimeError::Invalid("a CUDA session without a device allocator".into())
                })?;
                Box::new(CudaCopier::load(
                    &engine.dir,
                    &table,
                    &graphs,
                    device,
                    allocator,
                )?)
            }
        };
        Ok(LayeredEncoder {
            prepare,
            layer,
            last,
            copier,
            embedding,
        })
    }

    /// Runs the encoder on `ids` of `shape` `[batch, length]`, which `pool` also holds as
    /// `input_ids` beside their `attention_mask`, adding `text_hidden_states` to `pool`.
    pub fn run(&mut self, pool: &mut TensorPool, shape: [usize; 2], ids: &[i64]) -> Result<()> {
        let hidden = self.embedding.rows(&shape, ids)?;
        pool.insert_f32(TEXT_LAYER_HIDDEN, &hidden)?;
        self.prepare.run(pool)?;
        let LayeredEncoder { layer, copier, .. } = self;
        stream_layers(copier.as_mut(), |copier, _, slot| {
            let produced =
                layer.run_with(|name| pool.get(name).or_else(|| copier.weight(slot, name)))?;
            for (name, value) in produced {
                if name == TEXT_LAYER_OUTPUT {
                    pool.insert(TEXT_LAYER_HIDDEN, value);
                }
            }
            Ok(())
        })?;
        self.last.run(pool)
    }
}

/// The token embedding in the engine's weight file, read a row per token.
struct EmbeddingRows {
    path: std::path::PathBuf,
    embedding: TokenEmbedding,
    vocab_size: usize,
    dim: usize,
    element_size: usize,
}

impl EmbeddingRows {
    /// Checks that the table lies inside its file with the size `[vocab_size, dim]` of its dtype.
    fn check(engine: &Engine, component: &TextEncoderComponent) -> Result<EmbeddingRows> {
        let broken = |message: String| {
            engine.error(format!(
                "text encoder token embedding: {message}\n  fix: re-export the engine with skyreels-export"
            ))
        };
        let embedding = component
            .token_embedding
            .clone()
            .ok_or_else(|| broken("not listed in the manifest".into()))?;
        let location = &embedding.location;
        if std::path::Path::new(&location.file).file_name() != Some(location.file.as_ref()) {
            return Err(broken(format!(
                "{:?} is not a file of the engine directory",
                location.file
            )));
        }
        let element_size = element_size(&embedding.dtype)
            .ok_or_else(|| broken(format!("dtype {} is no weight dtype", embedding.dtype)))?;
        let (vocab_size, dim) = (component.config.vocab_size, component.config.dim);
        let expected = (vocab_size as u64)
            .saturating_mul(dim as u64)
            .saturating_mul(element_size as u64);
        if location.length != expected {
            return Err(broken(format!(
                "{} bytes, but [{vocab_size}, {dim}] of {} needs {expected}",
                location.length, embedding.dtype
            )));
        }
        let path = engine.dir.join(&location.file);
        let size = fs_err::metadata(&path)?.len();
        if let Some(problem) = outside_its_file(location, size) {
            return Err(broken(problem));
        }
        Ok(EmbeddingRows {
            path,
            embedding,
            vocab_size,
            dim,
            element_size,
        })
    }

    /// The rows of `ids` (`[batch, length]`) as float32 `[batch, length, dim]`, as the whole
    /// graph's Gather and Cast give them.
    fn rows(&self, shape: &[usize], ids: &[i64]) -> Result<Tensor> {
        let mut file = fs_err::File::open(&self.path)?;
        let row_bytes = self.dim * self.element_size;
        let mut row = vec![0u8; row_bytes];
        let mut data = Vec::with_capacity(ids.len() * self.dim);
        for &id in ids {
            let index = usize::try_from(id)
                .ok()
                .filter(|&i| i < self.vocab_size)
                .ok_or_else(|| RuntimeError::Tensor {
                    name: INPUT_IDS.into(),
                    message: format!(
                        "token id {id} is outside the vocabulary of {} rows",
                        self.vocab_size
                    ),
                })?;
            let offset = self.embedding.location.offset + (index * row_bytes) as u64;
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut row)?;
            match self.embedding.dtype.as_str() {
                "bfloat16" => data.extend(
                    row.chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
                "float16" => data.extend(
                    row.chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
                _ => data.extend(
                    row.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ),
            }
        }
        let mut dims = shape.to_vec();
        dims.push(self.dim);
        Tensor::new(dims, data)
    }
}

#[cfg(test)]
mod tests {
    use skyreels_contract::manifest::ExternalTensor;

    use super::*;

    /// A `[3, 2]` table of `dtype` at byte 5 of a file, after 5 bytes of something else.
    fn table(dir: &std::path::Path, dtype: &str, bytes: &[u8]) -> EmbeddingRows {
        let path = dir.join("text_encoder.weights");
        let mut file = vec![0xAB; 5];
        file.extend_from_slice(bytes);
        fs_err::write(&path, file).unwrap();
        EmbeddingRows {
            path,
            embedding: TokenEmbedding {
                dtype: dtype.into(),
                location: ExternalTensor {
                    file: "text_encoder.weights".into(),
                    offset: 5,
                    length: bytes.len() as u64,
                },
            },
            vocab_size: 3,
            dim: 2,
            element_size: element_size(dtype).unwrap(),
        }
    }

    #[test]
    fn rows_are_read_per_token_and_widened_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let values = [0.5f32, -1.25, 3.0, 1e-3, -7.5, 65504.0];
        let bf16: Vec<u8> = values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let rows = table(dir.path(), "bfloat16", &bf16);
        let tensor = rows.rows(&[1, 3], &[2, 0, 2]).unwrap();
        assert_eq!(tensor.shape, vec![1, 3, 2]);
        let widened = |i: usize| half::bf16::from_f32(values[i]).to_f32();
        assert_eq!(
            tensor.data,
            vec![
                widened(4),
                widened(5),
                widened(0),
                widened(1),
                widened(4),
                widened(5)
            ]
        );
        let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let rows = table(dir.path(), "float32", &f32_bytes);
        let tensor = rows.rows(&[2, 1], &[1, 2]).unwrap();
        assert_eq!(tensor.shape, vec![2, 1, 2]);
        assert_eq!(tensor.data, vec![3.0, 1e-3, -7.5, 65504.0]);
    }

    #[test]
    fn a_token_outside_the_vocabulary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rows = table(dir.path(), "float32", &[0u8; 24]);
        for id in [3, -1, i64::MAX] {
            let error = rows.rows(&[1, 1], &[id]).unwrap_err().to_string();
            assert!(
                error.contains("outside the vocabulary of 3 rows"),
                "{error}"
            );
        }
    }
}
