//! `skyreels-export`: checkpoint → engine directory (ONNX graphs + manifest.yaml).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use skyreels_contract::manifest::{ExportSource, FORMAT_VERSION};
use skyreels_contract::{Attention, Manifest, Precision, Target};
use skyreels_exporter::dit::{self, DitExportOptions};
use skyreels_exporter::engine_dir::Staging;
use skyreels_exporter::hub_cache::{self, DEFAULT_REVISION};
use skyreels_exporter::image::{self, ImageExportOptions};
use skyreels_exporter::sources::{self, Require};
use skyreels_exporter::text::{self, TextExportOptions};
use skyreels_exporter::tiny::{self, StorageDtype};
use skyreels_exporter::vae::{self, VaeExportOptions};
use skyreels_graph::DType;

/// Export a SkyReels-V2 checkpoint (original or diffusers layout) to an engine directory.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Checkpoint directory or .safetensors file, a Hugging Face model id already in the local
    /// cache (`Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers`; HF_HUB_CACHE / HF_HOME, nothing is
    /// downloaded), or `tiny` for the built-in tiny model.
    checkpoint: String,
    /// Revision of a model id: a branch or tag of the cache's refs/, or a commit.
    #[arg(long)]
    revision: Option<String>,
    /// Components the checkpoint must have: `all` (what `generate` needs) or `dit` (export
    /// what is there; missing components are reported and recorded in the manifest).
    #[arg(long, value_enum, default_value = "all")]
    require: Require,
    /// Engine directory to create.
    #[arg(long)]
    out: PathBuf,
    /// Precision of matmul weights and attention (norms and modulation stay float32).
    #[arg(long, value_enum)]
    dtype: Option<Precision>,
    /// Backend the graphs are meant for (picks defaults for --dtype and --attention).
    #[arg(long, value_enum, default_value = "cpu")]
    target: Target,
    /// VAE precision (default: fp32 for cpu, fp16 for cuda and tensorrt; ONNX Runtime's CUDA
    /// convolutions have no bf16 kernels). fp16 keeps the norms' sums of squares in float32.
    #[arg(long, value_enum)]
    vae_dtype: Option<Precision>,
    /// Attention form (default: matmul for cpu, contrib-mha for cuda, onnx-attention for tensorrt).
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

fn main() -> std::process::ExitCode {
    skyreels_contract::error_report::exit_code(export(Args::parse()).map_err(with_write_fix))
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
    let target = args.target;
    let precision = match args.dtype {
        Some(precision) => precision,
        None if target == Target::Cpu => Precision::Fp32,
        None => Precision::Bf16,
    };
    if target == Target::Cpu && precision != Precision::Fp32 {
        bail!(
            "--dtype {precision} is not supported on --target cpu: ONNX Runtime's CPU provider has no fp16/bf16 kernels for MatMul/Attention\n  fix: use --dtype fp32 for cpu, or --target cuda"
        );
    }
    let attention = args.attention.unwrap_or(match target {
        Target::Cpu => Attention::MatMul,
        Target::Cuda => Attention::ContribMha,
        Target::TensorRt => Attention::OnnxAttention,
    });
    if target == Target::TensorRt && attention == Attention::ContribMha {
        bail!(
            "--attention contrib-mha is not something TensorRT parses: com.microsoft.MultiHeadAttention and RotaryEmbedding are ONNX Runtime's own operators\n  fix: drop --attention (tensorrt exports onnx-attention), or use --attention matmul"
        );
    }
    let vae_compute = match args.vae_dtype {
        Some(Precision::Fp32) => DType::F32,
        None if target == Target::Cpu => DType::F32,
        Some(Precision::Bf16) => bail!(
            "--vae-dtype bf16 is not supported: ONNX Runtime's CUDA provider has no bf16 convolutions\n  fix: use --vae-dtype fp16 (its norm statistics stay fp32) or fp32"
        ),
        Some(Precision::Fp16) if target == Target::Cpu => bail!(
            "--vae-dtype fp16 is not supported on --target cpu: ONNX Runtime's CPU provider has no fp16 convolutions\n  fix: drop --vae-dtype, or use --target cuda"
        ),
        Some(Precision::Fp16) | None => DType::F16,
    };
    let compute = match precision {
        Precision::Fp32 => DType::F32,
        Precision::Fp16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    };

    let started = Instant::now();
    let snapshot = resolve_model_id(&args)?;
    skyreels_exporter::engine_dir::clean_up_on_signals()?;
    let _tiny_dir;
    let source = if args.checkpoint == "tiny" {
        let dir =
            tempfile::tempdir().context("creating a temporary directory for the tiny model")?;
        skyreels_exporter::engine_dir::remove_on_signal(dir.path());
        tiny::write_random_dit(dir.path(), &tiny::tiny_dit_config(), StorageDtype::F32, 0)?;
        vae::random::write_random_vae(&dir.path().join("vae"), &vae::random::tiny_vae_config(), 0)?;
        text::tiny::write_tiny(dir.path(), 0)?;
        let path = dir.path().to_path_buf();
        _tiny_dir = dir;
        path
    } else if let Some(snapshot) = &snapshot {
        snapshot.path.clone()
    } else {
        PathBuf::from(&args.checkpoint)
    };
    let found = sources::find(&source)?;
    for missing in &found.missing {
        eprintln!("missing: {}", sources::describe(missing));
    }
    found.check(
        args.require,
        &sources::download_fix(
            &args.checkpoint,
            snapshot
                .as_ref()
                .map(|s| (s.model_id.as_str(), s.revision.as_str())),
        ),
    )?;
    let staging = Staging::new(&args.out, args.force)?;
    let options = DitExportOptions {
        compute,
        attention,
        link_weights: !args.copy_weights && args.checkpoint != "tiny",
    };
    let export = match &found.dit {
        None => None,
        Some(dit_source) => Some(
            dit::export(dit_source, staging.path(), &options)
                .with_context(|| format!("exporting the DiT from {}", dit_source.display()))?,
        ),
    };
    let link_weights = !args.copy_weights && args.checkpoint != "tiny";
    let vae_export = match &found.vae {
        None => None,
        Some(vae_source) => Some(
            vae::export(
                vae_source,
                staging.path(),
                &VaeExportOptions {
                    compute: vae_compute,
                    link_weights,
                },
            )
            .with_context(|| format!("exporting the VAE from {}", vae_source.display()))?,
        ),
    };
    let text_export = match &found.text_encoder {
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
    let image_export = match &found.image_encoder {
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
        target,
        precision,
        attention,
        dit: export.as_ref().map(|e| e.component.clone()),
        vae: vae_export.as_ref().map(|e| e.component.clone()),
        text_encoder: text_export.as_ref().map(|e| e.component.clone()),
        image_encoder: image_export.as_ref().map(|e| e.component.clone()),
        build: None,
        source: Some(ExportSource {
            checkpoint: args.checkpoint.clone(),
            revision: snapshot.as_ref().map(|s| s.revision.clone()),
            commit: snapshot.as_ref().map(|s| s.commit.clone()),
            missing: found.missing.clone(),
        }),
    };
    manifest.save(staging.path())?;
    let out = staging.commit()?;
    let reports = export
        .iter()
        .flat_map(|e| &e.reports)
        .chain(vae_export.iter().flat_map(|e| &e.reports));
    let reports = reports
        .chain(text_export.iter().flat_map(|e| &e.reports))
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

/// The cached snapshot when the checkpoint argument is a Hugging Face model id (spelled `Org/Name`,
/// and no file or folder of that name exists); `--revision` without a model id is refused.
fn resolve_model_id(args: &Args) -> anyhow::Result<Option<hub_cache::Snapshot>> {
    let is_path = std::path::Path::new(&args.checkpoint).exists() || args.checkpoint == "tiny";
    if is_path || !hub_cache::is_model_id(&args.checkpoint) {
        if let Some(revision) = &args.revision {
            bail!(
                "--revision {revision} applies to a Hugging Face model id, and {} is a path\n  fix: drop --revision, or pass the model id (Org/Name) instead of a folder",
                args.checkpoint
            );
        }
        return Ok(None);
    }
    let revision = args.revision.as_deref().unwrap_or(DEFAULT_REVISION);
    let snapshot = hub_cache::resolve(&args.checkpoint, revision)?;
    eprintln!(
        "{} ({revision}) is the cached snapshot {}",
        snapshot.model_id,
        snapshot.path.display()
    );
    Ok(Some(snapshot))
}
