//! Manifest entry of the umT5-XXL text encoder.

use serde::{Deserialize, Serialize};

use crate::manifest::GraphEntry;

/// The text encoder component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderComponent {
    /// Graphs in run order.
    pub graphs: Vec<GraphEntry>,
    /// `tokenizer.json`, relative to the engine directory.
    pub tokenizer: String,
}
