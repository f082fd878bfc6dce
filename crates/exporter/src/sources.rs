//! The components found next to a checkpoint, before anything is exported: where the DiT, VAE,
//! text encoder and (image-to-video) image encoder come from, and which of them are missing.

use std::path::{Path, PathBuf};

use skyreels_contract::ModelType;
use skyreels_contract::manifest::{Component, MissingComponent};

use crate::error::{ExportError, Result};
use crate::image::ImageSource;
use crate::text::TextSource;

/// Which components an export must find (`skyreels-export --require`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Require {
    /// Everything `skyreels generate` needs: the DiT, the VAE, the text encoder and, for
    /// image-to-video models, the image encoder.
    All,
    /// The DiT alone; missing components are reported and recorded in the manifest.
    Dit,
}

/// Where each component of a model comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The DiT's folder or file; `None` when the checkpoint is a VAE on its own.
    pub dit: Option<PathBuf>,
    /// The VAE's folder or file.
    pub vae: Option<PathBuf>,
    /// The text encoder and its tokenizer.
    pub text_encoder: Option<TextSource>,
    /// The image encoder (looked for with image-to-video DiTs only).
    pub image_encoder: Option<ImageSource>,
    /// Components the model needs that were not found.
    pub missing: Vec<MissingComponent>,
}

const VAE_FILES: &str =
    "a vae/ folder with safetensors and config.json, or Wan2.1_VAE.pth / Wan2.1_VAE.safetensors";
const TEXT_ENCODER_FILES: &str = "text_encoder/ with tokenizer/tokenizer.json, or models_t5_umt5-xxl-enc-bf16.pth / .safetensors with google/umt5-xxl/tokenizer.json";
const IMAGE_ENCODER_FILES: &str = "image_encoder/ (with image_processor/), or models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth / .safetensors";

/// Finds the components of the model at `source` (a model folder, a diffusers snapshot or a single
/// weights file). Nothing is read beyond file names, configs and safetensors headers.
pub fn find(source: &Path) -> Result<Sources> {
    if !source.exists() {
        return Err(ExportError::NoCheckpoint {
            path: source.to_path_buf(),
            reason: "no such file or directory".into(),
        });
    }
    let folder = match source.is_file() {
        true => source.parent().unwrap_or(Path::new(".")),
        false => source,
    };
    let looked_in = folder.display().to_string();
    let missing = |component: Component, looked_for: &str| MissingComponent {
        component,
        looked_for: looked_for.to_string(),
        looked_in: looked_in.clone(),
    };
    if crate::vae::is_vae_checkpoint(source) {
        return Ok(Sources {
            dit: None,
            vae: Some(source.to_path_buf()),
            text_encoder: None,
            image_encoder: None,
            missing: Vec::new(),
        });
    }
    let dit = crate::dit::locate(source);
    // A DiT that does not open is reported by its export, with the details; here it only decides
    // whether an image encoder belongs to the model.
    let image_to_video =
        crate::dit::inspect(&dit).is_ok_and(|(_, _, config)| config.model_type == ModelType::I2v);
    let vae = crate::vae::locate(source);
    let text_encoder = crate::text::locate(source);
    let image_encoder = crate::image::locate(source);
    let mut absent = Vec::new();
    if vae.is_none() {
        absent.push(missing(Component::Vae, VAE_FILES));
    }
    if text_encoder.is_none() {
        absent.push(missing(Component::TextEncoder, TEXT_ENCODER_FILES));
    }
    if image_to_video && image_encoder.is_none() {
        absent.push(missing(Component::ImageEncoder, IMAGE_ENCODER_FILES));
    }
    Ok(Sources {
        dit: Some(dit),
        vae,
        text_encoder,
        image_encoder,
        missing: absent,
    })
}

/// One line per missing component, for stderr and errors.
pub fn describe(missing: &MissingComponent) -> String {
    format!(
        "no {} in {} (looked for {})",
        missing.component, missing.looked_in, missing.looked_for
    )
}

impl Sources {
    /// Fails under [`Require::All`] when a component is missing; `download` says how to get the
    /// missing files (it depends on whether the checkpoint is a folder or a model id).
    pub fn check(&self, require: Require, download: &str) -> Result<()> {
        if require == Require::Dit || self.missing.is_empty() {
            return Ok(());
        }
        Err(ExportError::MissingComponents {
            missing: self
                .missing
                .iter()
                .map(|m| format!("{}: `skyreels generate` needs it", describe(m)))
                .collect(),
            fix: format!(
                "{download}; or pass --require dit to export the DiT without them (the manifest records what is missing)"
            ),
        })
    }
}

/// How to get the missing files of a checkpoint given as `checkpoint` (a folder or a model id).
pub fn download_fix(checkpoint: &str, model_id: Option<(&str, &str)>) -> String {
    match model_id {
        Some((id, revision)) => format!(
            "complete the cached snapshot (`hf download {id} --revision {revision}` fetches only the missing files) and export again"
        ),
        None => format!(
            "put the missing files into {checkpoint} (a diffusers snapshot has them all) and export again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny::{self, StorageDtype};

    #[test]
    fn a_dit_alone_misses_the_vae_and_the_text_encoder() {
        let folder = tempfile::tempdir().unwrap();
        tiny::write_random_dit(
            folder.path(),
            &tiny::tiny_dit_config(),
            StorageDtype::F32,
            0,
        )
        .unwrap();
        let sources = find(folder.path()).unwrap();
        assert_eq!(sources.dit.as_deref(), Some(folder.path()));
        let missing: Vec<Component> = sources.missing.iter().map(|m| m.component).collect();
        assert_eq!(missing, [Component::Vae, Component::TextEncoder]);
        assert!(sources.check(Require::Dit, "download").is_ok());
        let error = sources
            .check(Require::All, "download them")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!(
                "no text encoder in {} (looked for text_encoder/ with tokenizer/tokenizer.json",
                folder.path().display()
            )) && error.contains("fix: download them; or pass --require dit"),
            "{error}"
        );
    }
}
