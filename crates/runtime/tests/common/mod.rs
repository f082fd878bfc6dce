//! The built-in tiny model exported for CLI tests (as `skyreels-export tiny` does), and its
//! image-to-video sibling.

use std::path::{Path, PathBuf};

use skyreels_contract::manifest::FORMAT_VERSION;
use skyreels_contract::{Attention, Manifest, ModelType};
use skyreels_exporter::dit::{self, DitExportOptions};
use skyreels_exporter::image::{self, ImageExportOptions};
use skyreels_exporter::text::{self, TextExportOptions};
use skyreels_exporter::tiny::{self, StorageDtype};
use skyreels_exporter::vae::{self, VaeExportOptions};
use skyreels_graph::DType;

/// Which tiny model to export.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TinyModel {
    /// The diffusion-forcing text-to-video model of `skyreels-export tiny`.
    DiffusionForcing,
    /// An image-to-video DiT (36 input channels, image embedding) with the CLIP fixture of
    /// `tests/fixtures/clip/hf` (hidden size 32) as its image encoder.
    ImageToVideo,
    /// The diffusion-forcing model with 4 attention heads of 8 channels (Ulysses degrees 2 and 4).
    FourHeads,
}

/// Exports the tiny model into `out` (DiT, VAE, umT5 + tokenizer, and
/// CLIP for I2V) with an fp32 CPU manifest.
pub(crate) fn export_tiny_engine(out: &Path, model: TinyModel) {
    export_tiny_engine_with(out, model, 0, None);
}

/// [`export_tiny_engine`] with the DiT's random weights drawn from `dit_seed` (0 is the tiny
/// model's; another seed is another engine of the same architecture) and `num_layers`
/// transformer layers instead of the tiny model's 2.
pub(crate) fn export_tiny_engine_with(
    out: &Path,
    model: TinyModel,
    dit_seed: u64,
    num_layers: Option<usize>,
) {
    let source = tempfile::tempdir().expect("tempdir");
    let mut config = tiny::tiny_dit_config();
    if let Some(num_layers) = num_layers {
        config.num_layers = num_layers;
    }
    if model == TinyModel::ImageToVideo {
        config = skyreels_contract::DitConfig {
            model_type: ModelType::I2v,
            in_dim: 36,
            image_dim: Some(32),
            image_len: Some(257),
            inject_sample_info: false,
            ..config
        };
    }
    if model == TinyModel::FourHeads {
        config = skyreels_contract::DitConfig {
            num_heads: 4,
            ..config
        };
    }
    tiny::write_random_dit(source.path(), &config, StorageDtype::F32, dit_seed).expect("dit");
    vae::random::write_random_vae(
        &source.path().join("vae"),
        &vae::random::tiny_vae_config(),
        0,
    )
    .expect("vae");
    text::tiny::write_tiny(source.path(), 0).expect("text");
    let options = DitExportOptions {
        compute: DType::F32,
        attention: Attention::MatMul,
        link_weights: false,
    };
    let dit = dit::export(source.path(), out, &options).expect("export dit");
    let vae_source = vae::locate(source.path()).expect("vae source");
    let vae = vae::export(
        &vae_source,
        out,
        &VaeExportOptions {
            compute: skyreels_graph::DType::F32,
            link_weights: false,
        },
    )
    .expect("export vae");
    let found = text::locate(source.path()).expect("text source");
    let text_options = TextExportOptions {
        compute: DType::F32,
        attention: Attention::MatMul,
        link_weights: false,
    };
    let text =
        text::export(&found.checkpoint, &found.tokenizer, out, &text_options).expect("export text");
    let image_encoder = (model == TinyModel::ImageToVideo).then(|| {
        let clip = fixtures_dir().join("clip").join("hf");
        let options = ImageExportOptions {
            compute: DType::F32,
            attention: Attention::MatMul,
            link_weights: false,
            preprocess: image::preprocess_from(None).expect("preprocess"),
        };
        image::export(&clip, out, &options)
            .expect("export clip")
            .component
    });
    Manifest {
        format_version: FORMAT_VERSION,
        producer: "runtime CLI test".into(),
        target: skyreels_contract::Target::Cpu,
        precision: skyreels_contract::Precision::Fp32,
        attention: Attention::MatMul,
        dit: Some(dit.component),
        vae: Some(vae.component),
        text_encoder: Some(text.component),
        image_encoder,
        build: None,
        source: None,
    }
    .save(out)
    .expect("manifest");
}

/// The repository's `tests/fixtures`.
fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// `skyreels generate` of a three-window long video (57 frames in windows of 25 overlapping by
/// 9, 4 steps, one thread) on `engine` into `out`, with a JSON summary; callers add their flags.
#[allow(dead_code, reason = "used by the resume and interrupt tests only")]
pub(crate) fn long_video_command(engine: &Path, out: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_skyreels"));
    command.args(["generate", "--engines"]).arg(engine).args([
        "--prompt",
        "a fox in the snow",
        "--num-frames",
        "57",
        "--base-num-frames",
        "25",
        "--overlap-history",
        "9",
        "--addnoise-condition",
        "20",
        "--height",
        "32",
        "--width",
        "48",
        "--steps",
        "4",
        "--seed",
        "5",
        "--json",
        "--threads",
        "1",
        "--out",
    ]);
    command.arg(out);
    command
}

/// Waits until `path` exists while `child` runs; fails if the child ends first or after 300 s.
#[allow(dead_code, reason = "used by the resume and interrupt tests only")]
pub(crate) fn wait_for(child: &mut std::process::Child, path: &Path) {
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before {} appeared",
            path.display()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
