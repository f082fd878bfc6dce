//! Manifest entry of the CLIP ViT-H/14 image encoder.

use serde::{Deserialize, Serialize};

use crate::manifest::GraphEntry;

/// The image encoder component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEncoderComponent {
    /// Graphs in run order.
    pub graphs: Vec<GraphEntry>,
}
