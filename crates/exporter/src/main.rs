//! `skyreels-export`: checkpoint → engine directory (ONNX graphs + manifest.yaml).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use skyreels_contract::Manifest;
use skyreels_contract::manifest::FORMAT_VERSION;
use skyreels_exporter::dit::layers::AttentionKind;
use skyreels_exporter::dit::{self, DitExportOptions};
use skyreels_exporter::engine_dir::Staging;
use skyreels_exporter::image::{self, ImageExportOptions};
use skyreels_exporter::text::{self, TextExportOptions};
use skyreels_exporter::tiny::{self, StorageDtype};
use skyreels_exporter::vae::{self, VaeExport, VaeExportOptions};
use skyreels_graph::DType;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Target {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Precision {
    Fp32,
    Fp16,
    Bf16,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VaePrecision {
    Fp32,
    Fp16,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Attention {
    Matmul,
    ContribMha,
}

/// Export a SkyReels-V2 checkpoint (original or diffusers layout) to an engine directory.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Checkpoint directory or .safetensors file; `tiny` exports the built-in tiny model.
    checkpoint: String,
    /// Engine directory to create.
    #[arg(long)]
    out: PathBuf,
    /// Precision of matmul weights and attention (norms and modulation stay float32).
    #[arg(long, value_enum)]
    dtype: Option<Precision>,
    /// Backend the graphs are meant for (picks defaults for --dtype and --attention).
    #[arg(long, value_enum, default_value = "cpu")]
    target: Target,
    /// VAE precision (default: fp32 for cpu, fp16 for cuda; ONNX Runtime's CUDA convolutions have
    /// no bf16 kernels). fp16 keeps the norms' sums of squares in float32.
    #[arg(long, value_enum)]
    vae_dtype: Option<VaePrecision>,
    /// Attention form (default: matmul for cpu, contrib-mha for cuda).
    #[arg(long, value_enum)]
    attention: Option<Attention>,
    /// Accepted for older scripts and ignored: the same block graphs run full and block-causal attention.
    #[arg(long, hide = true)]
    no_causal: bool,
    /// Copy weights even when they could be referenced in place.
    #[arg(long)]
    copy_weights: bool,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

fn main() -> anyhow::Result<()> {
    export(Args::parse()).map_err(with_write_fix)
}

/// Adds the fix for a failed write (full disk, file-size or quota limit, read-only file system);
/// the staging directory is already gone by then, so nothing partial is left.
fn with_write_fix(error: anyhow::Error) -> anyhow::Error {
    use std::io::ErrorKind;
    let failed_write = error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| {
            matches!(
                io.kind(),
                ErrorKind::StorageFull
                    | ErrorKind::FileTooLarge
                    | ErrorKind::QuotaExceeded
                    | ErrorKind::ReadOnlyFilesystem
            )
        });
    match failed_write {
        true => error.context("writing the engine failed; nothing was left behind\n  fix: free disk space (an export needs about the size of the weights, or less when they are referenced in place) or choose another --out"),
        false => error,
    }
}

fn export(args: Args) -> anyhow::Result<()> {
    let precision = args.dtype.unwrap_or(match args.target {
        Target::Cpu => Precision::Fp32,
        Target::Cuda => Precision::Bf16,
    });
    if matches!(args.target, Target::Cpu) && !matches!(precision, Precision::Fp32) {
        bail!(
            "--dtype {precision:?} is not supported on --target cpu: ONNX Runtime's CPU provider has no fp16/bf16 kernels for MatMul/Attention\n  fix: use --dtype fp32 for cpu, or --target cuda"
        );
    }
    let attention = match args.attention.unwrap_or(match args.target {
        Target::Cpu => Attention::Matmul,
        Target::Cuda => Attention::ContribMha,
    }) {
        Attention::Matmul => AttentionKind::MatMul,
        Attention::ContribMha => AttentionKind::ContribMha,
    };
    let vae_compute = match args.vae_dtype.unwrap_or(match args.target {
        Target::Cpu => VaePrecision::Fp32,
        Target::Cuda => VaePrecision::Fp16,
    }) {
        VaePrecision::Fp32 => DType::F32,
        VaePrecision::Fp16 if matches!(args.target, Target::Cpu) => bail!(
            "--vae-dtype fp16 is not supported on --target cpu: ONNX Runtime's CPU provider has no fp16 convolutions\n  fix: drop --vae-dtype, or use --target cuda"
        ),
        VaePrecision::Fp16 => DType::F16,
    };
    let (compute, precision_name) = match precision {
        Precision::Fp32 => (DType::F32, "fp32"),
        Precision::Fp16 => (DType::F16, "fp16"),
        Precision::Bf16 => (DType::BF16, "bf16"),
    };

    let started = Instant::now();
    let staging = Staging::new(&args.out, args.force)?;
    let _tiny_dir;
    let source = if args.checkpoint == "tiny" {
        let dir =
            tempfile::tempdir().context("creating a temporary directory for the tiny model")?;
        tiny::write_random_dit(dir.path(), &tiny::tiny_dit_config(), StorageDtype::F32, 0)?;
        vae::random::write_random_vae(&dir.path().join("vae"), &vae::random::tiny_vae_config(), 0)?;
        text::tiny::write_tiny(dir.path(), 0)?;
        let path = dir.path().to_path_buf();
        _tiny_dir = dir;
        path
    } else {
        PathBuf::from(&args.checkpoint)
    };
    let options = DitExportOptions {
        compute,
        attention,
        link_weights: !args.copy_weights && args.checkpoint != "tiny",
    };
    let export = if vae::is_vae_checkpoint(&source) {
        None
    } else {
        let dit_source = dit::locate(&source);
        Some(
            dit::export(&dit_source, staging.path(), &options)
                .with_context(|| format!("exporting the DiT from {}", dit_source.display()))?,
        )
    };
    let vae_export = export_vae(
        &source,
        staging.path(),
        !args.copy_weights && args.checkpoint != "tiny",
        vae_compute,
    )?;
    let link_weights = !args.copy_weights && args.checkpoint != "tiny";
    let text_export = match text::locate(&source) {
        Some(found) => Some(
            text::export(
                &found.checkpoint,
                &found.tokenizer,
                staging.path(),
                &TextExportOptions {
                    compute,
                    attention,
                    link_weights,
                },
            )
            .with_context(|| {
                format!(
                    "exporting the text encoder from {}",
                    found.checkpoint.display()
                )
            })?,
        ),
        None => None,
    };
    let image_export = match image::locate(&source) {
        Some(found) => {
            let preprocess = image::preprocess_from(found.preprocessor_config.as_deref())?;
            let options = ImageExportOptions {
                compute,
                attention,
                link_weights,
                preprocess,
            };
            Some(
                image::export(&found.checkpoint, staging.path(), &options).with_context(|| {
                    format!(
                        "exporting the image encoder from {}",
                        found.checkpoint.display()
                    )
                })?,
            )
        }
        None => None,
    };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        producer: format!("skyreels-export {}", env!("CARGO_PKG_VERSION")),
        target: format!("{:?}", args.target).to_lowercase(),
        precision: precision_name.to_string(),
        attention: attention.name().to_string(),
        dit: export.as_ref().map(|e| e.component.clone()),
        vae: vae_export.as_ref().map(|e| e.component.clone()),
        text_encoder: text_export.as_ref().map(|e| e.component.clone()),
        image_encoder: image_export.as_ref().map(|e| e.component.clone()),
        build: None,
    };
    manifest.save(staging.path())?;
    let out = staging.commit()?;
    let reports = export
        .iter()
        .flat_map(|e| &e.reports)
        .chain(vae_export.iter().flat_map(|e| &e.reports));
    let reports = reports
        .chain(text_export.iter().map(|e| &e.report))
        .chain(image_export.iter().map(|e| &e.report));
    for report in reports {
        eprintln!("  {:<26} {:>6} nodes", report.file, report.nodes);
    }
    let weight_bytes = export
        .iter()
        .map(|e| e.weight_bytes)
        .chain(vae_export.iter().map(|e| e.weight_bytes));
    let weight_bytes = weight_bytes
        .chain(text_export.iter().map(|e| e.weight_bytes))
        .chain(image_export.iter().map(|e| e.weight_bytes));
    let (written, linked) = weight_bytes.fold((0, 0), |(w, l), (a, b)| (w + a, l + b));
    eprintln!(
        "exported {} in {:.2}s (weights: {:.1} MB written, {:.1} MB referenced in place)",
        out.display(),
        started.elapsed().as_secs_f64(),
        written as f64 / 1e6,
        linked as f64 / 1e6
    );
    Ok(())
}

/// Exports the VAE that belongs to `source` (see `vae::locate`), if there is one.
fn export_vae(
    source: &std::path::Path,
    out: &std::path::Path,
    link_weights: bool,
    compute: DType,
) -> anyhow::Result<Option<VaeExport>> {
    let Some(vae_source) = vae::locate(source) else {
        eprintln!(
            "no VAE found at {} (looked for a vae/ folder, Wan2.1_VAE.pth or Wan2.1_VAE.safetensors); the engine has none",
            source.display()
        );
        return Ok(None);
    };
    let export = vae::export(
        &vae_source,
        out,
        &VaeExportOptions {
            compute,
            link_weights,
        },
    )
    .with_context(|| format!("exporting the VAE from {}", vae_source.display()))?;
    Ok(Some(export))
}
