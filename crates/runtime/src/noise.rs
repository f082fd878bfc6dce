//! Noise for sampling: a seeded generator by default, or pre-drawn tensors from a file (how whole
//! loops are compared with the reference exactly; the reference's CUDA RNG cannot be reproduced).
//!
//! The seeded generator is ChaCha8 seeded with the `u64` seed, drawing standard normals with the
//! Ziggurat sampler of `rand_distr::StandardNormal`, in row-major order of each requested tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;

/// Where Gaussian noise comes from, in the order the pipeline draws it.
pub enum NoiseSource {
    /// Seeded ChaCha8 standard normals.
    Seeded(Box<ChaCha8Rng>),
    /// Tensors `"0"`, `"1"`, … of a safetensors file, consumed in order.
    File {
        /// The file, for messages.
        path: PathBuf,
        /// Remaining tensors by index.
        tensors: HashMap<usize, Tensor>,
        /// Next index to hand out.
        next: usize,
    },
    /// Another source whose draws are kept, in order, to be saved with [`NoiseSource::save_draws`]
    /// (snapshots record the noise so that any backend replays exactly the same draws).
    Recording {
        /// Where the draws come from.
        source: Box<NoiseSource>,
        /// Every draw so far.
        draws: Vec<Tensor>,
    },
}

impl NoiseSource {
    /// A seeded generator.
    pub fn seeded(seed: u64) -> NoiseSource {
        NoiseSource::Seeded(Box::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    /// Reads pre-drawn noise tensors named `"0"`, `"1"`, … from `path`.
    pub fn from_file(path: &Path) -> Result<NoiseSource> {
        let tensors = crate::tensor_file::read_f32_tensors(path)?;
        let mut indexed = HashMap::new();
        for (name, tensor) in tensors {
            let index = name.parse::<usize>().map_err(|_| {
                RuntimeError::Invalid(format!(
                    "noise file {}: tensor `{name}` is not named by its draw index\n  fix: name the tensors \"0\", \"1\", … in draw order",
                    path.display()
                ))
            })?;
            indexed.insert(index, tensor);
        }
        Ok(NoiseSource::File {
            path: path.to_path_buf(),
            tensors: indexed,
            next: 0,
        })
    }

    /// Keeps every draw of `source`.
    pub fn recording(source: NoiseSource) -> NoiseSource {
        NoiseSource::Recording {
            source: Box::new(source),
            draws: Vec::new(),
        }
    }

    /// Pre-drawn tensors not consumed yet (0 for the seeded generator).
    pub fn remaining(&self) -> usize {
        match self {
            NoiseSource::Seeded(_) => 0,
            NoiseSource::File { tensors, .. } => tensors.len(),
            NoiseSource::Recording { source, .. } => source.remaining(),
        }
    }

    /// Writes the recorded draws as tensors `"0"`, `"1"`, … to `path`, the format
    /// [`NoiseSource::from_file`] reads; an error unless this source is recording.
    pub fn save_draws(&self, path: &Path) -> Result<()> {
        let NoiseSource::Recording { draws, .. } = self else {
            return Err(RuntimeError::Invalid(
                "only a recording noise source has draws to save".into(),
            ));
        };
        let names: Vec<String> = (0..draws.len()).map(|index| index.to_string()).collect();
        crate::output::save_latents(path, names.iter().map(String::as_str).zip(draws))?;
        Ok(())
    }

    /// Draws a standard-normal tensor of `shape` (or takes the next one from the file).
    pub fn draw(&mut self, shape: &[usize]) -> Result<Tensor> {
        match self {
            NoiseSource::Seeded(rng) => {
                let count = shape.iter().product();
                let data = (0..count).map(|_| StandardNormal.sample(rng)).collect();
                Tensor::new(shape.to_vec(), data)
            }
            NoiseSource::File {
                path,
                tensors,
                next,
            } => {
                let index = *next;
                let tensor = tensors.remove(&index).ok_or_else(|| {
                    RuntimeError::Invalid(format!(
                        "noise file {} is exhausted: draw {index} (shape {shape:?}) has no tensor \"{index}\"\n  fix: record all draws of the run, in order",
                        path.display()
                    ))
                })?;
                if tensor.shape != shape {
                    return Err(RuntimeError::Invalid(format!(
                        "noise file {}: tensor \"{index}\" has shape {:?} but draw {index} needs {shape:?}",
                        path.display(),
                        tensor.shape
                    )));
                }
                *next += 1;
                Ok(tensor)
            }
            NoiseSource::Recording { source, draws } => {
                let tensor = source.draw(shape)?;
                draws.push(tensor.clone());
                Ok(tensor)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_reproducible_and_standard() {
        let a = NoiseSource::seeded(7).draw(&[4, 1000]).unwrap();
        let b = NoiseSource::seeded(7).draw(&[4, 1000]).unwrap();
        assert_eq!(a, b);
        let mean = a.data.iter().sum::<f32>() / a.len() as f32;
        let variance = a.data.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.05, "variance {variance}");
        assert_ne!(a, NoiseSource::seeded(8).draw(&[4, 1000]).unwrap());
    }

    #[test]
    fn recorded_draws_replay_from_their_file() {
        let mut recording = NoiseSource::recording(NoiseSource::seeded(3));
        let first = recording.draw(&[2, 3]).unwrap();
        let second = recording.draw(&[5]).unwrap();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("noise.safetensors");
        recording.save_draws(&path).unwrap();
        let mut replay = NoiseSource::from_file(&path).unwrap();
        assert_eq!(replay.draw(&[2, 3]).unwrap(), first);
        assert_eq!(replay.draw(&[5]).unwrap(), second);
        assert_eq!(replay.remaining(), 0);
        assert!(NoiseSource::seeded(3).save_draws(&path).is_err());
    }
}
