//! One ONNX graph of an engine as an ONNX Runtime session, run over a pool of named tensors:
//! each graph takes its inputs from the pool by name and puts its outputs back, so the graphs
//! of a component chain in manifest order.

use std::collections::HashMap;
use std::path::Path;

use ort::ep::ExecutionProviderDispatch;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{RunOptions, Session, builder::GraphOptimizationLevel};
use ort::value::{DynValue, Tensor as OrtTensor, TensorValueType, ValueType};
use skyreels_contract::{GraphEntry, Target};

use crate::error::{Result, RuntimeError, ort_error};
use crate::tensor::Tensor;

/// Folder (in the engine directory) of TensorRT's timing cache, written by `skyreels-build`.
pub const TENSORRT_CACHE_DIR: &str = "tensorrt_cache";

/// Where graphs run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum Backend {
    /// ONNX Runtime's CPU provider; `threads = 0` lets ORT choose.
    Cpu {
        /// Intra-op threads.
        threads: usize,
    },
    /// ONNX Runtime's CUDA provider on one GPU.
    Cuda {
        /// GPU index.
        device: i32,
    },
    /// ONNX Runtime's TensorRT provider on one GPU, running the TensorRT engines that
    /// `skyreels-build --target tensorrt` wrote (EPContext graphs), with the CUDA provider for
    /// the nodes TensorRT does not take.
    #[serde(rename = "tensorrt")]
    TensorRt {
        /// GPU index.
        device: i32,
    },
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Cpu { threads: 0 } => write!(f, "cpu"),
            Backend::Cpu { threads } => write!(f, "cpu ({threads} threads)"),
            Backend::Cuda { device } => write!(f, "cuda (GPU {device})"),
            Backend::TensorRt { device } => write!(f, "tensorrt (GPU {device})"),
        }
    }
}

impl Backend {
    /// The backend's name as flags and build records spell it (`cpu`, `cuda`, `tensorrt`).
    pub fn name(&self) -> &'static str {
        self.target().name()
    }

    /// The target an engine must be exported or built for to run here.
    pub fn target(&self) -> Target {
        match self {
            Backend::Cpu { .. } => Target::Cpu,
            Backend::Cuda { .. } => Target::Cuda,
            Backend::TensorRt { .. } => Target::TensorRt,
        }
    }

    /// The GPU index of a GPU backend.
    pub fn device(&self) -> Option<i32> {
        match self {
            Backend::Cpu { .. } => None,
            Backend::Cuda { device } | Backend::TensorRt { device } => Some(*device),
        }
    }

    /// The backend of `target` on GPU `device` (`threads` intra-op threads for the CPU).
    pub fn new(target: Target, device: i32, threads: usize) -> Backend {
        match target {
            Target::Cpu => Backend::Cpu { threads },
            Target::Cuda => Backend::Cuda { device },
            Target::TensorRt => Backend::TensorRt { device },
        }
    }

    /// Execution providers in priority order; `engine_dir` holds TensorRT's timing cache.
    fn providers(&self, engine_dir: &Path) -> Vec<ExecutionProviderDispatch> {
        match self {
            Backend::Cpu { .. } => vec![],
            // The engines are the EPContext nodes of the built graphs (`ep_cache_context` names
            // the engine file beside the graph); the timing cache is the one the build filled.
            Backend::TensorRt { device } => vec![
                ort::ep::TensorRT::default()
                    .with_device_id(*device)
                    .with_timing_cache(true)
                    .with_timing_cache_path(
                        engine_dir.join(TENSORRT_CACHE_DIR).display().to_string(),
                    )
                    .build()
                    .error_on_failure(),
                cuda_provider(*device),
            ],
            Backend::Cuda { device } => vec![cuda_provider(*device)],
        }
    }
}

/// ONNX Runtime's CUDA provider on GPU `device`, as every CUDA session here configures it.
fn cuda_provider(device: i32) -> ExecutionProviderDispatch {
    // Grow the device arena by what is asked, not by powers of two: at 51,000 tokens the
    // doubling strategy strands tens of GiB.
    // cuDNN may take as much workspace as its fastest convolution wants (ONNX Runtime's
    // default); SKYREELS_CUDNN_MAX_WORKSPACE=0 caps it to trade VAE speed for memory.
    let mut cuda = ort::ep::CUDA::default()
        .with_device_id(device)
        .with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested)
        .with_conv_max_workspace(
            std::env::var("SKYREELS_CUDNN_MAX_WORKSPACE").map_or(true, |v| v != "0"),
        );
    // SKYREELS_CUDNN_ALGO_SEARCH=heuristic|default picks cuDNN's convolution algorithm
    // without trying each one (ONNX Runtime's default is an exhaustive search).
    match std::env::var("SKYREELS_CUDNN_ALGO_SEARCH").as_deref() {
        Ok("heuristic") => {
            cuda = cuda.with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
        }
        Ok("default") => {
            cuda = cuda.with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Default)
        }
        _ => {}
    }
    // Switches for the VAE's convolutions, off by default: SKYREELS_CUDA_PREFER_NHWC=1 runs them
    // channels-last (the decode's peak 13.0 -> 9.3 GiB for 5 % of its time on an H200; its
    // accuracy on the GPU is not measured yet); SKYREELS_CUDA_FUSE_CONV_BIAS=1 fuses each
    // convolution's bias into cuDNN's call (failed on a 1x1x1 convolution with ONNX Runtime 1.31).
    if std::env::var("SKYREELS_CUDA_PREFER_NHWC").is_ok_and(|v| v == "1") {
        cuda = cuda.with_prefer_nhwc(true);
    }
    if std::env::var("SKYREELS_CUDA_FUSE_CONV_BIAS").is_ok_and(|v| v == "1") {
        cuda = cuda.with_fuse_conv_bias(true);
    }
    // SKYREELS_CUDA_SDPA_KERNEL=BITS restricts ONNX Runtime's attention kernels (its
    // `sdpa_kernel` flags: 1 flash, 2 memory-efficient, 8 cuDNN flash, 16 math), for tuning.
    if let Some(bits) = std::env::var("SKYREELS_CUDA_SDPA_KERNEL")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        cuda = cuda.with_attention_backend(attention_backends(bits));
    }
    cuda.build().error_on_failure()
}

/// The device memory of GPU `device` as ONNX Runtime names it (graph outputs, allocators, the
/// shared arena).
pub(crate) fn cuda_memory(device: i32) -> ort::Result<MemoryInfo<'static>> {
    MemoryInfo::new(
        AllocationDevice::CUDA,
        device,
        AllocatorType::Device,
        MemoryType::Default,
    )
}

/// The CPU memory the process's shared arena hands out (CPU graph outputs, [`cuda_arena::register_cpu`]).
///
/// [`cuda_arena::register_cpu`]: crate::cuda_arena::register_cpu
pub(crate) fn cpu_memory() -> ort::Result<MemoryInfo<'static>> {
    MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )
}

/// ONNX Runtime's attention-kernel flags from their bit values.
fn attention_backends(bits: u32) -> ort::ep::cuda::AttentionBackend {
    use ort::ep::cuda::AttentionBackend as A;
    let all = [
        A::FLASH_ATTENTION,
        A::EFFICIENT_ATTENTION,
        A::TRT_FUSED_ATTENTION,
        A::CUDNN_FLASH_ATTENTION,
        A::MATH,
        A::TRT_FLASH_ATTENTION,
        A::TRT_CROSS_ATTENTION,
        A::TRT_CAUSAL_ATTENTION,
        A::LEAN_ATTENTION,
    ];
    all.into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(A::none(), |acc, (_, flag)| acc | flag)
}

/// Named tensors living in ONNX Runtime values.
#[derive(Default)]
pub struct TensorPool {
    values: HashMap<String, DynValue>,
}

impl TensorPool {
    /// An empty pool.
    pub fn new() -> TensorPool {
        TensorPool::default()
    }

    /// Puts a float32 tensor under `name`.
    pub fn insert_f32(&mut self, name: &str, tensor: &Tensor) -> Result<()> {
        let value = OrtTensor::from_array((tensor.shape.clone(), tensor.data.clone()))
            .map_err(ort_error(format!("creating tensor `{name}`")))?;
        self.values.insert(name.to_string(), value.into_dyn());
        Ok(())
    }

    /// Puts an int64 tensor under `name`.
    pub fn insert_i64(&mut self, name: &str, shape: Vec<usize>, data: Vec<i64>) -> Result<()> {
        let value = OrtTensor::from_array((shape, data))
            .map_err(ort_error(format!("creating tensor `{name}`")))?;
        self.values.insert(name.to_string(), value.into_dyn());
        Ok(())
    }

    /// Puts an ONNX Runtime value under `name`.
    pub fn insert(&mut self, name: &str, value: DynValue) {
        self.values.insert(name.to_string(), value);
    }

    /// Adds named values (a graph's outputs), replacing any of the same name.
    pub fn extend(&mut self, values: impl IntoIterator<Item = (String, DynValue)>) {
        self.values.extend(values);
    }

    /// The value under `name`.
    pub fn get(&self, name: &str) -> Option<&DynValue> {
        self.values.get(name)
    }

    /// The dims of the tensor under `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        match self.values.get(name).map(DynValue::dtype) {
            Some(ValueType::Tensor { shape, .. }) => {
                Ok(shape.iter().map(|&d| d as usize).collect())
            }
            Some(_) => Err(RuntimeError::Tensor {
                name: name.to_string(),
                message: "is not a tensor".into(),
            }),
            None => Err(RuntimeError::Tensor {
                name: name.to_string(),
                message: "not produced by any graph".into(),
            }),
        }
    }

    /// Removes and returns the value under `name`.
    pub fn remove(&mut self, name: &str) -> Option<DynValue> {
        self.values.remove(name)
    }

    /// Copies the float32 tensor `name` to the host (from the GPU when a graph left it there).
    pub fn to_host(&self, name: &str) -> Result<Tensor> {
        let value = self.values.get(name).ok_or_else(|| RuntimeError::Tensor {
            name: name.to_string(),
            message: "not produced by any graph".into(),
        })?;
        let context = format!("reading tensor `{name}`");
        let tensor = value
            .view()
            .downcast::<TensorValueType<f32>>()
            .map_err(ort_error(context.clone()))?;
        let memory = tensor.memory_info();
        if !memory.is_cpu_accessible() {
            if memory.allocation_device() != AllocationDevice::CUDA {
                let shape: Vec<usize> = tensor.shape().iter().map(|&d| d as usize).collect();
                let data = crate::device_upload::download_f32(
                    memory.device_id(),
                    tensor.data_ptr(),
                    shape.iter().product(),
                    &format!("tensor `{name}`"),
                )?;
                return Tensor::new(shape, data);
            }
            let host = tensor
                .to(AllocationDevice::CPU, 0)
                .map_err(ort_error(context.clone()))?;
            let (shape, data) = host
                .try_extract_tensor::<f32>()
                .map_err(ort_error(context))?;
            return Tensor::new(shape.iter().map(|&d| d as usize).collect(), data.to_vec());
        }
        let (shape, data) = tensor
            .try_extract_tensor::<f32>()
            .map_err(ort_error(context))?;
        Tensor::new(shape.iter().map(|&d| d as usize).collect(), data.to_vec())
    }
}

/// The file of graph `entry` in `engine_dir`, or the error naming it when it is missing.
pub(crate) fn graph_file(engine_dir: &Path, entry: &GraphEntry) -> Result<std::path::PathBuf> {
    let path = engine_dir.join(&entry.file);
    if !path.is_file() {
        return Err(RuntimeError::Engine {
            path: engine_dir.to_path_buf(),
            message: format!(
                "graph file {} is missing\n  fix: re-export the engine with skyreels-export",
                entry.file
            ),
        });
    }
    Ok(path)
}

/// `SKYREELS_CUDA_ARENA_SHRINK=every`: every run on a GPU ends with the arena's free blocks given
/// back to CUDA, so no run starts with blocks an earlier run fragmented (a measurement knob: each
/// run then allocates its activations from CUDA again).
fn shrink_every_run() -> bool {
    static EVERY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        std::env::var("SKYREELS_CUDA_ARENA_SHRINK").is_ok_and(|v| v == "every")
            && !crate::cuda_arena::cuda_direct()
    })
}

/// A loaded graph.
pub struct GraphSession {
    session: Session,
    /// The manifest entry it was loaded from.
    pub entry: GraphEntry,
    /// The GPU whose memory receives the outputs (CUDA backend), so that values passed from graph
    /// to graph (DiT tokens, VAE causal caches) never cross to the host.
    device: Option<i32>,
    /// Give the arena's free blocks back to CUDA at the end of the next run.
    shrink_arena: bool,
}

impl GraphSession {
    /// Loads `engine_dir/entry.file` on `backend`.
    pub fn load(engine_dir: &Path, entry: &GraphEntry, backend: &Backend) -> Result<GraphSession> {
        let environment = crate::onnxruntime::environment()?;
        let path = graph_file(engine_dir, entry)?;
        let context = format!("loading {}", path.display());
        let mut builder = Session::builder(&environment)
            .map_err(ort_error(context.clone()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| RuntimeError::Ort {
                context: context.clone(),
                message: e.to_string(),
            })?
            .with_execution_providers(backend.providers(engine_dir))
            .map_err(|e| RuntimeError::Ort {
                context: context.clone(),
                message: e.to_string(),
            })?;
        let shared_arena = match backend {
            Backend::Cuda { device } if crate::cuda_arena::shared_arena_enabled() => {
                crate::cuda_arena::register(&environment, *device)?;
                true
            }
            Backend::Cuda { .. } | Backend::TensorRt { .. } => false,
            Backend::Cpu { .. } => {
                crate::cuda_arena::register_cpu(&environment)?;
                true
            }
        };
        if shared_arena {
            builder = builder
                .with_env_allocators()
                .map_err(|e| RuntimeError::Ort {
                    context: context.clone(),
                    message: e.to_string(),
                })?;
        }
        // ONNX Runtime's memory pattern serves all of a run's activations from one block once it
        // has seen a run of the same shapes; on a GPU that block (6.5 GB for the VAE's chunk at
        // 544x960) comes on top of the blocks the first run left free in the arena. Off on GPUs:
        // the VAE decode's peak fell from 20.0 to 13.0 GiB and the 1.3B DiT forward's from 10.5
        // to 9.1 GiB at the same speed (H200, run 9). SKYREELS_ORT_MEM_PATTERN=1|0 overrides.
        let memory_pattern = match std::env::var("SKYREELS_ORT_MEM_PATTERN").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => matches!(backend, Backend::Cpu { .. }),
        };
        if !memory_pattern {
            builder = builder
                .with_memory_pattern(false)
                .map_err(|e| RuntimeError::Ort {
                    context: context.clone(),
                    message: e.to_string(),
                })?;
        }
        // SKYREELS_ORT_PROFILE=PREFIX writes ONNX Runtime's per-node profile of every session to
        // PREFIX-<graph>_<timestamp>.json when the session ends (tools/bench/ort_profile_summary.py).
        if let Ok(prefix) = std::env::var("SKYREELS_ORT_PROFILE") {
            builder = builder
                .with_profiling(format!("{prefix}-{}", entry.name))
                .map_err(|e| RuntimeError::Ort {
                    context: context.clone(),
                    message: e.to_string(),
                })?;
        }
        if let Backend::Cpu { threads } = backend
            && *threads > 0
        {
            builder = builder
                .with_intra_threads(*threads)
                .map_err(|e| RuntimeError::Ort {
                    context: context.clone(),
                    message: e.to_string(),
                })?;
        }
        let session = builder
            .commit_from_file(&path)
            .map_err(ort_error(context))?;
        Ok(GraphSession {
            session,
            entry: entry.clone(),
            device: backend.device(),
            shrink_arena: false,
        })
    }

    /// Runs the graph: inputs are taken (borrowed) from `pool`, outputs are added to it.
    pub fn run(&mut self, pool: &mut TensorPool) -> Result<()> {
        let produced = self.run_with(|name| pool.values.get(name))?;
        pool.values.extend(produced);
        Ok(())
    }

    /// Runs the graph with each input looked up by its name in `input` (a pool, a layer's weights,
    /// or both); returns the outputs by name. On CUDA the outputs stay in device memory.
    pub fn run_with<'v>(
        &mut self,
        input: impl Fn(&str) -> Option<&'v DynValue>,
    ) -> Result<Vec<(String, DynValue)>> {
        let mut inputs = Vec::with_capacity(self.entry.inputs.len());
        for spec in &self.entry.inputs {
            let value = input(&spec.name).ok_or_else(|| RuntimeError::Tensor {
                name: spec.name.clone(),
                message: format!("needed by graph `{}` but not provided", self.entry.name),
            })?;
            if let ValueType::Tensor { shape, .. } = value.dtype()
                && shape.len() != spec.shape.len()
            {
                return Err(RuntimeError::Tensor {
                    name: spec.name.clone(),
                    message: format!(
                        "has {} dims, graph `{}` expects {:?}",
                        shape.len(),
                        self.entry.name,
                        spec.shape
                    ),
                });
            }
            inputs.push((spec.name.as_str(), value.view()));
        }
        let context = format!("running graph `{}`", self.entry.name);
        let produced: Vec<(String, DynValue)> = match self.device {
            None => {
                let outputs = self.session.run(inputs).map_err(ort_error(context))?;
                outputs
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect()
            }
            Some(device) => {
                // I/O binding: host inputs are uploaded by ONNX Runtime, device inputs are used in
                // place, and every output stays in GPU memory. A fresh binding per run, so that
                // no output buffer is shared with an earlier run's values still in the pool.
                let mut binding = self
                    .session
                    .create_binding()
                    .map_err(ort_error(context.clone()))?;
                for (name, value) in &inputs {
                    binding
                        .bind_input(*name, &**value)
                        .map_err(ort_error(context.clone()))?;
                }
                let memory = cuda_memory(device).map_err(ort_error(context.clone()))?;
                for spec in &self.entry.outputs {
                    binding
                        .bind_output_to_device(spec.name.as_str(), &memory)
                        .map_err(ort_error(context.clone()))?;
                }
                let outputs = if std::mem::take(&mut self.shrink_arena) || shrink_every_run() {
                    let mut options = RunOptions::new().map_err(ort_error(context.clone()))?;
                    options
                        .set(
                            "memory.enable_memory_arena_shrinkage",
                            format!("gpu:{device}"),
                        )
                        .map_err(ort_error(context.clone()))?;
                    self.session.run_binding_with_options(&binding, &options)
                } else {
                    self.session.run_binding(&binding)
                }
                .map_err(ort_error(context))?;
                outputs
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect()
            }
        };
        Ok(produced)
    }

    /// At the end of the next run the CUDA arena gives every block no tensor holds back to CUDA
    /// (ONNX Runtime's arena shrinkage), so memory another model left free is not kept reserved
    /// beside what this graph needs: the 97-frame generation's peak 16.8 -> 14.0 GiB at the same
    /// speed (H200, run 10). `SKYREELS_CUDA_ARENA_SHRINK=0` keeps the blocks; nothing on the CPU or
    /// without an arena (`SKYREELS_CUDA_ARENA=direct`).
    pub fn shrink_arena_after_next_run(&mut self) {
        self.shrink_arena = self.device.is_some()
            && !crate::cuda_arena::cuda_direct()
            && std::env::var("SKYREELS_CUDA_ARENA_SHRINK").map_or(true, |v| v != "0");
    }

    /// The GPU this graph runs on (CUDA backend).
    pub fn device(&self) -> Option<i32> {
        self.device
    }

    /// An allocator of the GPU memory this graph's outputs live in (CUDA backend), for values
    /// made between graph runs (sequence parallel's exchanges); `None` on the CPU.
    pub fn device_allocator(&self) -> Result<Option<ort::memory::Allocator>> {
        let Some(device) = self.device else {
            return Ok(None);
        };
        let context = format!("creating a GPU allocator for graph `{}`", self.entry.name);
        let memory = cuda_memory(device).map_err(ort_error(context.clone()))?;
        Ok(Some(
            ort::memory::Allocator::new(&self.session, memory).map_err(ort_error(context))?,
        ))
    }

    /// The statistics of the arena this session allocates from: the GPU's (shared by every
    /// session on it unless `SKYREELS_CUDA_ARENA=session`), or the process's CPU arena.
    pub fn arena_stats(&self) -> Result<Option<crate::cuda_arena::ArenaStats>> {
        let allocator = match self.device_allocator()? {
            Some(allocator) => allocator,
            None => {
                let context = format!("reading the CPU arena of graph `{}`", self.entry.name);
                let memory = cpu_memory().map_err(ort_error(context.clone()))?;
                ort::memory::Allocator::new(&self.session, memory).map_err(ort_error(context))?
            }
        };
        crate::cuda_arena::stats(&allocator)
    }

    /// Uploads into values on this session's GPU (allocated by its CUDA allocator); `None` on the
    /// CPU.
    pub fn device_upload(&self) -> Result<Option<crate::device_upload::DeviceUpload>> {
        let Some(device) = self.device else {
            return Ok(None);
        };
        let allocator = self
            .device_allocator()?
            .expect("a session with a GPU has a GPU allocator");
        crate::device_upload::DeviceUpload::new(device, allocator).map(Some)
    }
}
