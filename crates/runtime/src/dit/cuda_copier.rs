//! [`LayerCopier`] on a GPU: every layer's weights in pinned host memory (`cuMemHostAlloc`), two
//! device slots allocated once, each copy issued with `cuMemcpyHtoDAsync` on a copy stream of its
//! own and followed by an event. ONNX Runtime runs on its own stream, so the compute is fenced
//! on the host: a layer runs once its copy event completed (`wait_copied`), and a slot is refilled
//! only after everything queued on the GPU before it finished (`computed`; ONNX Runtime's
//! `Run` has synchronised its stream by then, so this wait costs only the copy still in flight,
//! which the next layer needs anyway). The copy of layer `i + 1` is issued before layer `i` runs,
//! so it overlaps layer `i`'s compute. The block graphs bind ONNX Runtime tensors created over
//! the slots' device memory. cudarc gives streams, events and allocations; raw pointers are
//! confined to this module.
#![expect(
    unsafe_code,
    reason = "pinned memory is uninitialised when allocated, asynchronous copies and ONNX Runtime tensors over device memory take raw pointers"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::sys as cuda;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, DriverError, PinnedHostSlice,
};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::value::{DynValue, DynValueRefMut, Shape, TensorElementType, TensorRefMut};
use skyreels_contract::GraphEntry;
use skyreels_contract::manifest::DitComponent;

use super::streaming::{LayerCopier, SLOTS, SlotEntry, read_layers};
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

/// Streams layer weights from pinned host memory into two device slots on GPU `device`.
pub struct CudaCopier {
    /// Tensors over the slots' memory: dropped before the slots (fields drop in order).
    views: [HashMap<String, DynValueRefMut<'static>>; SLOTS],
    copied: [CudaEvent; SLOTS],
    /// The device memory the views point into.
    #[expect(
        dead_code,
        reason = "owned only to keep the slots' memory alive for the views"
    )]
    slots: [CudaSlice<u8>; SLOTS],
    slot_pointers: [cuda::CUdeviceptr; SLOTS],
    layers: Vec<PinnedHostSlice<u8>>,
    slot_bytes: usize,
    copy_stream: Arc<CudaStream>,
    context: Arc<CudaContext>,
}

impl CudaCopier {
    /// Reads every layer's weights of `component` from `engine_dir` (checked against the block
    /// graphs `graphs`) into pinned host memory and allocates the two slots on GPU `device`.
    pub fn load(
        engine_dir: &Path,
        component: &DitComponent,
        graphs: &[&GraphEntry],
        device: i32,
    ) -> Result<CudaCopier> {
        crate::parallel::nccl::device_count()?;
        let context = CudaContext::new(device as usize)
            .map_err(cuda_error(format!("opening GPU {device}")))?;
        let copy_stream = context
            .new_stream()
            .map_err(cuda_error("creating the weight copy stream"))?;
        let (layout, layers) = read_layers(engine_dir, component, graphs, |bytes| {
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
        let slot_bytes = layout.bytes.max(1);
        let allocate = || {
            copy_stream
                .alloc_zeros::<u8>(slot_bytes)
                .map_err(cuda_error(format!(
                    "allocating a {slot_bytes}-byte weight slot on GPU {device}"
                )))
        };
        let slots = [allocate()?, allocate()?];
        copy_stream
            .synchronize()
            .map_err(cuda_error("clearing the weight slots"))?;
        let slot_pointers = [0, 1].map(|slot| {
            let (pointer, _record) = slots[slot].device_ptr(&copy_stream);
            pointer
        });
        let memory = MemoryInfo::new(
            AllocationDevice::CUDA,
            device,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(ort_error("describing the weight slots' memory"))?;
        let views_of = |slot: usize| -> Result<HashMap<String, DynValueRefMut<'static>>> {
            layout
                .entries
                .iter()
                .map(|entry| {
                    let view = device_view(&memory, slot_pointers[slot], entry)?;
                    Ok((entry.name.clone(), view))
                })
                .collect()
        };
        let views = [views_of(0)?, views_of(1)?];
        let event = || {
            context
                .new_event(None)
                .map_err(cuda_error("creating a copy event"))
        };
        let copied = [event()?, event()?];
        Ok(CudaCopier {
            views,
            copied,
            slots,
            slot_pointers,
            layers,
            slot_bytes: layout.bytes,
            copy_stream,
            context,
        })
    }
}

/// An ONNX Runtime tensor of `entry`'s type and shape over the slot memory at `base + offset`.
fn device_view(
    memory: &MemoryInfo,
    base: cuda::CUdeviceptr,
    entry: &SlotEntry,
) -> Result<DynValueRefMut<'static>> {
    let pointer = (base + entry.offset as u64) as usize as *mut ort::sys::c_void;
    let shape = Shape::new(entry.shape.iter().map(|&d| d as i64));
    let context = format!("creating a tensor over weight slot `{}`", entry.name);
    // SAFETY: `pointer` lies in a device allocation of the GPU `memory` names, with `entry.length`
    // bytes (the shape's elements of the dtype) from it inside the slot; the slot outlives the
    // tensor because `CudaCopier` drops its views before its slots.
    let view = unsafe {
        match entry.dtype {
            TensorElementType::Float16 => {
                TensorRefMut::<half::f16>::from_raw(memory.clone(), pointer, shape)
                    .map(TensorRefMut::into_dyn)
            }
            TensorElementType::Bfloat16 => {
                TensorRefMut::<half::bf16>::from_raw(memory.clone(), pointer, shape)
                    .map(TensorRefMut::into_dyn)
            }
            _ => TensorRefMut::<f32>::from_raw(memory.clone(), pointer, shape)
                .map(TensorRefMut::into_dyn),
        }
    };
    view.map_err(ort_error(context))
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
        // SAFETY: the source is a pinned allocation of at least `slot_bytes` bytes that is never
        // written after loading, the destination is the slot's device allocation of `slot_bytes`
        // bytes, and no compute reads the slot any more (`computed` waited for it).
        let status = unsafe {
            cuda::cuMemcpyHtoDAsync_v2(
                self.slot_pointers[slot],
                source.cast(),
                self.slot_bytes,
                self.copy_stream.cu_stream(),
            )
        };
        status.result().map_err(cuda_error(format!(
            "copying layer {layer}'s weights to the GPU"
        )))?;
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
        self.views[slot].get(name).map(|view| &**view)
    }
}

impl Drop for CudaCopier {
    fn drop(&mut self) {
        let _ = self.copy_stream.synchronize();
    }
}
