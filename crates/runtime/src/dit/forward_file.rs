//! `skyreels dit-forward`: one DiT forward pass from a safetensors file of the DiT's public inputs
//! (by their contract names, `docs/GRAPHS.md`) to a safetensors file holding `velocity`, for
//! regression-testing engines against a reference. Every input is checked before the engine runs.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use skyreels_contract::manifest::Component;
use skyreels_contract::{DitConfig, ModelType, io};

use super::{Dit, DitInputs};
use crate::engine::Engine;
use crate::error::{Result, RuntimeError};
use crate::session::Backend;
use crate::tensor::Tensor;

/// The DiT inputs read from a file, checked against the engine's architecture.
#[derive(Debug)]
pub struct DitInputFile {
    latents: Tensor,
    timesteps: Tensor,
    context: Tensor,
    fps: Option<Vec<i64>>,
    image_context: Option<Tensor>,
}

impl DitInputFile {
    /// Reads `latents` f32 `[B, in_dim, F, H, W]` (H, W even), `timesteps` f32 `[B, F]`, `context`
    /// f32 `[B, L, text_dim]`, `fps` i64 `[B]` (exactly when the model has the fps embedding) and
    /// `image_context` f32 `[B, image_len, image_dim]` (exactly for I2V) from `path`; other
    /// tensors are ignored. Missing, misshapen, mistyped or non-finite inputs are refused.
    pub fn read(path: &Path, config: &DitConfig) -> Result<DitInputFile> {
        let bytes = fs_err::read(path)?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| {
            RuntimeError::Invalid(format!(
                "{} is not a valid safetensors file: {e:?}\n  fix: write the inputs with safetensors (e.g. safetensors.torch.save_file)",
                path.display()
            ))
        })?;
        let names: HashMap<String, _> = file.tensors().into_iter().collect();
        let refuse = |name: &str, message: String| RuntimeError::Tensor {
            name: name.to_string(),
            message: format!("in {}: {message}", path.display()),
        };
        let float = |name: &str| -> Result<Option<Tensor>> {
            let Some(view) = names.get(name) else {
                return Ok(None);
            };
            if view.dtype() != Dtype::F32 {
                return Err(refuse(
                    name,
                    format!("has dtype {:?}\n  fix: store it as float32", view.dtype()),
                ));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                return Err(refuse(
                    name,
                    format!(
                        "element {index} is {}\n  fix: pass finite values (check the tool that wrote the file)",
                        values[index]
                    ),
                ));
            }
            Ok(Some(Tensor::new(view.shape().to_vec(), values)?))
        };
        let required = |name: &str, shape: &str| -> Result<Tensor> {
            float(name)?.ok_or_else(|| {
                refuse(
                    name,
                    format!("missing\n  fix: add float32 tensor `{name}` {shape}"),
                )
            })
        };
        let latents = required(io::LATENTS, "[B, C, F, H, W]")?;
        let timesteps = required(io::TIMESTEPS, "[B, F] (one timestep per latent frame)")?;
        let context = required(
            io::CONTEXT,
            "[B, 512, text_dim] (skyreels text-encode writes it)",
        )?;
        let (batch, frames) = match latents.shape.as_slice() {
            [batch, channels, frames, height, width]
                if *channels == config.in_dim
                    && height % 2 == 0
                    && width % 2 == 0
                    && *frames > 0 =>
            {
                (*batch, *frames)
            }
            shape => {
                return Err(refuse(
                    io::LATENTS,
                    format!(
                        "has shape {shape:?}\n  fix: pass [B, {}, F, H, W] with even H and W (the DiT's 2x2 patches)",
                        config.in_dim
                    ),
                ));
            }
        };
        let expect = |tensor: &Tensor, name: &str, expected: &[usize], what: &str| -> Result<()> {
            if tensor.shape == expected {
                Ok(())
            } else {
                Err(refuse(
                    name,
                    format!(
                        "has shape {:?}, expected {expected:?}\n  fix: {what}",
                        tensor.shape
                    ),
                ))
            }
        };
        expect(
            &timesteps,
            io::TIMESTEPS,
            &[batch, frames],
            "one timestep per batch row and latent frame of `latents`",
        )?;
        match context.shape.as_slice() {
            [b, length, dim] if *b == batch && *dim == config.text_dim && *length > 0 => {}
            shape => {
                return Err(refuse(
                    io::CONTEXT,
                    format!(
                        "has shape {shape:?}\n  fix: pass [{batch}, 512, {}] (the batch of `latents`, the text encoder's width)",
                        config.text_dim
                    ),
                ));
            }
        }
        let fps = match (names.get(io::FPS), config.inject_sample_info) {
            (Some(view), true) => {
                if view.dtype() != Dtype::I64 || view.shape() != [batch] {
                    return Err(refuse(
                        io::FPS,
                        format!(
                            "is {:?} {:?}\n  fix: pass int64 [{batch}] (0 = 16 fps, 1 = 24 fps)",
                            view.dtype(),
                            view.shape()
                        ),
                    ));
                }
                let values: Vec<i64> = view
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                if let Some(bad) = values.iter().find(|v| !(0..=1).contains(*v)) {
                    return Err(refuse(
                        io::FPS,
                        format!("holds {bad}\n  fix: use 0 (16 fps) or 1 (24 fps)"),
                    ));
                }
                Some(values)
            }
            (None, true) => {
                return Err(refuse(
                    io::FPS,
                    format!(
                        "missing: this DiT has the fps embedding\n  fix: add int64 `fps` [{batch}] (0 = 16 fps, 1 = 24 fps)"
                    ),
                ));
            }
            (Some(_), false) => {
                return Err(refuse(
                    io::FPS,
                    "given, but this DiT has no fps embedding\n  fix: remove it".into(),
                ));
            }
            (None, false) => None,
        };
        let image_context = float(io::IMAGE_CONTEXT)?;
        let image_context = match (
            config.model_type,
            config.image_len,
            config.image_dim,
            image_context,
        ) {
            (ModelType::I2v, Some(length), Some(dim), Some(image)) => {
                expect(
                    &image,
                    io::IMAGE_CONTEXT,
                    &[batch, length, dim],
                    "pass the CLIP image context (skyreels image-encode writes it)",
                )?;
                Some(image)
            }
            (ModelType::I2v, ..) => {
                return Err(refuse(
                    io::IMAGE_CONTEXT,
                    "missing: this DiT is image-to-video\n  fix: add float32 `image_context` (skyreels image-encode writes it)".into(),
                ));
            }
            (_, _, _, Some(_)) => {
                return Err(refuse(
                    io::IMAGE_CONTEXT,
                    "given, but this DiT is not image-to-video\n  fix: remove it".into(),
                ));
            }
            _ => None,
        };
        Ok(DitInputFile {
            latents,
            timesteps,
            context,
            fps,
            image_context,
        })
    }

    /// The inputs as the DiT takes them.
    pub fn inputs(&self) -> DitInputs<'_> {
        DitInputs {
            latents: &self.latents,
            timesteps: &self.timesteps,
            context: &self.context,
            fps: self.fps.as_deref(),
            image_context: self.image_context.as_ref(),
        }
    }
}

/// Loads the DiT of `engine` on `backend` (block-causal with `causal_block_size`, its layer
/// weights placed by `placement`), runs one forward pass over the inputs in `inputs` and returns
/// `velocity` `[B, out_dim, F, H, W]`.
pub fn forward_file(
    engine: &Engine,
    backend: &Backend,
    inputs: &Path,
    causal_block_size: Option<usize>,
    placement: super::placement::WeightPlacement,
) -> Result<Tensor> {
    let config = &engine
        .manifest
        .dit
        .as_ref()
        .ok_or_else(|| engine.missing(Component::Dit))?
        .config;
    let file = DitInputFile::read(inputs, config)?;
    let mut dit = Dit::load_with(engine, backend, causal_block_size, placement)?;
    dit.forward(&file.inputs())
}
