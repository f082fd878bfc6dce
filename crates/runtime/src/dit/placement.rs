//! Where the DiT's layer weights live, decided before any model loads (`--offload`,
//! `--max-gpu-memory`): resident on the device, or streamed from host memory two layers at a time
//! (`streaming`). The decision reads only byte sizes: the layers' from the manifest, the rest of
//! the DiT's from the size of the weight files the layers are in.

use std::collections::BTreeMap;

use serde::Serialize;
use skyreels_contract::manifest::Component;

use super::streaming::{SLOT_ALIGNMENT, SLOTS};
use crate::engine::Engine;
use crate::error::{Result, RuntimeError};

/// How the DiT's transformer-layer weights are held while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightPlacement {
    /// Every layer's weights on the device (or in host memory on the CPU) for the DiT's lifetime.
    Resident,
    /// In (pinned) host memory, copied layer by layer into two device slots ahead of use.
    Streamed,
}

/// Why the weights are placed as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementReason {
    /// Nothing asked for streaming.
    Default,
    /// `--offload`.
    Requested,
    /// The resident weights do not fit `--max-gpu-memory`.
    Budget,
}

/// The DiT's weight bytes, as the engine records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DitWeightBytes {
    /// Every transformer layer's weights.
    pub layers: u64,
    /// One layer's weights as a slot holds them (the largest layer, with alignment padding).
    pub slot: u64,
    /// The weights outside the layers (embeddings, head): the weight files the layers are in,
    /// less the layers' bytes.
    pub outside_layers: u64,
}

impl DitWeightBytes {
    /// Reads the sizes of `engine`'s DiT: its manifest and the sizes of its weight files.
    pub fn of(engine: &Engine) -> Result<DitWeightBytes> {
        let dit = engine
            .manifest
            .dit
            .as_ref()
            .ok_or_else(|| engine.missing(Component::Dit))?;
        let mut file_sizes = BTreeMap::new();
        for location in dit.layers.iter().flat_map(|weights| weights.values()) {
            if !file_sizes.contains_key(location.file.as_str()) {
                let size = fs_err::metadata(engine.dir.join(&location.file))?.len();
                file_sizes.insert(location.file.as_str(), size);
            }
        }
        let mut layers = 0u64;
        let mut slot = 0u64;
        for (index, weights) in dit.layers.iter().enumerate() {
            let mut layer = 0u64;
            for (name, location) in weights {
                let size = file_sizes[location.file.as_str()];
                // A range outside its file would make every sum below meaningless (and could
                // overflow): the engine is broken, whatever the budget.
                if let Some(problem) = super::weights::outside_its_file(location, size) {
                    return Err(engine.error(format!(
                        "layer {index} `{name}`: {problem}\n  fix: re-export the engine with skyreels-export"
                    )));
                }
                layers = layers.saturating_add(location.length);
                layer = layer
                    .saturating_add(location.length)
                    .checked_next_multiple_of(SLOT_ALIGNMENT as u64)
                    .unwrap_or(u64::MAX);
            }
            slot = slot.max(layer);
        }
        let file_bytes = file_sizes
            .values()
            .fold(0u64, |total, size| total.saturating_add(*size));
        Ok(DitWeightBytes {
            layers,
            slot,
            outside_layers: file_bytes.saturating_sub(layers),
        })
    }

    /// Device bytes of the weights held resident.
    pub fn resident(&self) -> u64 {
        self.layers.saturating_add(self.outside_layers)
    }

    /// Device bytes of the weights streamed: two slots and the weights outside the layers.
    pub fn streamed(&self) -> u64 {
        (SLOTS as u64)
            .saturating_mul(self.slot)
            .saturating_add(self.outside_layers)
    }
}

/// The decision and what it was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DitMemoryPlan {
    /// Resident or streamed.
    pub placement: WeightPlacement,
    /// Why.
    pub reason: PlacementReason,
    /// `--max-gpu-memory` in bytes, when given.
    pub max_gpu_memory: Option<u64>,
    /// The sizes decided on.
    pub bytes: DitWeightBytes,
}

impl DitMemoryPlan {
    /// [`DitMemoryPlan::new`] for `engine`'s DiT with `--offload` and `--max-gpu-memory` as given.
    pub fn for_engine(
        engine: &Engine,
        offload: bool,
        max_gpu_memory: Option<&str>,
    ) -> Result<DitMemoryPlan> {
        let budget = max_gpu_memory
            .map(parse_memory_size)
            .transpose()
            .map_err(RuntimeError::Invalid)?;
        DitMemoryPlan::new(DitWeightBytes::of(engine)?, offload, budget)
    }

    /// Streams the weights when `offload` asks for it or when the resident weights exceed
    /// `max_gpu_memory`; refuses a budget that cannot hold even the streamed weights.
    pub fn new(
        bytes: DitWeightBytes,
        offload: bool,
        max_gpu_memory: Option<u64>,
    ) -> Result<DitMemoryPlan> {
        let (placement, reason) = match max_gpu_memory {
            _ if offload => (WeightPlacement::Streamed, PlacementReason::Requested),
            Some(budget) if bytes.resident() > budget => {
                (WeightPlacement::Streamed, PlacementReason::Budget)
            }
            _ => (WeightPlacement::Resident, PlacementReason::Default),
        };
        if let Some(budget) = max_gpu_memory
            && placement == WeightPlacement::Streamed
            && bytes.streamed() > budget
        {
            return Err(RuntimeError::Invalid(format!(
                "--max-gpu-memory {} is too small for the DiT even with its weights streamed: two layers' weights ({SLOTS} × {}) and the weights outside the layers ({}) take {} (resident, the DiT's weights take {})\n  fix: pass --max-gpu-memory {}MiB or more (activations come on top), or use a GPU with more memory",
                human(budget),
                human(bytes.slot),
                human(bytes.outside_layers),
                human(bytes.streamed()),
                human(bytes.resident()),
                bytes.streamed().div_ceil(MIB)
            )));
        }
        Ok(DitMemoryPlan {
            placement,
            reason,
            max_gpu_memory,
            bytes,
        })
    }
}

impl std::fmt::Display for DitMemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.placement, self.reason) {
            (WeightPlacement::Resident, _) => {
                write!(f, "weights resident ({})", human(self.bytes.resident()))
            }
            (WeightPlacement::Streamed, reason) => {
                write!(
                    f,
                    "weights streamed from host memory ({} of {} on the device; ",
                    human(self.bytes.streamed()),
                    human(self.bytes.resident())
                )?;
                match (reason, self.max_gpu_memory) {
                    (PlacementReason::Budget, Some(budget)) => {
                        write!(f, "they do not fit --max-gpu-memory {})", human(budget))
                    }
                    _ => write!(f, "--offload)"),
                }
            }
        }
    }
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// `bytes` for people: `2.5 GiB`, `300.0 MiB`, `512 bytes`.
pub fn human(bytes: u64) -> String {
    match bytes {
        b if b >= GIB => format!("{:.1} GiB", b as f64 / GIB as f64),
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b if b >= KIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        b => format!("{b} bytes"),
    }
}

/// A memory size as `--max-gpu-memory` takes it: a number and a unit, `24GiB`, `8G`, `1.5GiB`,
/// `512MiB`, `500MB`; `K`/`M`/`G`/`T` and `KiB`…`TiB` are powers of 1024, `KB`…`TB` powers of
/// 1000, a bare number is bytes.
pub fn parse_memory_size(text: &str) -> std::result::Result<u64, String> {
    let refuse = || {
        format!(
            "--max-gpu-memory {text:?} is not a memory size\n  fix: give a number and a unit, e.g. --max-gpu-memory 24GiB (also 8G, 512MiB, 500MB)"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit_bytes = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => TIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(refuse()),
    };
    let value: f64 = number.parse().map_err(|_| refuse())?;
    let bytes = value * unit_bytes as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!(
            "--max-gpu-memory {text:?} is not a usable size\n  fix: give a positive size, e.g. --max-gpu-memory 24GiB"
        ));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_memory_size("24GiB"), Ok(24 * GIB));
        assert_eq!(parse_memory_size("8G"), Ok(8 * GIB));
        assert_eq!(parse_memory_size(" 8 g "), Ok(8 * GIB));
        assert_eq!(parse_memory_size("1.5GiB"), Ok(3 * GIB / 2));
        assert_eq!(parse_memory_size("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_memory_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_memory_size("2T"), Ok(2 * TIB));
        assert_eq!(parse_memory_size("4096"), Ok(4096));
        assert_eq!(parse_memory_size("1k"), Ok(1024));
        for bad in ["", "GiB", "24 GiBs", "-8G", "8Q", "1.2.3G", "abc"] {
            let error = parse_memory_size(bad).unwrap_err();
            assert!(
                error.contains("not a memory size") && error.contains("fix:"),
                "{bad:?}: {error}"
            );
        }
        for unusable in ["0", "0G", "0.0000001K"] {
            let error = parse_memory_size(unusable).unwrap_err();
            assert!(error.contains("not a usable size"), "{unusable:?}: {error}");
        }
    }

    fn bytes() -> DitWeightBytes {
        // 14B-like: 40 layers of 700 MiB, 800 MiB outside them.
        DitWeightBytes {
            layers: 40 * 700 * MIB,
            slot: 700 * MIB,
            outside_layers: 800 * MIB,
        }
    }

    #[test]
    fn streams_when_asked_or_when_the_resident_weights_exceed_the_budget() {
        let plan = |offload, budget| DitMemoryPlan::new(bytes(), offload, budget).unwrap();
        assert_eq!(plan(false, None).placement, WeightPlacement::Resident);
        assert_eq!(
            plan(false, Some(40 * GIB)).placement,
            WeightPlacement::Resident
        );
        let over = plan(false, Some(24 * GIB));
        assert_eq!(
            (over.placement, over.reason),
            (WeightPlacement::Streamed, PlacementReason::Budget)
        );
        assert_eq!(
            over.to_string(),
            "weights streamed from host memory (2.1 GiB of 28.1 GiB on the device; they do not fit --max-gpu-memory 24.0 GiB)"
        );
        let asked = plan(true, None);
        assert_eq!(
            (asked.placement, asked.reason),
            (WeightPlacement::Streamed, PlacementReason::Requested)
        );
        assert_eq!(
            plan(true, Some(40 * GIB)).placement,
            WeightPlacement::Streamed
        );
        assert_eq!(bytes().streamed(), 2200 * MIB);
    }

    #[test]
    fn a_budget_below_two_layers_is_refused_naming_the_sizes() {
        let error = DitMemoryPlan::new(bytes(), false, Some(2 * GIB))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--max-gpu-memory 2.0 GiB is too small")
                && error.contains("(2 × 700.0 MiB)")
                && error.contains("outside the layers (800.0 MiB) take 2.1 GiB")
                && error.contains("fix: pass --max-gpu-memory 2200MiB or more"),
            "{error}"
        );
        assert!(DitMemoryPlan::new(bytes(), true, Some(2200 * MIB)).is_ok());
    }
}
