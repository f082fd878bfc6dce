//! [`LayerCopier`] on a GPU: every layer's weights in pinned host memory (`cuMemHostAlloc`), two
//! slots of device tensors allocated once by ONNX Runtime's CUDA allocator, each refill issued as
//! one `cuMemcpyHtoDAsync` per weight on a copy stream of its own and followed by an event. ONNX
//! Runtime runs on its own stream, so the compute is fenced on the host: a layer runs once its copy
//! event completed (`wait_copied`), and a slot is refilled only after everything queued on the GPU
//! before it finished (`computed`; ONNX Runtime's `Run` has synchronised its stream by then, so
//! this wait costs only the copy still in flight, which the next layer needs anyway). The copy of
//! layer `i + 1` is issued before layer `i` runs, so it overlaps layer `i`'s compute.
//! The slots are tensors ONNX Runtime owns, not views over memory allocated here: `ort` clones a
//! borrowed tensor when it is bound as an input (a copy through its identity sessions, behind one
//! global lock), and with borrowed views every streamed forward hung in its first layer waiting on
//! a lock (H200, run 9).
//! cudarc gives streams, events and pinned memory; raw pointers are confined to this module.
#![expect(
    unsafe_code,
    reason = "pinned memory is uninitialised when allocated, asynchronous copies and ONNX Runtime tensors over device memory take raw pointers"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::weights::LayerTable;
use cudarc::driver::sys as cuda;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream, DriverError, PinnedHostSlice};
use ort::memory::Allocator;
use ort::value::{DynTensor, DynValue};
use skyreels_contract::GraphEntry;

use super::streaming::{LayerCopier, SLOTS, read_layers};
use crate::error::{Result, RuntimeError, ort_error};

fn cuda_error(context: impl Into<String>) -> impl FnOnce(DriverError) -> RuntimeError {
    let context = context.into();
    move |e| RuntimeError::Cuda {
        context,
        message: e.to_string(),
    }
}

/// Pinned host memory holding one layer's weights.
struct PinnedLayer(PinnedHostSlice<u8>);

impl AsMut<[u8]> for PinnedLayer {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0
            .as_mut_slice()
            .expect("a pinned buffer no copy has used yet")
    }
}

/// One weight's place: where it lies in a layer's pinned buffer and where its slot tensor's device
/// memory starts.
struct Destination {
    device: cuda::CUdeviceptr,
    offset: usize,
    length: usize,
}

/// Streams layer weights from pinned host memory into two device slots on GPU `device`.
pub struct CudaCopier {
    /// The slots' tensors, owned by ONNX Runtime (freed through `allocator`, dropped after them).
    slots: [HashMap<String, DynValue>; SLOTS],
    destinations: [Vec<Destination>; SLOTS],
    copied: [CudaEvent; SLOTS],
    layers: Vec<PinnedHostSlice<u8>>,
    copy_stream: Arc<CudaStream>,
    context: Arc<CudaContext>,
    #[expect(
        dead_code,
        reason = "owned only so that the slots' tensors are freed by a live allocator"
    )]
    allocator: Allocator,
}

impl CudaCopier {
    /// Reads every layer's weights of `component` from `engine_dir` (checked against the block
    /// graphs `graphs`) into pinned host memory and allocates the two slots on GPU `device` with
    /// `allocator` (a CUDA session's, so the slots come from the arena the graphs use).
    pub(crate) fn load(
        engine_dir: &Path,
        table: &LayerTable<'_>,
        graphs: &[&GraphEntry],
        device: i32,
        allocator: Allocator,
    ) -> Result<CudaCopier> {
        crate::parallel::nccl::device_count()?;
        let context = CudaContext::new(device as usize)
            .map_err(cuda_error(format!("opening GPU {device}")))?;
        let copy_stream = context
            .new_stream()
            .map_err(cuda_error("creating the weight copy stream"))?;
        let (layout, layers) = read_layers(engine_dir, table, graphs, |bytes| {
            // SAFETY: the allocation is filled with zeros through its pointer (valid for `bytes`
            // bytes) before any slice of it is made.
            let mut pinned = unsafe { context.alloc_pinned_with_flags::<u8>(bytes.max(1), 0) }
                .map_err(cuda_error(format!(
                    "allocating {bytes} bytes of pinned host memory for a layer's weights"
                )))?;
            let pointer = pinned
                .as_mut_ptr()
                .map_err(cuda_error("reaching pinned host memory"))?;
            // SAFETY: `pointer` is the start of a fresh host allocation of `bytes.max(1)` bytes.
            unsafe { std::ptr::write_bytes(pointer, 0, bytes.max(1)) };
            Ok(PinnedLayer(pinned))
        })?;
        let layers: Vec<PinnedHostSlice<u8>> = layers.into_iter().map(|l| l.0).collect();
        tracing::debug!(
            "weight streaming: {} layers of {} bytes in pinned host memory",
            layers.len(),
            layout.bytes
        );
        let slot = || -> Result<(HashMap<String, DynValue>, Vec<Destination>)> {
            let mut tensors = HashMap::new();
            let mut destinations = Vec::new();
            for entry in &layout.entries {
                let mut tensor = DynTensor::new(&allocator, entry.dtype, entry.shape.clone())
                    .map_err(ort_error(format!(
                        "allocating weight slot `{}` on GPU {device}",
                        entry.name
                    )))?;
                let pointer = tensor.data_ptr_mut();
                if entry.length > 0 {
                    if pointer.is_null() {
                        return Err(RuntimeError::Cuda {
                            context: format!("allocating weight slot `{}`", entry.name),
                            message: "ONNX Runtime gave a null device pointer".into(),
                        });
                    }
                    destinations.push(Destination {
                        device: pointer as cuda::CUdeviceptr,
                        offset: entry.offset,
                        length: entry.length,
                    });
                }
                tensors.insert(entry.name.clone(), tensor.into_dyn());
            }
            Ok((tensors, destinations))
        };
        let (first, first_destinations) = slot()?;
        let (second, second_destinations) = slot()?;
        tracing::debug!(
            "weight streaming: two slots of {} bytes on GPU {device}",
            layout.bytes
        );
        let event = || {
            context
                .new_event(None)
                .map_err(cuda_error("creating a copy event"))
        };
        let copied = [event()?, event()?];
        Ok(CudaCopier {
            slots: [first, second],
            destinations: [first_destinations, second_destinations],
            copied,
            layers,
            copy_stream,
            context,
            allocator,
        })
    }
}

impl LayerCopier for CudaCopier {
    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn copy(&mut self, layer: usize, slot: usize) -> Result<()> {
        self.context
            .bind_to_thread()
            .map_err(cuda_error("making the GPU current"))?;
        let source = self.layers[layer]
            .as_ptr()
            .map_err(cuda_error("reaching pinned host memory"))?;
        for destination in &self.destinations[slot] {
            // SAFETY: the source range lies in the layer's pinned allocation (the layout that
            // filled it), which is never written after loading; the destination is the slot
            // tensor's device memory of `length` bytes; no compute reads the slot any more
            // (`computed` waited for it).
            let status = unsafe {
                cuda::cuMemcpyHtoDAsync_v2(
                    destination.device,
                    source.add(destination.offset).cast(),
                    destination.length,
                    self.copy_stream.cu_stream(),
                )
            };
            status.result().map_err(cuda_error(format!(
                "copying layer {layer}'s weights to the GPU"
            )))?;
        }
        self.copied[slot]
            .record(&self.copy_stream)
            .map_err(cuda_error("recording a copy event"))
    }

    fn wait_copied(&mut self, slot: usize) -> Result<()> {
        self.copied[slot]
            .synchronize()
            .map_err(cuda_error("waiting for a layer's weights to arrive"))
    }

    fn computed(&mut self, _slot: usize) -> Result<()> {
        self.context
            .synchronize()
            .map_err(cuda_error("waiting for a layer's compute to finish"))
    }

    fn weight(&self, slot: usize, name: &str) -> Option<&DynValue> {
        self.slots[slot].get(name)
    }
}

impl Drop for CudaCopier {
    fn drop(&mut self) {
        let _ = self.copy_stream.synchronize();
    }
}
