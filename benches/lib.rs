//! The built-in tiny model (`skyreels-export tiny`: DiT and VAE) exported once into a temporary
//! engine directory for the benchmarks of this package.

use std::path::PathBuf;

use anyhow::Context;
use skyreels_contract::{Attention, Manifest};
use skyreels_contract::manifest::FORMAT_VERSION;
use skyreels_exporter::dit::{self, DitExportOptions};
use skyreels_exporter::tiny::{self, StorageDtype};
use skyreels_exporter::vae::{self, VaeExportOptions};
use skyreels_graph::DType;

/// A tiny fp32 CPU engine (MatMul attention, no block-causal variant); removed on drop.
pub struct TinyEngine {
    directory: tempfile::TempDir,
}

impl TinyEngine {
    /// Writes the seed-0 tiny DiT and VAE checkpoints and exports them as `skyreels-export tiny` does.
    pub fn export() -> anyhow::Result<TinyEngine> {
        let directory =
            tempfile::tempdir().context("creating a temporary directory for the tiny engine")?;
        let source = directory.path().join("source");
        tiny::write_random_dit(&source, &tiny::tiny_dit_config(), StorageDtype::F32, 0)?;
        vae::random::write_random_vae(&source.join("vae"), &vae::random::tiny_vae_config(), 0)?;
        let engine = directory.path().join("engine");
        fs_err::create_dir(&engine)?;
        let options = DitExportOptions {
            compute: DType::F32,
            attention: Attention::MatMul,
            link_weights: false,
        };
        let dit = dit::export(&source, &engine, &options)?;
        let vae_source = vae::locate(&source).context("the tiny VAE was just written")?;
        let vae = vae::export(
            &vae_source,
            &engine,
            &VaeExportOptions {
                compute: skyreels_graph::DType::F32,
                link_weights: false,
            },
        )?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            producer: "skyreels-benches".into(),
            target: skyreels_contract::Target::Cpu,
            precision: skyreels_contract::Precision::Fp32,
            attention: Attention::MatMul,
            dit: Some(dit.component),
            vae: Some(vae.component),
            text_encoder: None,
            image_encoder: None,
            build: None,
            source: None,
        };
        manifest.save(&engine)?;
        Ok(TinyEngine { directory })
    }

    /// The engine directory.
    pub fn dir(&self) -> PathBuf {
        self.directory.path().join("engine")
    }
}
