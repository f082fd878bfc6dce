use std::fmt::Write;

use crate::dtype::DType;
use crate::model::Model;
use crate::proto::{ValueInfoProto, tensor_shape_proto::dimension, type_proto};

fn describe(info: &ValueInfoProto) -> String {
    let name = info.name.clone().unwrap_or_default();
    let Some(type_proto::Value::TensorType(tensor)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return format!("{name}: ?");
    };
    let dtype = tensor
        .elem_type
        .and_then(DType::from_onnx)
        .map(|d| d.name())
        .unwrap_or("?");
    let dims: Vec<String> = tensor
        .shape
        .iter()
        .flat_map(|s| &s.dim)
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(v)) => v.to_string(),
            Some(dimension::Value::DimParam(p)) => p.clone(),
            None => "?".into(),
        })
        .collect();
    format!("{name}: {dtype}[{}]", dims.join(", "))
}

/// A stable text summary of a model (I/O, op counts, weights) for snapshot tests and the CLI.
pub fn dump_model(model: &Model) -> String {
    let mut out = String::new();
    let graph = model.proto.graph.clone().unwrap_or_default();
    let _ = writeln!(out, "graph {}", graph.name.unwrap_or_default());
    for opset in &model.proto.opset_import {
        let domain = opset.domain.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "opset {}={}",
            if domain.is_empty() {
                "ai.onnx"
            } else {
                &domain
            },
            opset.version.unwrap_or(0)
        );
    }
    for input in &graph.input {
        let _ = writeln!(out, "input  {}", describe(input));
    }
    for output in &graph.output {
        let _ = writeln!(out, "output {}", describe(output));
    }
    let external = graph
        .initializer
        .iter()
        .filter(|t| !t.external_data.is_empty())
        .count();
    let _ = writeln!(
        out,
        "initializers {} ({} external)",
        graph.initializer.len(),
        external
    );
    let _ = writeln!(out, "nodes {}", graph.node.len());
    for (op, count) in model.op_histogram() {
        let _ = writeln!(out, "  {op} x{count}");
    }
    out
}
