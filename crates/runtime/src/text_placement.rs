//! Where the text encoder's block weights live, decided with the DiT's (`--offload`,
//! `--max-gpu-memory`) before any model loads: the whole encoder graph with every weight on the
//! device, or its blocks one at a time with their weights streamed from host memory through two
//! slots and the token embedding's rows read on the host. umT5-XXL's weights (11.4 GB bf16, 2.1 GB
//! of them the embedding) are what keeps a whole generation off an 8 GiB GPU.

use serde::Serialize;
use skyreels_contract::text::TextEncoderComponent;

use crate::dit::placement::{PlacementReason, WeightPlacement, human};
use crate::dit::streaming::{SLOT_ALIGNMENT, SLOTS};
use crate::engine::Engine;
use crate::error::{Result, RuntimeError};

/// The text encoder's decision and what it was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TextMemoryPlan {
    /// Whole graph, or blocks with streamed weights.
    pub placement: WeightPlacement,
    /// Why.
    pub reason: PlacementReason,
    /// The device bytes of the block weights and the embedding when resident.
    pub resident_bytes: u64,
    /// The device bytes of two blocks' weights (streamed).
    pub streamed_bytes: u64,
    /// Whether the engine has the layer-by-layer graphs (engines exported before them do not,
    /// and always run the whole graph).
    pub layer_graphs: bool,
}

impl TextMemoryPlan {
    /// The plan for `engine`'s text encoder (`None` when it has none) with `--offload` and the
    /// `--max-gpu-memory` budget in bytes.
    pub fn for_engine(
        engine: &Engine,
        offload: bool,
        max_gpu_memory: Option<u64>,
    ) -> Result<Option<TextMemoryPlan>> {
        let Some(text) = &engine.manifest.text_encoder else {
            return Ok(None);
        };
        let plan = TextMemoryPlan::new(text, offload, max_gpu_memory)?;
        if plan.placement == WeightPlacement::Resident && !plan.layer_graphs && offload {
            tracing::warn!(
                "the text encoder runs whole (its weights on the device): the engine was exported before the text encoder could stream its weights; re-export it with skyreels-export to stream them with --offload"
            );
        }
        Ok(Some(plan))
    }

    /// Streams when `offload` asks or the resident weights exceed `max_gpu_memory`, if the
    /// engine can; refuses a budget below two blocks' weights.
    pub fn new(
        text: &TextEncoderComponent,
        offload: bool,
        max_gpu_memory: Option<u64>,
    ) -> Result<TextMemoryPlan> {
        let embedding = text
            .token_embedding
            .as_ref()
            .map_or(0, |e| e.location.length);
        let mut resident_bytes = embedding;
        let mut slot = 0u64;
        for layer in &text.layers {
            let mut bytes = 0u64;
            for location in layer.values() {
                resident_bytes = resident_bytes.saturating_add(location.length);
                bytes = bytes
                    .saturating_add(location.length)
                    .checked_next_multiple_of(SLOT_ALIGNMENT as u64)
                    .unwrap_or(u64::MAX);
            }
            slot = slot.max(bytes);
        }
        let streamed_bytes = (SLOTS as u64).saturating_mul(slot);
        let layer_graphs = text.has_layer_graphs();
        let (placement, reason) = match max_gpu_memory {
            _ if !layer_graphs => (WeightPlacement::Resident, PlacementReason::Default),
            _ if offload => (WeightPlacement::Streamed, PlacementReason::Requested),
            Some(budget) if resident_bytes > budget => {
                (WeightPlacement::Streamed, PlacementReason::Budget)
            }
            _ => (WeightPlacement::Resident, PlacementReason::Default),
        };
        if let Some(budget) = max_gpu_memory
            && placement == WeightPlacement::Streamed
            && streamed_bytes > budget
        {
            return Err(RuntimeError::Invalid(format!(
                "--max-gpu-memory {} is too small for the text encoder even with its weights streamed: two blocks' weights take {} (resident, its weights take {})\n  fix: pass --max-gpu-memory {}MiB or more (activations come on top), or use a GPU with more memory",
                human(budget),
                human(streamed_bytes),
                human(resident_bytes),
                streamed_bytes.div_ceil(1 << 20)
            )));
        }
        Ok(TextMemoryPlan {
            placement,
            reason,
            resident_bytes,
            streamed_bytes,
            layer_graphs,
        })
    }
}

impl std::fmt::Display for TextMemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.placement, self.reason) {
            (WeightPlacement::Resident, _) if !self.layer_graphs => {
                write!(f, "whole graph (the engine has no layer graphs to stream)")
            }
            (WeightPlacement::Resident, _) => {
                write!(f, "weights resident ({})", human(self.resident_bytes))
            }
            (WeightPlacement::Streamed, reason) => write!(
                f,
                "block weights streamed from host memory ({} of {} on the device; {})",
                human(self.streamed_bytes),
                human(self.resident_bytes),
                match reason {
                    PlacementReason::Budget => "they do not fit --max-gpu-memory",
                    _ => "--offload",
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use skyreels_contract::GraphEntry;
    use skyreels_contract::manifest::ExternalTensor;
    use skyreels_contract::text::{TextEncoderConfig, TokenEmbedding};

    use super::*;

    fn component(layer_graphs: bool) -> TextEncoderComponent {
        let at = |length| ExternalTensor {
            file: "text_encoder.weights".into(),
            offset: 0,
            length,
        };
        let layer: BTreeMap<String, ExternalTensor> =
            [("q".to_string(), at(1000)), ("o".to_string(), at(600))].into();
        let graph = |name: &str| GraphEntry {
            name: name.into(),
            file: format!("{name}.onnx"),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let names: &[&str] = if layer_graphs {
            &["encoder", "layers_prepare", "layer", "layers_final"]
        } else {
            &["encoder"]
        };
        TextEncoderComponent {
            config: TextEncoderConfig {
                vocab_size: 10,
                dim: 4,
                num_heads: 1,
                head_dim: 4,
                ffn_dim: 8,
                num_layers: 3,
                num_buckets: 4,
                max_distance: 8,
                eps: 1e-6,
            },
            graphs: names.iter().map(|n| graph(n)).collect(),
            layers: vec![layer; 3],
            token_embedding: Some(TokenEmbedding {
                dtype: "bfloat16".into(),
                location: at(5000),
            }),
            tokenizer: "tokenizer.json".into(),
            max_length: 512,
        }
    }

    #[test]
    fn streams_when_asked_or_over_budget_and_only_with_layer_graphs() {
        let text = component(true);
        let plan = TextMemoryPlan::new(&text, false, None).unwrap();
        assert_eq!(plan.placement, WeightPlacement::Resident);
        // 3 layers of 1600 bytes and the 5000-byte embedding; a slot is 1024 + 768 bytes.
        assert_eq!(plan.resident_bytes, 3 * 1600 + 5000);
        assert_eq!(plan.streamed_bytes, 2 * (1024 + 768));
        let plan = TextMemoryPlan::new(&text, true, None).unwrap();
        assert_eq!(
            (plan.placement, plan.reason),
            (WeightPlacement::Streamed, PlacementReason::Requested)
        );
        let plan = TextMemoryPlan::new(&text, false, Some(9799)).unwrap();
        assert_eq!(
            (plan.placement, plan.reason),
            (WeightPlacement::Streamed, PlacementReason::Budget)
        );
        let plan = TextMemoryPlan::new(&text, false, Some(9800)).unwrap();
        assert_eq!(plan.placement, WeightPlacement::Resident);
        let error = TextMemoryPlan::new(&text, true, Some(3583)).unwrap_err();
        assert!(
            error.to_string().contains("--max-gpu-memory 1MiB or more"),
            "{error}"
        );
        let old = component(false);
        let plan = TextMemoryPlan::new(&old, true, Some(100)).unwrap();
        assert_eq!(plan.placement, WeightPlacement::Resident);
        assert!(plan.to_string().contains("no layer graphs"), "{plan}");
    }
}
