//! TensorRT's supported ONNX operators (`data/tensorrt-10.15-onnx-operators.tsv`, from onnx-tensorrt's
//! `docs/operators.md`; source and version in the file's header) and a graph's coverage by them.

use std::collections::BTreeMap;
use std::path::Path;

use skyreels_graph::Model;
use skyreels_graph::proto::{AttributeProto, GraphProto, TensorProto};

use crate::error::{BuildError, Result};

const TABLE: &str = include_str!("../data/tensorrt-10.15-onnx-operators.tsv");
/// ONNX `TensorProto.DataType.DOUBLE`.
const DOUBLE: i32 = 11;

/// The operator table of one TensorRT release.
#[derive(Debug, Clone)]
pub struct TensorRtOperators {
    /// TensorRT release the table describes.
    pub version: &'static str,
    /// `operator → supported types`, for the operators TensorRT supports.
    supported: BTreeMap<String, Vec<String>>,
    /// Operators the table lists as unsupported.
    unsupported: Vec<String>,
}

impl TensorRtOperators {
    /// The committed TensorRT 10.15 table.
    pub fn builtin() -> TensorRtOperators {
        let mut supported = BTreeMap::new();
        let mut unsupported = Vec::new();
        for line in TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let mut fields = line.split('\t');
            let (Some(op), Some(flag)) = (fields.next(), fields.next()) else {
                panic!(
                    "malformed line in the built-in TensorRT operator table (a build bug): {line:?}"
                );
            };
            let types = fields
                .next()
                .unwrap_or("")
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
            match flag {
                "Y" => {
                    supported.insert(op.to_string(), types);
                }
                "N" => unsupported.push(op.to_string()),
                other => panic!(
                    "built-in TensorRT operator table: `{op}` has support flag {other:?} (a build bug)"
                ),
            }
        }
        TensorRtOperators {
            version: "10.15",
            supported,
            unsupported,
        }
    }

    /// Whether TensorRT parses `op` (domain-prefixed for non-default domains, as
    /// [`Model::op_histogram`] spells it); operators of other domains never are.
    pub fn supports(&self, op: &str) -> bool {
        self.supported.contains_key(op)
    }

    /// Types TensorRT supports for `op`, as the table spells them (`FP32`, `BF16`, `INT64`, ...).
    pub fn types(&self, op: &str) -> Option<&[String]> {
        self.supported.get(op).map(Vec::as_slice)
    }

    /// Number of operators the table lists, supported or not.
    pub fn len(&self) -> usize {
        self.supported.len() + self.unsupported.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How far TensorRT covers one graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coverage {
    /// Every operator of the graph with its node count.
    pub operators: BTreeMap<String, usize>,
    /// Operators TensorRT does not parse, with their node count.
    pub unsupported: BTreeMap<String, usize>,
    /// The nodes of those operators, as `(node name, operator)` in graph order.
    pub unsupported_nodes: Vec<(String, String)>,
    /// Where the graph holds float64 values (TensorRT computes them in float32).
    pub float64: Vec<String>,
}

impl Coverage {
    /// Whether TensorRT parses every node and no value is float64.
    pub fn is_complete(&self) -> bool {
        self.unsupported.is_empty() && self.float64.is_empty()
    }
}

/// Coverage of the ONNX file at `path` (weights are not read).
pub fn coverage_of_file(path: &Path, operators: &TensorRtOperators) -> Result<Coverage> {
    let model = Model::load(path).map_err(|e| BuildError::Graph {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(coverage(&model, operators))
}

/// Coverage of `model` by `operators`.
pub fn coverage(model: &Model, operators: &TensorRtOperators) -> Coverage {
    let histogram = model.op_histogram();
    let unsupported = histogram
        .iter()
        .filter(|(op, _)| !operators.supports(op))
        .map(|(op, n)| (op.clone(), *n))
        .collect();
    let mut float64 = Vec::new();
    let mut unsupported_nodes = Vec::new();
    if let Some(graph) = &model.proto.graph {
        float64_values(graph, &mut float64);
        for node in &graph.node {
            let op = match node.domain.as_deref() {
                None | Some("") | Some("ai.onnx") => node.op_type.clone().unwrap_or_default(),
                Some(domain) => format!("{domain}.{}", node.op_type.clone().unwrap_or_default()),
            };
            if !operators.supports(&op) {
                unsupported_nodes.push((node.name.clone().unwrap_or_default(), op));
            }
        }
    }
    Coverage {
        operators: histogram,
        unsupported,
        unsupported_nodes,
        float64,
    }
}

fn float64_values(graph: &GraphProto, found: &mut Vec<String>) {
    let is_double_tensor = |t: &TensorProto| t.data_type == Some(DOUBLE);
    for tensor in graph.initializer.iter().filter(|t| is_double_tensor(t)) {
        found.push(format!(
            "initializer `{}`",
            tensor.name.clone().unwrap_or_default()
        ));
    }
    for value in graph.input.iter().chain(&graph.output) {
        let elem_type = value.r#type.as_ref().and_then(|t| match &t.value {
            Some(skyreels_graph::proto::type_proto::Value::TensorType(tensor)) => tensor.elem_type,
            _ => None,
        });
        if elem_type == Some(DOUBLE) {
            found.push(format!(
                "graph input/output `{}`",
                value.name.clone().unwrap_or_default()
            ));
        }
    }
    for node in &graph.node {
        let name = node.name.clone().unwrap_or_default();
        let op = node.op_type.clone().unwrap_or_default();
        let attribute = |key: &str| {
            node.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(key))
        };
        let casts_to_double = op == "Cast"
            && attribute("to").and_then(|a: &AttributeProto| a.i) == Some(DOUBLE as i64);
        let double_constant = op == "Constant"
            && attribute("value")
                .and_then(|a| a.t.as_ref())
                .is_some_and(is_double_tensor);
        if casts_to_double {
            found.push(format!("node `{name}` (Cast to float64)"));
        } else if double_constant {
            found.push(format!("node `{name}` (float64 Constant)"));
        }
        for sub in node
            .attribute
            .iter()
            .flat_map(|a| a.g.iter().chain(&a.graphs))
        {
            float64_values(sub, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_and_knows_the_ops_we_rely_on() {
        let operators = TensorRtOperators::builtin();
        assert_eq!(operators.len(), 200);
        for op in [
            "MatMul",
            "Gemm",
            "Softmax",
            "LayerNormalization",
            "RMSNormalization",
            "RotaryEmbedding",
            "Attention",
            "Conv",
            "Resize",
        ] {
            assert!(operators.supports(op), "{op}");
        }
        assert!(!operators.supports("com.microsoft.MultiHeadAttention"));
        assert!(!operators.supports("Unique"));
        assert_eq!(
            operators.types("RMSNormalization").map(|t| t.join(",")),
            Some("FP32,FP16,BF16".into())
        );
    }
}
