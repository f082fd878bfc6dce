//! Running a [`BuildPlan`] with ONNX Runtime and recording it in the manifest.
//!
//! - `cpu`/`cuda`: a session with that execution provider (CUDA registered with
//!   `error_on_failure`), full graph optimisation, and `optimized_model_filepath`, so ONNX Runtime
//!   writes `<stem>.<target>.onnx` with its weights in `<stem>.<target>.weights` (initializers of
//!   1 KiB and more: the graph itself stays far below protobuf's 2 GB). The CPU build leaves out
//!   `NchwcTransformer`, whose blocked layouts depend on the CPU's vector width; the runtime applies
//!   it again when it loads the graph.
//! - `tensorrt`: a session with the TensorRT provider and the CUDA provider for the nodes TensorRT
//!   does not parse (the plan names them; no CPU fallback), explicit optimisation profiles, engine
//!   and timing caches, and EPContext output (`ep.context_enable`, engine in a file beside
//!   `<stem>.tensorrt.onnx`).

use std::path::Path;
use std::time::Instant;

use ort::ep::ExecutionProviderDispatch;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use skyreels_contract::Manifest;
use skyreels_contract::manifest::BuildRecord;
use skyreels_graph::Model;

use crate::error::{BuildError, Result};
use crate::plan::{BuildOptions, BuildPlan, GraphJob, Precision, Target};
use crate::profile::ProfileShapes;

/// Initializers this large or larger go to the external weights file of an optimised graph.
const EXTERNAL_MIN_BYTES: usize = 1024;
pub use skyreels_runtime::session::TENSORRT_CACHE_DIR;

/// One built graph.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltGraph {
    /// The exported graph file.
    pub original: String,
    /// The file written for the backend.
    pub optimised: String,
    /// Nodes before and after optimisation.
    pub nodes: (usize, usize),
    /// Wall time.
    pub seconds: f64,
}

/// What a build did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// The record written to the manifest.
    pub record: BuildRecord,
    /// Each graph.
    pub graphs: Vec<BuiltGraph>,
    /// Warnings from planning.
    pub warnings: Vec<String>,
}

fn ort_error<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> BuildError + '_ {
    move |e| BuildError::Ort {
        context: context.to_string(),
        message: e.to_string(),
    }
}

/// Builds the engine at `engine_dir` for `options.target` and records it in `manifest.yaml`.
/// Missing backend libraries or GPU fail before anything is written.
pub fn build(engine_dir: &Path, options: &BuildOptions) -> Result<BuildReport> {
    let mut manifest = Manifest::load(engine_dir)?;
    let plan = BuildPlan::new(engine_dir, &manifest, options)?;
    let onnxruntime_library = skyreels_runtime::onnxruntime::library_path()?;
    let gpu = skyreels_runtime::requirements::check(plan.target, &onnxruntime_library, plan.device)
        .map_err(|unavailable| BuildError::BackendUnavailable(unavailable.describe("build for")))?;
    let onnxruntime_version = skyreels_runtime::engine::onnxruntime_version()?;

    // No record while files change: a build that stops half-way leaves the exported graphs in use.
    let previous = manifest.build.take();
    if previous.is_some() {
        manifest.save(engine_dir)?;
    }
    let mut graphs = Vec::new();
    for job in &plan.jobs {
        graphs.push(build_graph(&plan, job)?);
    }
    let record = BuildRecord {
        backend: plan.target,
        precision: plan.precision,
        onnxruntime_version,
        gpu,
        files: plan
            .jobs
            .iter()
            .map(|j| (j.entry.file.clone(), j.output.clone()))
            .collect(),
    };
    manifest.build = Some(record.clone());
    manifest.save(engine_dir)?;
    if let Some(previous) = previous {
        remove_stale(engine_dir, &previous, &plan)?;
    }
    Ok(BuildReport {
        record,
        graphs,
        warnings: plan.warnings,
    })
}

/// Deletes the files of an earlier build for another target that this build did not rewrite.
fn remove_stale(engine_dir: &Path, previous: &BuildRecord, plan: &BuildPlan) -> Result<()> {
    let current: Vec<&str> = plan
        .jobs
        .iter()
        .flat_map(|j| [j.output.as_str(), j.weights.as_str()])
        .collect();
    for optimised in previous.files.values() {
        let weights = optimised
            .strip_suffix(".onnx")
            .map(|stem| format!("{stem}.weights"));
        for file in std::iter::once(optimised.clone()).chain(weights) {
            let path = engine_dir.join(&file);
            if !current.contains(&file.as_str()) && path.is_file() {
                fs_err::remove_file(path)?;
            }
        }
    }
    Ok(())
}

fn node_count(path: &Path) -> Result<usize> {
    let model = Model::load(path).map_err(|e| BuildError::Graph {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(model.proto.graph.map_or(0, |g| g.node.len()))
}

fn build_graph(plan: &BuildPlan, job: &GraphJob) -> Result<BuiltGraph> {
    let started = Instant::now();
    let dir = &plan.engine_dir;
    let source = dir.join(&job.entry.file);
    let output = dir.join(&job.output);
    for stale in [&output, &dir.join(&job.weights)] {
        if stale.is_file() {
            fs_err::remove_file(stale)?;
        }
    }
    let context = format!("building {} for {}", job.entry.file, plan.target);
    let environment = skyreels_runtime::onnxruntime::environment()?;
    let builder = Session::builder(&environment).map_err(ort_error(&context))?;
    let mut builder = match plan.target {
        Target::Cpu | Target::Cuda => optimiser(builder, plan, job, &context)?,
        Target::TensorRt => tensorrt(builder, plan, job, &context)?,
    };
    let session = builder
        .commit_from_file(&source)
        .map_err(ort_error(&context))?;
    drop(session);
    if !output.is_file() {
        return Err(BuildError::Ort {
            context,
            message: format!("ONNX Runtime wrote no {}", output.display()),
        });
    }
    check_external_data(dir, &output)?;
    verify_loads(plan, &output)?;
    Ok(BuiltGraph {
        original: job.entry.file.clone(),
        optimised: job.output.clone(),
        nodes: (node_count(&source)?, node_count(&output)?),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn providers(plan: &BuildPlan) -> Vec<ExecutionProviderDispatch> {
    match plan.target {
        Target::Cpu => vec![],
        Target::Cuda => vec![
            ort::ep::CUDA::default()
                .with_device_id(plan.device)
                .build()
                .error_on_failure(),
        ],
        // TensorRT is built in `tensorrt`, with its options; CUDA takes the nodes it does not.
        Target::TensorRt => vec![
            ort::ep::CUDA::default()
                .with_device_id(plan.device)
                .build()
                .error_on_failure(),
        ],
    }
}

fn optimiser(
    builder: SessionBuilder,
    plan: &BuildPlan,
    job: &GraphJob,
    context: &str,
) -> Result<SessionBuilder> {
    let mut builder = builder
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(ort_error(context))?
        .with_optimized_model_path(plan.engine_dir.join(&job.output))
        .map_err(ort_error(context))?
        .with_config_entry(
            "session.optimized_model_external_initializers_file_name",
            &job.weights,
        )
        .map_err(ort_error(context))?
        .with_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes",
            EXTERNAL_MIN_BYTES.to_string(),
        )
        .map_err(ort_error(context))?;
    if plan.target == Target::Cpu {
        builder = builder
            .with_config_entry(
                "optimization.disable_specified_optimizers",
                "NchwcTransformer",
            )
            .map_err(ort_error(context))?;
    }
    builder
        .with_execution_providers(providers(plan))
        .map_err(ort_error(context))
}

fn tensorrt(
    builder: SessionBuilder,
    plan: &BuildPlan,
    job: &GraphJob,
    context: &str,
) -> Result<SessionBuilder> {
    let dir = &plan.engine_dir;
    let cache = dir.join(TENSORRT_CACHE_DIR);
    fs_err::create_dir_all(&cache)?;
    let stem = job.output.strip_suffix(".onnx").unwrap_or(&job.output);
    let mut provider = ort::ep::TensorRT::default()
        .with_device_id(plan.device)
        .with_fp16(plan.precision == Precision::Fp16)
        .with_bf16(plan.precision == Precision::Bf16)
        .with_engine_cache(true)
        .with_engine_cache_prefix(stem)
        .with_timing_cache(true)
        .with_timing_cache_path(cache.display())
        .with_detailed_build_log(true);
    if let Some(profile) = job.profile.as_ref().filter(|p| !p.is_empty()) {
        provider = provider
            .with_profile_min_shapes(ProfileShapes::render(&profile.min))
            .with_profile_opt_shapes(ProfileShapes::render(&profile.opt))
            .with_profile_max_shapes(ProfileShapes::render(&profile.max));
    }
    builder
        .with_config_entry("ep.context_enable", "1")
        .map_err(ort_error(context))?
        .with_config_entry(
            "ep.context_file_path",
            dir.join(&job.output).display().to_string(),
        )
        .map_err(ort_error(context))?
        .with_config_entry("ep.context_embed_mode", "0")
        .map_err(ort_error(context))?
        .with_config_entry("session.disable_cpu_ep_fallback", "1")
        .map_err(ort_error(context))?
        .with_execution_providers(
            std::iter::once(provider.build().error_on_failure())
                .chain(providers(plan))
                .collect::<Vec<_>>(),
        )
        .map_err(ort_error(context))
}

/// Every external-data location of the optimised graph must be a plain file name in the engine
/// directory (ONNX Runtime refuses `..`, absolute paths and links out of the model's folder).
fn check_external_data(dir: &Path, path: &Path) -> Result<()> {
    let model = Model::load(path).map_err(|e| BuildError::Graph {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let graph = model.proto.graph.unwrap_or_default();
    for tensor in &graph.initializer {
        for entry in tensor
            .external_data
            .iter()
            .filter(|e| e.key.as_deref() == Some("location"))
        {
            let location = entry.value.clone().unwrap_or_default();
            let plain =
                Path::new(&location).components().count() == 1 && !location.starts_with('/');
            if !plain || !dir.join(&location).is_file() {
                return Err(BuildError::Graph {
                    path: path.to_path_buf(),
                    message: format!(
                        "initializer `{}` points at external data `{location}`, which is not a file in {}",
                        tensor.name.clone().unwrap_or_default(),
                        dir.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Loads the written graph once more, as the runtime will.
fn verify_loads(plan: &BuildPlan, path: &Path) -> Result<()> {
    if plan.target == Target::TensorRt {
        return Ok(()); // loading an EPContext model needs the same provider; the build just ran it
    }
    let context = format!("loading the optimised {}", path.display());
    let environment = skyreels_runtime::onnxruntime::environment()?;
    let mut builder = Session::builder(&environment)
        .map_err(ort_error(&context))?
        .with_execution_providers(providers(plan))
        .map_err(ort_error(&context))?;
    builder
        .commit_from_file(path)
        .map_err(ort_error(&context))?;
    Ok(())
}
