//! The exporter: SkyReels-V2 / Wan2.1 checkpoints (original or diffusers layout) → ONNX graphs and
//! an engine manifest. See `DESIGN.md` for the graph contracts.

pub mod checkpoint;
pub mod dit;
pub mod engine_dir;
pub mod error;
pub mod hub_cache;
pub mod image;
pub mod layers;
pub mod layout;
pub mod prefix;
pub mod pth;
pub mod sources;
pub mod stored_dtype;
pub mod text;
pub mod tiny;
pub mod vae;
pub mod weights;

pub use error::{ExportError, Result};
