use std::collections::HashSet;
use std::rc::Rc;

use crate::Result;
use crate::dtype::DType;
use crate::error::GraphError;
use crate::proto::{
    AttributeProto, NodeProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_shape_proto,
    type_proto,
};
use crate::shape::{Dim, Shape, render};

/// A tensor flowing through the graph: its ONNX value name plus the inferred type and shape.
#[derive(Debug, Clone)]
pub struct Value {
    name: Rc<str>,
    /// Element type.
    pub dtype: DType,
    /// Inferred shape (rank always known).
    pub shape: Shape,
}

impl Value {
    /// The ONNX value name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rank of the tensor.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: i64) -> &Dim {
        let rank = self.shape.len() as i64;
        &self.shape[(if axis < 0 { rank + axis } else { axis }) as usize]
    }
}

/// Where an initializer's bytes live in an external data file next to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalData {
    /// File name relative to the model's directory.
    pub location: String,
    /// Byte offset of the tensor inside that file.
    pub offset: u64,
    /// Byte length of the tensor.
    pub length: u64,
}

/// A graph under construction.
pub struct Graph {
    pub(crate) name: String,
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) inputs: Vec<ValueInfoProto>,
    pub(crate) outputs: Vec<ValueInfoProto>,
    pub(crate) initializers: Vec<TensorProto>,
    pub(crate) uses_microsoft_domain: bool,
    names: HashSet<String>,
    scope: Vec<String>,
    counter: usize,
}

impl Graph {
    /// Starts an empty graph called `name`.
    pub fn new(name: &str) -> Graph {
        Graph {
            name: name.to_string(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            initializers: Vec::new(),
            uses_microsoft_domain: false,
            names: HashSet::new(),
            scope: Vec::new(),
            counter: 0,
        }
    }

    /// Runs `build` with `part` pushed on the scope path used in node names and errors.
    pub fn scoped<T>(
        &mut self,
        part: &str,
        build: impl FnOnce(&mut Graph) -> Result<T>,
    ) -> Result<T> {
        self.scope.push(part.to_string());
        let out = build(self);
        self.scope.pop();
        out
    }

    /// Pushes `part` on the scope path (pair with [`Graph::leave`]).
    pub fn enter(&mut self, part: &str) {
        self.scope.push(part.to_string());
    }

    /// Pops the innermost scope part.
    pub fn leave(&mut self) {
        self.scope.pop();
    }

    /// The current dotted scope path.
    pub fn scope_path(&self) -> String {
        if self.scope.is_empty() {
            self.name.clone()
        } else {
            self.scope.join(".")
        }
    }

    /// A wiring error tagged with the current scope.
    pub fn error(&self, message: impl Into<String>) -> GraphError {
        GraphError::Wiring {
            scope: self.scope_path(),
            message: message.into(),
        }
    }

    /// Number of nodes so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn fresh_name(&mut self, hint: &str) -> String {
        loop {
            self.counter += 1;
            let scope = self.scope.join(".");
            let name = if scope.is_empty() {
                format!("{hint}_{}", self.counter)
            } else {
                format!("{scope}/{hint}_{}", self.counter)
            };
            if self.names.insert(name.clone()) {
                return name;
            }
        }
    }

    fn claim(&mut self, name: &str) -> Result<()> {
        if !self.names.insert(name.to_string()) {
            return Err(self.error(format!("value name `{name}` is already used")));
        }
        Ok(())
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<Value> {
        self.claim(name)?;
        self.inputs.push(value_info(name, dtype, &shape));
        Ok(Value {
            name: name.into(),
            dtype,
            shape,
        })
    }

    /// Declares `value` as a graph output called `name`, checking it against the declared shape.
    pub fn output(&mut self, name: &str, value: &Value, dtype: DType, shape: Shape) -> Result<()> {
        if value.dtype != dtype {
            return Err(self.error(format!(
                "output `{name}` is {} but declared {dtype}",
                value.dtype
            )));
        }
        if !shapes_compatible(&value.shape, &shape) {
            return Err(self.error(format!(
                "output `{name}` has shape {} but is declared {}",
                render(&value.shape),
                render(&shape)
            )));
        }
        self.claim(name)?;
        self.nodes.push(NodeProto {
            input: vec![value.name().to_string()],
            output: vec![name.to_string()],
            name: Some(format!("{name}/Identity")),
            op_type: Some("Identity".into()),
            ..Default::default()
        });
        self.outputs.push(value_info(name, dtype, &shape));
        Ok(())
    }

    /// Adds an initializer whose bytes sit in an external data file.
    pub fn external_initializer(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[i64],
        data: ExternalData,
    ) -> Result<Value> {
        let expected = dims.iter().product::<i64>() as u64 * dtype.size() as u64;
        if expected != data.length {
            return Err(self.error(format!(
                "initializer `{name}`: {} bytes for {dtype} {:?} but the data holds {}",
                expected, dims, data.length
            )));
        }
        self.claim(name)?;
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dtype.onnx()),
            name: Some(name.to_string()),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![
                entry("location", data.location),
                entry("offset", data.offset.to_string()),
                entry("length", data.length.to_string()),
            ],
            ..Default::default()
        });
        Ok(Value {
            name: name.into(),
            dtype,
            shape: dims.iter().map(|&d| Dim::Known(d)).collect(),
        })
    }

    /// Adds a small initializer stored inline (constants, tables).
    pub fn inline_initializer(
        &mut self,
        hint: &str,
        dtype: DType,
        dims: &[i64],
        raw: Vec<u8>,
    ) -> Result<Value> {
        let expected = dims.iter().product::<i64>() as usize * dtype.size();
        if expected != raw.len() {
            return Err(self.error(format!(
                "constant `{hint}`: {} bytes for {:?}, got {}",
                expected,
                dims,
                raw.len()
            )));
        }
        let name = self.fresh_name(hint);
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dtype.onnx()),
            name: Some(name.clone()),
            raw_data: Some(raw),
            ..Default::default()
        });
        Ok(Value {
            name: name.into(),
            dtype,
            shape: dims.iter().map(|&d| Dim::Known(d)).collect(),
        })
    }

    /// A float32 constant.
    pub fn const_f32(&mut self, values: &[f32], dims: &[i64]) -> Result<Value> {
        self.inline_initializer(
            "const",
            DType::F32,
            dims,
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    /// A float64 constant.
    pub fn const_f64(&mut self, values: &[f64], dims: &[i64]) -> Result<Value> {
        self.inline_initializer(
            "const",
            DType::F64,
            dims,
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    /// An int64 vector constant (shapes, axes, indices).
    pub fn const_i64(&mut self, values: &[i64]) -> Result<Value> {
        self.inline_initializer(
            "const",
            DType::I64,
            &[values.len() as i64],
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    /// A rank-0 float constant of the given float dtype.
    pub fn scalar(&mut self, value: f64, dtype: DType) -> Result<Value> {
        let raw = match dtype {
            DType::F32 => (value as f32).to_le_bytes().to_vec(),
            DType::F64 => value.to_le_bytes().to_vec(),
            DType::F16 => half::f16::from_f64(value).to_le_bytes().to_vec(),
            DType::BF16 => half::bf16::from_f64(value).to_le_bytes().to_vec(),
            DType::I64 => (value as i64).to_le_bytes().to_vec(),
            other => return Err(self.error(format!("no scalar constants of {other}"))),
        };
        self.inline_initializer("scalar", dtype, &[], raw)
    }

    /// Appends a node and returns its outputs with the given types and shapes.
    pub(crate) fn node(
        &mut self,
        op_type: &str,
        domain: Option<&str>,
        inputs: &[Option<&Value>],
        attributes: Vec<AttributeProto>,
        outputs: Vec<(DType, Shape)>,
    ) -> Vec<Value> {
        let node_name = self.fresh_name(op_type);
        let mut output_values = Vec::with_capacity(outputs.len());
        let mut output_names = Vec::with_capacity(outputs.len());
        for (i, (dtype, shape)) in outputs.into_iter().enumerate() {
            let name = format!("{node_name}:{i}");
            self.names.insert(name.clone());
            output_names.push(name.clone());
            output_values.push(Value {
                name: name.into(),
                dtype,
                shape,
            });
        }
        if domain == Some("com.microsoft") {
            self.uses_microsoft_domain = true;
        }
        self.nodes.push(NodeProto {
            input: inputs
                .iter()
                .map(|v| v.map(|v| v.name().to_string()).unwrap_or_default())
                .collect(),
            output: output_names,
            name: Some(node_name),
            op_type: Some(op_type.to_string()),
            domain: domain.map(str::to_string),
            attribute: attributes,
            ..Default::default()
        });
        output_values
    }

    /// Appends a single-output node.
    pub(crate) fn node1(
        &mut self,
        op_type: &str,
        inputs: &[&Value],
        attributes: Vec<AttributeProto>,
        dtype: DType,
        shape: Shape,
    ) -> Value {
        let inputs: Vec<Option<&Value>> = inputs.iter().map(|v| Some(*v)).collect();
        self.node(op_type, None, &inputs, attributes, vec![(dtype, shape)])
            .remove(0)
    }
}

fn shapes_compatible(actual: &[Dim], declared: &[Dim]) -> bool {
    actual.len() == declared.len()
        && actual.iter().zip(declared).all(|(a, d)| match (a, d) {
            (Dim::Known(x), Dim::Known(y)) => x == y,
            _ => true,
        })
}

pub(crate) fn value_info(name: &str, dtype: DType, shape: &[Dim]) -> ValueInfoProto {
    let dims = shape
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: match d {
                Dim::Known(v) => Some(tensor_shape_proto::dimension::Value::DimValue(*v)),
                Dim::Named(n) => Some(tensor_shape_proto::dimension::Value::DimParam(n.clone())),
                Dim::Unknown => None,
            },
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype.onnx()),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Attribute constructors.
pub(crate) mod attr {
    use super::*;

    pub(crate) fn int(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            i: Some(v),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        }
    }
    pub(crate) fn float(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            f: Some(v),
            r#type: Some(AttributeType::Float as i32),
            ..Default::default()
        }
    }
    pub(crate) fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            ints: v.to_vec(),
            r#type: Some(AttributeType::Ints as i32),
            ..Default::default()
        }
    }
    pub(crate) fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            s: Some(v.as_bytes().to_vec()),
            r#type: Some(AttributeType::String as i32),
            ..Default::default()
        }
    }
}
