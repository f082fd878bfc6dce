//! `skyreels-build`: exported engine directory → optimised graphs for one backend, recorded in its manifest.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use skyreels_engines::{BuildOptions, Precision, Target};

/// Build an engine directory's graphs ahead of time for one backend.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Engine directory written by skyreels-export.
    engine_dir: PathBuf,
    /// Backend to build for.
    #[arg(long, value_enum)]
    target: Target,
    /// Reduced precision: TensorRT may use it; cpu/cuda only accept the precision the graphs were exported in.
    #[arg(long, value_enum)]
    dtype: Option<Precision>,
    /// TensorRT optimisation profile YAML (default: derived from the model; see docs/ENGINES.md).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// GPU index for cuda and tensorrt.
    #[arg(long, default_value_t = 0)]
    device: i32,
}

fn run(args: Args) -> anyhow::Result<()> {
    let options = BuildOptions {
        target: args.target,
        precision: args.dtype,
        profile: args.profile,
        device: args.device,
    };
    let started = Instant::now();
    let report = skyreels_engines::build(&args.engine_dir, &options)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for graph in &report.graphs {
        eprintln!(
            "  {:<28} → {:<34} {:>5} → {:>5} nodes  {:.2}s",
            graph.original, graph.optimised, graph.nodes.0, graph.nodes.1, graph.seconds
        );
    }
    let record = &report.record;
    eprintln!(
        "built {} for {} ({}{}, ONNX Runtime {}) in {:.2}s",
        args.engine_dir.display(),
        record.backend,
        record.precision,
        record
            .gpu
            .as_deref()
            .map(|g| format!(", {g}"))
            .unwrap_or_default(),
        record.onnxruntime_version,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
