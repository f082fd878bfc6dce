//! Manifest entry of the Wan causal 3D VAE (encoder and decoder chunk graphs).

use serde::{Deserialize, Serialize};

use crate::manifest::GraphEntry;

/// The VAE component: chunk graphs whose causal-conv caches are explicit inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeComponent {
    /// Graphs (encoder/decoder chunk graphs), in the order the runtime documents.
    pub graphs: Vec<GraphEntry>,
}
