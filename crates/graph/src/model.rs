use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use prost::Message;

use crate::Result;
use crate::builder::Graph;
use crate::error::GraphError;
use crate::proto::{GraphProto, ModelProto, OperatorSetIdProto};

/// Default-domain opset the project targets (23: RMSNormalization, Attention; 24 avoided, see DESIGN).
pub const OPSET_DEFAULT: i64 = 23;
/// `com.microsoft` contrib opset.
pub const OPSET_MICROSOFT: i64 = 1;
/// ONNX IR version matching opset 23.
const IR_VERSION: i64 = 11;

/// A finished ONNX model.
pub struct Model {
    /// The protobuf message.
    pub proto: ModelProto,
}

impl Model {
    /// Wraps a finished graph with opset imports and producer metadata.
    pub fn from_graph(graph: Graph, metadata: &BTreeMap<String, String>) -> Model {
        let mut opset_import = vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET_DEFAULT),
        }];
        if graph.uses_microsoft_domain {
            opset_import.push(OperatorSetIdProto {
                domain: Some("com.microsoft".into()),
                version: Some(OPSET_MICROSOFT),
            });
        }
        let proto = ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import,
            producer_name: Some("skyreels-export".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            graph: Some(GraphProto {
                node: graph.nodes,
                name: Some(graph.name),
                initializer: graph.initializers,
                input: graph.inputs,
                output: graph.outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| crate::proto::StringStringEntryProto {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            ..Default::default()
        };
        Model { proto }
    }

    /// Serialises the model to `path` (weights stay in their external files).
    pub fn save(&self, path: &Path) -> Result<()> {
        let write_error = |source| GraphError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = fs_err::File::create(path).map_err(write_error)?;
        file.write_all(&self.proto.encode_to_vec())
            .map_err(write_error)?;
        file.sync_all().map_err(write_error)
    }

    /// Reads a model file (external weights are not loaded).
    pub fn load(path: &Path) -> Result<Model> {
        let bytes = fs_err::read(path).map_err(|e| GraphError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let proto = ModelProto::decode(bytes.as_slice()).map_err(|e| GraphError::Read {
            path: path.to_path_buf(),
            message: format!("not an ONNX model: {e}"),
        })?;
        Ok(Model { proto })
    }

    /// Op types used, with the domain prefixed for non-default domains (`com.microsoft.MultiHeadAttention`).
    pub fn op_histogram(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for node in self.proto.graph.iter().flat_map(|g| &g.node) {
            let domain = node.domain.clone().unwrap_or_default();
            let op = node.op_type.clone().unwrap_or_default();
            let key = if domain.is_empty() || domain == "ai.onnx" {
                op
            } else {
                format!("{domain}.{op}")
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }
}
