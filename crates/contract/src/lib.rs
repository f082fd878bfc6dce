//! Contract types shared by the exporter (`skyreels-export`), the builder (`skyreels-build`) and the
//! runtime (`skyreels`): architecture configs, the engine manifest, and graph I/O names.
//! Kept free of heavy dependencies so the deployed runtime stays small.

pub mod config;
pub mod error_report;
pub mod files;
pub mod graph_entry;
pub mod image;
pub mod io;
pub mod manifest;
pub mod owned_dir;
pub mod target;
pub mod termination;
pub mod text;
pub mod vae;
pub mod variant;
mod yaml;

pub use config::{DitConfig, ModelType};
pub use graph_entry::{GraphEntry, TensorSpec};
pub use manifest::Manifest;
pub use target::{Attention, Precision, Target};
pub use variant::{ModelVariant, Pipeline, RecognitionError, Resolution, recognise};
pub use yaml::{YamlError, load_yaml, parse_yaml, save_yaml, to_yaml};
