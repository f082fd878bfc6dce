//! The transformer layers' weights: read once from the byte ranges the manifest records (the
//! checkpoint's own bytes, referenced in place by the export, or its converted copy), kept where
//! the graphs run (device memory on CUDA, owned by the runtime), and bound to the block graphs
//! layer by layer. Streaming them from host memory instead (offload) replaces only this module.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType};
use skyreels_contract::manifest::{DitComponent, ExternalTensor};
use skyreels_contract::{GraphEntry, TensorSpec, io};

use crate::device_upload::DeviceUpload;
use crate::error::{Result, RuntimeError, ort_error};
use crate::session::TensorPool;

/// The block graphs' inputs that are activations from the pool; every other input is a weight.
const ACTIVATIONS: [&str; 6] = [
    io::LAYER_TOKENS,
    io::TIME_MODULATION,
    io::ROPE_COS,
    io::ROPE_SIN,
    io::ATTENTION_OUTPUT,
    io::CONTEXT_TOKENS,
];

/// Every layer's weights, by the block-graph input each one binds to.
pub struct LayerWeights {
    layers: Vec<TensorPool>,
}

impl LayerWeights {
    /// Reads the weights of every layer of `component` from `engine_dir`, checking each against
    /// the block-graph input it binds to (`graphs`), and puts them on `device` (CUDA) or keeps
    /// them in host memory.
    pub fn load(
        engine_dir: &Path,
        component: &DitComponent,
        graphs: &[&GraphEntry],
        device: Option<&DeviceUpload>,
    ) -> Result<LayerWeights> {
        let engine_error = |message: String| RuntimeError::Engine {
            path: engine_dir.to_path_buf(),
            message: format!("{message}\n  fix: re-export the engine with skyreels-export"),
        };
        if component.layers.len() != component.config.num_layers {
            return Err(engine_error(format!(
                "the manifest lists weights for {} layers but the DiT has {}",
                component.layers.len(),
                component.config.num_layers
            )));
        }
        let specs: HashMap<&str, &TensorSpec> = graphs
            .iter()
            .flat_map(|graph| &graph.inputs)
            .map(|spec| (spec.name.as_str(), spec))
            .collect();
        let mut files: HashMap<&str, fs_err::File> = HashMap::new();
        let mut layers = Vec::with_capacity(component.layers.len());
        for (index, weights) in component.layers.iter().enumerate() {
            if let Some(missing) = specs
                .keys()
                .find(|name| !ACTIVATIONS.contains(name) && !weights.contains_key(**name))
            {
                return Err(engine_error(format!(
                    "layer {index} has no weight for block-graph input `{missing}`"
                )));
            }
            let mut pool = TensorPool::new();
            for (name, location) in weights {
                let spec = specs.get(name.as_str()).ok_or_else(|| {
                    engine_error(format!(
                        "layer {index} weight `{name}` is no input of the block graphs"
                    ))
                })?;
                if Path::new(&location.file).file_name() != Some(location.file.as_ref()) {
                    return Err(engine_error(format!(
                        "layer {index} weight `{name}` is in {:?}, not a file of the engine directory",
                        location.file
                    )));
                }
                if !files.contains_key(location.file.as_str()) {
                    let file = fs_err::File::open(engine_dir.join(&location.file))?;
                    files.insert(location.file.as_str(), file);
                }
                let file = files.get_mut(location.file.as_str()).expect("opened above");
                let bytes = read_range(file, location).map_err(|message| {
                    engine_error(format!("layer {index} `{name}`: {message}"))
                })?;
                let shape = checked_shape(spec, bytes.len()).map_err(|message| {
                    engine_error(format!("layer {index} `{name}`: {message}"))
                })?;
                pool.insert(name, tensor(spec, shape, &bytes, device)?);
            }
            layers.push(pool);
        }
        Ok(LayerWeights { layers })
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The weights of layer `index`, by input name.
    pub fn layer(&self, index: usize) -> &TensorPool {
        &self.layers[index]
    }
}

fn read_range(
    file: &mut fs_err::File,
    location: &ExternalTensor,
) -> std::result::Result<Vec<u8>, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if location
        .offset
        .checked_add(location.length)
        .is_none_or(|end| end > size)
    {
        return Err(format!(
            "bytes {}..{} lie outside {} ({size} bytes)",
            location.offset,
            location.offset.saturating_add(location.length),
            location.file
        ));
    }
    let mut bytes = vec![0u8; location.length as usize];
    file.seek(SeekFrom::Start(location.offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The dims of `spec`, checked to hold `length` bytes of its dtype.
fn checked_shape(spec: &TensorSpec, length: usize) -> std::result::Result<Vec<usize>, String> {
    let shape = spec
        .shape
        .iter()
        .map(|d| d.parse::<usize>())
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| format!("binds to input {:?} of symbolic shape", spec.shape))?;
    let element_size = match spec.dtype.as_str() {
        "float32" => 4,
        "float16" | "bfloat16" => 2,
        other => return Err(format!("binds to an input of dtype {other}")),
    };
    let expected = shape.iter().product::<usize>() * element_size;
    if length != expected {
        return Err(format!(
            "{length} bytes for {} {:?}, which needs {expected}",
            spec.dtype, spec.shape
        ));
    }
    Ok(shape)
}

/// The weight as an ONNX Runtime value of `spec`'s dtype, on the GPU of `device` when given.
fn tensor(
    spec: &TensorSpec,
    shape: Vec<usize>,
    bytes: &[u8],
    device: Option<&DeviceUpload>,
) -> Result<DynValue> {
    let context = format!("loading weight `{}`", spec.name);
    if let Some(device) = device {
        let element_type = match spec.dtype.as_str() {
            "float16" => TensorElementType::Float16,
            "bfloat16" => TensorElementType::Bfloat16,
            _ => TensorElementType::Float32,
        };
        return device.upload(element_type, &shape, bytes, &context);
    }
    match spec.dtype.as_str() {
        "float16" => host_tensor(
            shape,
            bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes),
            &context,
        ),
        "bfloat16" => host_tensor(
            shape,
            bytemuck::pod_collect_to_vec::<u8, half::bf16>(bytes),
            &context,
        ),
        _ => host_tensor(
            shape,
            bytemuck::pod_collect_to_vec::<u8, f32>(bytes),
            &context,
        ),
    }
}

fn host_tensor<T>(shape: Vec<usize>, data: Vec<T>, context: &str) -> Result<DynValue>
where
    T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
{
    Ok(OrtTensor::from_array((shape, data))
        .map_err(ort_error(context))?
        .into_dyn())
}
