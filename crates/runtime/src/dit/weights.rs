//! The transformer layers' weights: read once from the byte ranges the manifest records (the
//! checkpoint's own bytes, referenced in place by the export, or its converted copy), kept where
//! the graphs run (device memory on CUDA, owned by the runtime), and bound to the block graphs
//! layer by layer. Streaming them from host memory instead (offload) is `streaming`, which reads
//! them with the same checks.

use std::collections::{BTreeMap, HashMap};
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

/// The layer weights of a model as its manifest entry records them, and what the layer graphs
/// take besides weights: the DiT's transformer layers, or the text encoder's blocks.
pub(crate) struct LayerTable<'a> {
    /// The model, for messages (`DiT`).
    pub(crate) model: &'static str,
    /// Per layer: weights by the name of the layer-graph input they bind to.
    pub(crate) layers: &'a [BTreeMap<String, ExternalTensor>],
    /// How many layers the model's architecture has.
    pub(crate) expected_layers: usize,
    /// The layer graphs' inputs that are activations, not weights.
    pub(crate) activations: &'a [&'a str],
}

impl<'a> LayerTable<'a> {
    /// The DiT's transformer layers.
    pub(crate) fn dit(component: &'a DitComponent) -> LayerTable<'a> {
        LayerTable {
            model: "DiT",
            layers: &component.layers,
            expected_layers: component.config.num_layers,
            activations: &ACTIVATIONS,
        }
    }
}

/// One layer weight as the manifest records it, checked against the block-graph input it binds to.
pub(crate) struct WeightSource<'a> {
    /// The block-graph input.
    pub(crate) spec: &'a TensorSpec,
    /// Its dims (the input's, which are fixed).
    pub(crate) shape: Vec<usize>,
    /// Where its bytes are.
    pub(crate) location: &'a ExternalTensor,
}

/// The weights of every layer of `table` by input name (sorted), each checked against the
/// layer-graph input it binds to (`graphs`): present for every input that is not an activation,
/// of that input's fixed shape and dtype, in a file of the engine directory.
pub(crate) fn checked_layers<'a>(
    engine_dir: &Path,
    table: &LayerTable<'a>,
    graphs: &[&'a GraphEntry],
) -> Result<Vec<Vec<WeightSource<'a>>>> {
    if table.layers.len() != table.expected_layers {
        return Err(engine_error(
            engine_dir,
            format!(
                "the manifest lists weights for {} layers but the {} has {}",
                table.layers.len(),
                table.model,
                table.expected_layers
            ),
        ));
    }
    let specs: HashMap<&str, &TensorSpec> = graphs
        .iter()
        .flat_map(|graph| &graph.inputs)
        .map(|spec| (spec.name.as_str(), spec))
        .collect();
    let mut file_sizes: HashMap<&str, u64> = HashMap::new();
    let mut layers = Vec::with_capacity(table.layers.len());
    for (index, weights) in table.layers.iter().enumerate() {
        if let Some(missing) = specs
            .keys()
            .find(|name| !table.activations.contains(name) && !weights.contains_key(**name))
        {
            return Err(engine_error(
                engine_dir,
                format!("layer {index} has no weight for block-graph input `{missing}`"),
            ));
        }
        let mut sources = Vec::with_capacity(weights.len());
        for (name, location) in weights {
            let spec = specs.get(name.as_str()).ok_or_else(|| {
                engine_error(
                    engine_dir,
                    format!("layer {index} weight `{name}` is no input of the block graphs"),
                )
            })?;
            if Path::new(&location.file).file_name() != Some(location.file.as_ref()) {
                return Err(engine_error(
                    engine_dir,
                    format!(
                        "layer {index} weight `{name}` is in {:?}, not a file of the engine directory",
                        location.file
                    ),
                ));
            }
            let length = usize::try_from(location.length).unwrap_or(usize::MAX);
            let shape = checked_shape(spec, length).map_err(|message| {
                engine_error(engine_dir, format!("layer {index} `{name}`: {message}"))
            })?;
            // Checked here, before any buffer of `length` bytes is allocated for it.
            let size = match file_sizes.get(location.file.as_str()) {
                Some(size) => *size,
                None => {
                    let size = fs_err::metadata(engine_dir.join(&location.file))?.len();
                    file_sizes.insert(location.file.as_str(), size);
                    size
                }
            };
            if let Some(problem) = outside_its_file(location, size) {
                return Err(engine_error(
                    engine_dir,
                    format!("layer {index} `{name}`: {problem}"),
                ));
            }
            sources.push(WeightSource {
                spec,
                shape,
                location,
            });
        }
        layers.push(sources);
    }
    Ok(layers)
}

/// Why `location` cannot be read from its file of `size` bytes, if it cannot.
pub(crate) fn outside_its_file(location: &ExternalTensor, size: u64) -> Option<String> {
    let end = location.offset.checked_add(location.length);
    end.is_none_or(|end| end > size).then(|| {
        format!(
            "bytes {}..{} lie outside {} ({size} bytes)",
            location.offset,
            location.offset.saturating_add(location.length),
            location.file
        )
    })
}

/// The engine's weight files, opened once each, read by byte range.
pub(crate) struct WeightFiles<'a> {
    engine_dir: &'a Path,
    files: HashMap<String, fs_err::File>,
}

impl<'a> WeightFiles<'a> {
    /// Reads from the files of `engine_dir`.
    pub(crate) fn new(engine_dir: &'a Path) -> WeightFiles<'a> {
        WeightFiles {
            engine_dir,
            files: HashMap::new(),
        }
    }

    /// Fills `destination` (the weight's length) with the bytes of layer `layer`'s `source`.
    pub(crate) fn read_into(
        &mut self,
        layer: usize,
        source: &WeightSource<'_>,
        destination: &mut [u8],
    ) -> Result<()> {
        let location = source.location;
        if !self.files.contains_key(&location.file) {
            let file = fs_err::File::open(self.engine_dir.join(&location.file))?;
            self.files.insert(location.file.clone(), file);
        }
        let file = self.files.get_mut(&location.file).expect("opened above");
        read_range(file, location, destination).map_err(|message| {
            engine_error(
                self.engine_dir,
                format!("layer {layer} `{}`: {message}", source.spec.name),
            )
        })
    }
}

fn engine_error(engine_dir: &Path, message: String) -> RuntimeError {
    RuntimeError::Engine {
        path: engine_dir.to_path_buf(),
        message: format!("{message}\n  fix: re-export the engine with skyreels-export"),
    }
}

/// Every layer's weights, by the block-graph input each one binds to.
pub struct LayerWeights {
    layers: Vec<TensorPool>,
}

impl LayerWeights {
    /// Reads the weights of every layer of `table` from `engine_dir`, checking each against
    /// the layer-graph input it binds to (`graphs`), and puts them on `device` (CUDA) or keeps
    /// them in host memory.
    pub(crate) fn load(
        engine_dir: &Path,
        table: &LayerTable<'_>,
        graphs: &[&GraphEntry],
        device: Option<&DeviceUpload>,
    ) -> Result<LayerWeights> {
        let mut files = WeightFiles::new(engine_dir);
        let mut layers = Vec::with_capacity(table.layers.len());
        for (index, sources) in checked_layers(engine_dir, table, graphs)?
            .into_iter()
            .enumerate()
        {
            let mut pool = TensorPool::new();
            for source in sources {
                let mut bytes = vec![0u8; source.location.length as usize];
                files.read_into(index, &source, &mut bytes)?;
                pool.insert(
                    &source.spec.name,
                    tensor(source.spec, source.shape, &bytes, device)?,
                );
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
    destination: &mut [u8],
) -> std::result::Result<(), String> {
    // Checked again: the file may have changed since `checked_layers` looked at it.
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if let Some(problem) = outside_its_file(location, size) {
        return Err(problem);
    }
    file.seek(SeekFrom::Start(location.offset))
        .and_then(|_| file.read_exact(destination))
        .map_err(|e| e.to_string())
}

/// Bytes per element of a weight dtype the block graphs take.
pub(crate) fn element_size(dtype: &str) -> Option<usize> {
    match dtype {
        "float32" => Some(4),
        "float16" | "bfloat16" => Some(2),
        _ => None,
    }
}

/// The dims of `spec`, checked to hold `length` bytes of its dtype.
fn checked_shape(spec: &TensorSpec, length: usize) -> std::result::Result<Vec<usize>, String> {
    let shape = spec
        .shape
        .iter()
        .map(|d| d.parse::<usize>())
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| format!("binds to input {:?} of symbolic shape", spec.shape))?;
    let element_size = element_size(&spec.dtype)
        .ok_or_else(|| format!("binds to an input of dtype {}", spec.dtype))?;
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
