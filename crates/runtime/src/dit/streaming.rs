//! Weight streaming (`--offload`): every layer's weights stay in host memory (pinned on CUDA) and
//! are copied, one layer ahead of use, into one of two slots that the block graphs bind. The
//! schedule ([`stream_layers`]) is the same on every backend; a [`LayerCopier`] moves the bytes:
//! [`HostCopier`] into host buffers (`--backend cpu`, where it makes the schedule testable), and
//! `cuda_copier::CudaCopier` on a copy stream of its own into device memory, ordered by events.
//! The technique is diffusers' group offloading with streams and Wan2GP's mmgp (SCALE.md).

use std::collections::HashMap;

use ort::memory::Allocator;
use ort::value::{DynTensor, DynValue, TensorElementType};
use skyreels_contract::GraphEntry;

use super::weights::{LayerTable, WeightFiles, WeightSource, checked_layers};
use crate::error::{Result, RuntimeError, ort_error};

/// Offsets of weights inside a slot are multiples of this (CUDA's allocation alignment).
pub const SLOT_ALIGNMENT: usize = 256;

/// Number of slots: layer `i` is computed from slot `i % 2` while layer `i + 1` is copied into
/// the other one.
pub const SLOTS: usize = 2;

/// One weight's place inside a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotEntry {
    /// The block-graph input it binds to.
    pub name: String,
    /// Its element type.
    pub dtype: TensorElementType,
    /// Its dims.
    pub shape: Vec<usize>,
    /// Byte offset inside the slot (a multiple of [`SLOT_ALIGNMENT`]).
    pub offset: usize,
    /// Byte length.
    pub length: usize,
}

/// Where every weight of a layer lies inside a slot; every layer has the same layout because
/// every layer binds the same inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLayout {
    /// The weights, by input name.
    pub entries: Vec<SlotEntry>,
    /// Bytes of one slot (one layer's weights with alignment padding).
    pub bytes: usize,
}

impl SlotLayout {
    /// The layout of `sources` (one layer's weights); refuses a dtype that is not a weight's.
    fn of(sources: &[WeightSource<'_>]) -> Result<SlotLayout> {
        let mut entries = Vec::with_capacity(sources.len());
        let mut offset = 0;
        for source in sources {
            let dtype = element_type(&source.spec.dtype).ok_or_else(|| RuntimeError::Tensor {
                name: source.spec.name.clone(),
                message: format!("weights of dtype {} cannot be streamed", source.spec.dtype),
            })?;
            let length = source.location.length as usize;
            entries.push(SlotEntry {
                name: source.spec.name.clone(),
                dtype,
                shape: source.shape.clone(),
                offset,
                length,
            });
            offset = (offset + length).next_multiple_of(SLOT_ALIGNMENT);
        }
        Ok(SlotLayout {
            entries,
            bytes: offset,
        })
    }
}

fn element_type(dtype: &str) -> Option<TensorElementType> {
    match dtype {
        "float32" => Some(TensorElementType::Float32),
        "float16" => Some(TensorElementType::Float16),
        "bfloat16" => Some(TensorElementType::Bfloat16),
        _ => None,
    }
}

/// Reads every layer of `table` into host buffers laid out as [`SlotLayout`] says, each
/// buffer given by `allocate(bytes)` (plain or pinned memory) and filled in place.
pub(crate) fn read_layers<B: AsMut<[u8]>>(
    engine_dir: &std::path::Path,
    table: &LayerTable<'_>,
    graphs: &[&GraphEntry],
    mut allocate: impl FnMut(usize) -> Result<B>,
) -> Result<(SlotLayout, Vec<B>)> {
    let layers = checked_layers(engine_dir, table, graphs)?;
    let Some(first) = layers.first() else {
        return Err(RuntimeError::Engine {
            path: engine_dir.to_path_buf(),
            message: format!(
                "the {} has no layers\n  fix: re-export the engine with skyreels-export",
                table.model
            ),
        });
    };
    let layout = SlotLayout::of(first)?;
    let mut files = WeightFiles::new(engine_dir);
    let mut buffers = Vec::with_capacity(layers.len());
    for (index, sources) in layers.iter().enumerate() {
        let mut buffer = allocate(layout.bytes)?;
        let bytes = buffer.as_mut();
        for (source, entry) in sources.iter().zip(&layout.entries) {
            files.read_into(
                index,
                source,
                &mut bytes[entry.offset..entry.offset + entry.length],
            )?;
        }
        buffers.push(buffer);
    }
    Ok((layout, buffers))
}

/// Moves layer weights from where they are kept into the slots the block graphs bind, in the
/// order [`stream_layers`] issues: a copy into a slot is ordered after the compute that last read
/// it ([`LayerCopier::computed`]), a compute after the copy it reads ([`LayerCopier::wait_copied`]).
pub trait LayerCopier: Send {
    /// Number of layers.
    fn num_layers(&self) -> usize;

    /// Issues the copy of layer `layer`'s weights into `slot`, ordered after the last
    /// [`LayerCopier::computed`] of `slot` (it may still be running when this returns).
    fn copy(&mut self, layer: usize, slot: usize) -> Result<()>;

    /// Orders what is computed next after the last copy into `slot`.
    fn wait_copied(&mut self, slot: usize) -> Result<()>;

    /// Marks that the compute reading `slot` has been issued: the next copy into `slot` waits for it.
    fn computed(&mut self, slot: usize) -> Result<()>;

    /// The weight bound to input `name` from `slot`.
    fn weight(&self, slot: usize, name: &str) -> Option<&DynValue>;
}

/// Runs `compute(layer, slot)` for every layer in order with double-buffered weights: before layer
/// `i` is computed from slot `i % 2`, the copy of layer `i + 1` into the other slot is issued, so
/// it overlaps layer `i`'s compute; a slot is refilled only after the compute that read it.
pub fn stream_layers<C: LayerCopier + ?Sized>(
    copier: &mut C,
    mut compute: impl FnMut(&C, usize, usize) -> Result<()>,
) -> Result<()> {
    let layers = copier.num_layers();
    if layers == 0 {
        return Ok(());
    }
    copier.copy(0, 0)?;
    for layer in 0..layers {
        let slot = layer % SLOTS;
        if layer + 1 < layers {
            copier.copy(layer + 1, (layer + 1) % SLOTS)?;
        }
        copier.wait_copied(slot)?;
        tracing::trace!("weight streaming: layer {layer} arrived in slot {slot}");
        compute(copier, layer, slot)?;
        copier.computed(slot)?;
        tracing::trace!("weight streaming: layer {layer} computed");
    }
    Ok(())
}

/// [`LayerCopier`] in host memory: the layers in plain buffers, the slots ONNX Runtime tensors of
/// its CPU allocator. Copies finish before `copy` returns, so the waits have nothing to wait for.
pub struct HostCopier {
    layout: SlotLayout,
    layers: Vec<Vec<u8>>,
    slots: [HashMap<String, DynValue>; SLOTS],
}

impl HostCopier {
    /// Reads every layer's weights of `table` from `engine_dir` (checked against the layer
    /// graphs `graphs`) and allocates the two slots.
    pub(crate) fn load(
        engine_dir: &std::path::Path,
        table: &LayerTable<'_>,
        graphs: &[&GraphEntry],
    ) -> Result<HostCopier> {
        let (layout, layers) =
            read_layers(engine_dir, table, graphs, |bytes| Ok(vec![0u8; bytes]))?;
        let slot = || -> Result<HashMap<String, DynValue>> {
            layout
                .entries
                .iter()
                .map(|entry| {
                    let value =
                        DynTensor::new(&Allocator::default(), entry.dtype, entry.shape.clone())
                            .map_err(ort_error(format!(
                                "allocating weight slot `{}`",
                                entry.name
                            )))?;
                    Ok((entry.name.clone(), value.into_dyn()))
                })
                .collect()
        };
        let slots = [slot()?, slot()?];
        Ok(HostCopier {
            layout,
            layers,
            slots,
        })
    }
}

impl LayerCopier for HostCopier {
    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn copy(&mut self, layer: usize, slot: usize) -> Result<()> {
        let source = &self.layers[layer];
        for entry in &self.layout.entries {
            let bytes = &source[entry.offset..entry.offset + entry.length];
            let value = self.slots[slot]
                .get_mut(&entry.name)
                .expect("every slot holds every entry");
            let context = || format!("copying weight `{}` into its slot", entry.name);
            match entry.dtype {
                TensorElementType::Float16 => {
                    let (_, data) = value
                        .try_extract_tensor_mut::<half::f16>()
                        .map_err(ort_error(context()))?;
                    bytemuck::cast_slice_mut::<half::f16, u8>(data).copy_from_slice(bytes);
                }
                TensorElementType::Bfloat16 => {
                    let (_, data) = value
                        .try_extract_tensor_mut::<half::bf16>()
                        .map_err(ort_error(context()))?;
                    bytemuck::cast_slice_mut::<half::bf16, u8>(data).copy_from_slice(bytes);
                }
                _ => {
                    let (_, data) = value
                        .try_extract_tensor_mut::<f32>()
                        .map_err(ort_error(context()))?;
                    bytemuck::cast_slice_mut::<f32, u8>(data).copy_from_slice(bytes);
                }
            }
        }
        Ok(())
    }

    fn wait_copied(&mut self, _slot: usize) -> Result<()> {
        Ok(())
    }

    fn computed(&mut self, _slot: usize) -> Result<()> {
        Ok(())
    }

    fn weight(&self, slot: usize, name: &str) -> Option<&DynValue> {
        self.slots[slot].get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        Copy { layer: usize, slot: usize },
        WaitCopied { slot: usize },
        Compute { layer: usize, slot: usize },
        Computed { slot: usize },
    }

    /// A copier that records what the schedule asks of it.
    struct Recorder {
        layers: usize,
        events: Vec<Event>,
    }

    impl LayerCopier for Recorder {
        fn num_layers(&self) -> usize {
            self.layers
        }

        fn copy(&mut self, layer: usize, slot: usize) -> Result<()> {
            self.events.push(Event::Copy { layer, slot });
            Ok(())
        }

        fn wait_copied(&mut self, slot: usize) -> Result<()> {
            self.events.push(Event::WaitCopied { slot });
            Ok(())
        }

        fn computed(&mut self, slot: usize) -> Result<()> {
            self.events.push(Event::Computed { slot });
            Ok(())
        }

        fn weight(&self, _slot: usize, _name: &str) -> Option<&DynValue> {
            None
        }
    }

    fn record(layers: usize) -> Vec<Event> {
        let mut recorder = Recorder {
            layers,
            events: Vec::new(),
        };
        let mut computes = Vec::new();
        stream_layers(&mut recorder, |_, layer, slot| {
            computes.push(Event::Compute { layer, slot });
            Ok(())
        })
        .unwrap();
        // Interleave the computes at their place: each sits right before its `Computed`.
        let mut computes = computes.into_iter();
        let mut events = Vec::new();
        for event in recorder.events {
            if let Event::Computed { .. } = event {
                events.push(computes.next().expect("one compute per computed"));
            }
            events.push(event);
        }
        events
    }

    fn position(events: &[Event], wanted: Event) -> usize {
        events
            .iter()
            .position(|e| *e == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} never happened in {events:?}"))
    }

    #[test]
    fn three_layers_follow_the_double_buffered_order() {
        use Event::*;
        assert_eq!(
            record(3),
            vec![
                Copy { layer: 0, slot: 0 },
                Copy { layer: 1, slot: 1 },
                WaitCopied { slot: 0 },
                Compute { layer: 0, slot: 0 },
                Computed { slot: 0 },
                Copy { layer: 2, slot: 0 },
                WaitCopied { slot: 1 },
                Compute { layer: 1, slot: 1 },
                Computed { slot: 1 },
                WaitCopied { slot: 0 },
                Compute { layer: 2, slot: 0 },
                Computed { slot: 0 },
            ]
        );
        assert!(record(0).is_empty());
    }

    #[test]
    fn copies_run_ahead_and_never_overwrite_a_slot_being_read() {
        for layers in 1..=9 {
            let events = record(layers);
            for layer in 0..layers {
                let slot = layer % SLOTS;
                let compute = position(&events, Event::Compute { layer, slot });
                let copy = position(&events, Event::Copy { layer, slot });
                // The compute waits for its own copy, after the copy was issued.
                let wait = events[..compute]
                    .iter()
                    .rposition(|e| *e == Event::WaitCopied { slot })
                    .expect("a wait before every compute");
                assert!(
                    copy < wait,
                    "{layers} layers: layer {layer} waited before its copy"
                );
                // Nothing was copied into the slot between its copy and its compute.
                assert!(
                    !events[copy + 1..compute]
                        .iter()
                        .any(|e| matches!(e, Event::Copy { slot: s, .. } if *s == slot)),
                    "{layers} layers: slot {slot} overwritten before layer {layer} read it"
                );
                // The next layer's copy is issued before this layer's compute.
                if layer + 1 < layers {
                    let next = position(
                        &events,
                        Event::Copy {
                            layer: layer + 1,
                            slot: (layer + 1) % SLOTS,
                        },
                    );
                    assert!(
                        next < compute,
                        "{layers} layers: no overlap at layer {layer}"
                    );
                }
                // A later copy into the slot comes after this compute is marked finished.
                if layer + SLOTS < layers {
                    let refill = position(
                        &events,
                        Event::Copy {
                            layer: layer + SLOTS,
                            slot,
                        },
                    );
                    let finished = compute + 1;
                    assert_eq!(events[finished], Event::Computed { slot });
                    assert!(
                        finished < refill,
                        "{layers} layers: slot {slot} refilled early"
                    );
                }
            }
        }
    }
}
