//! Layer helpers shared by the graphs of every component: Linear (as Gemm on the stored
//! `[out, in]` weight), norms, and attention in the forms the backends want. Weights come from a
//! [`WeightStore`] and are bound as the [`WeightBinding`] says.

use std::collections::{BTreeMap, HashMap};

use skyreels_contract::manifest::ExternalTensor;
use skyreels_contract::{Attention, TensorSpec};
use skyreels_graph::{AttentionBias, DType, Dim, ExternalData, Graph, Shape, Value};

use crate::error::{ExportError, Result};
use crate::prefix::Prefix;
use crate::weights::WeightStore;

/// How a graph gets its weights.
#[derive(Debug, Clone)]
pub enum WeightBinding {
    /// As external initializers: the graph is tied to one set of weights (`embed`, `head`, encoders).
    Initializers,
    /// As graph inputs named by the weight's name below `prefix` (`blocks.3.ffn.0.weight` is input
    /// `ffn.0.weight`): one graph serves every layer, and the runtime binds each layer's weights.
    Inputs {
        /// The layer whose weights this build reads (`blocks.3`).
        prefix: Prefix,
        /// Each weight input, with where its bytes are, in order of first use.
        bound: Vec<(TensorSpec, ExternalData)>,
    },
}

/// A graph built once per layer with that layer's weights as inputs (`build(layers, prefix)` for
/// `blocks.{i}`): layer 0's graph is returned with its weight inputs, every layer's weights are
/// recorded into `layers[i]`, and every layer must bind the same inputs (names, dtypes, shapes).
pub fn export_layer_graph(
    graph_name: &str,
    store: &mut WeightStore<'_>,
    compute: DType,
    attention: Attention,
    layers: &mut [BTreeMap<String, ExternalTensor>],
    mut build: impl FnMut(&mut Layers<'_, '_>, &Prefix) -> Result<()>,
) -> Result<(Graph, Vec<TensorSpec>)> {
    let mut first: Option<(Graph, Vec<TensorSpec>)> = None;
    for (index, weights) in layers.iter_mut().enumerate() {
        let block = Prefix::root().pp("blocks").pp(index);
        let mut builder =
            Layers::new(graph_name, store, compute, attention).with_weight_inputs(block.clone());
        build(&mut builder, &block).map_err(|e| in_layer(e, &block))?;
        let WeightBinding::Inputs { bound, .. } = builder.binding else {
            unreachable!("built with weight inputs")
        };
        let specs: Vec<TensorSpec> = bound.iter().map(|(spec, _)| spec.clone()).collect();
        for (spec, data) in bound {
            weights.insert(
                spec.name,
                ExternalTensor {
                    file: data.location,
                    offset: data.offset,
                    length: data.length,
                },
            );
        }
        match &first {
            None => first = Some((builder.graph, specs)),
            Some((_, expected)) if *expected != specs => {
                let differing = expected
                    .iter()
                    .find(|spec| !specs.contains(spec))
                    .or_else(|| specs.iter().find(|spec| !expected.contains(spec)))
                    .map_or(String::new(), |spec| {
                        format!(" (`{}` {} {:?})", spec.name, spec.dtype, spec.shape)
                    });
                return Err(ExportError::BadOptions(format!(
                    "`{block}` and `blocks.0` differ in the weights of their `{graph_name}` graph{differing}: every layer must have the same architecture\n  fix: check that the checkpoint is a complete SkyReels-V2 / Wan2.1 model (no layer-specific weights added or removed)"
                )));
            }
            Some(_) => {}
        }
    }
    first.ok_or_else(|| ExportError::BadOptions(format!("`{graph_name}`: the model has no layers")))
}

fn in_layer(error: ExportError, block: &Prefix) -> ExportError {
    match error {
        ExportError::Graph(e) => ExportError::BadOptions(format!("while wiring `{block}`: {e}")),
        other => other,
    }
}

/// The leading dims of a tensor as a run-time shape vector, for reshaping Gemm results back.
#[derive(Clone)]
pub struct Lead {
    value: Value,
    dims: Shape,
}

/// Slices of the tokens the feed-forward runs over ([`Layers::feed_forward`]).
pub const FEED_FORWARD_CHUNKS: i64 = 4;

/// A graph under construction together with the weights it draws from.
pub struct Layers<'w, 'c> {
    /// The graph.
    pub graph: Graph,
    /// The checkpoint's weights.
    pub weights: &'w mut WeightStore<'c>,
    /// Dtype of matmul weights and attention (norms and modulation stay float32).
    pub compute: DType,
    /// Attention form.
    pub attention: Attention,
    /// How weights enter the graph.
    pub binding: WeightBinding,
    ones: HashMap<usize, (Value, Value)>,
    leads: HashMap<String, Lead>,
}

impl<'w, 'c> Layers<'w, 'c> {
    /// Starts graph `name`.
    pub fn new(
        name: &str,
        weights: &'w mut WeightStore<'c>,
        compute: DType,
        attention: Attention,
    ) -> Self {
        Layers {
            graph: Graph::new(name),
            weights,
            compute,
            attention,
            binding: WeightBinding::Initializers,
            ones: HashMap::new(),
            leads: HashMap::new(),
        }
    }

    /// Binds the weights below `prefix` as graph inputs instead of initializers.
    pub fn with_weight_inputs(mut self, prefix: Prefix) -> Self {
        self.binding = WeightBinding::Inputs {
            prefix,
            bound: Vec::new(),
        };
        self
    }

    /// The checkpoint tensor `name` (stored shape `expected`) as `dtype`, viewed as `dims`: an
    /// initializer, or a graph input under [`WeightBinding::Inputs`].
    pub fn weight(
        &mut self,
        name: &str,
        expected: &[usize],
        dims: &[i64],
        dtype: DType,
    ) -> Result<Value> {
        let WeightBinding::Inputs { prefix, bound } = &mut self.binding else {
            return self
                .weights
                .initializer(&mut self.graph, name, expected, dims, dtype);
        };
        let input = prefix.relative(name).ok_or_else(|| {
            ExportError::BadOptions(format!(
                "internal: weight `{name}` is not below `{prefix}`, the layer this graph binds"
            ))
        })?;
        if let Some((spec, _)) = bound.iter().find(|(spec, _)| spec.name == input) {
            return Err(ExportError::BadOptions(format!(
                "internal: weight input `{}` of `{prefix}` is bound twice",
                spec.name
            )));
        }
        let data = self.weights.place(name, expected, dims, dtype)?;
        let shape: Shape = dims.iter().map(|&d| Dim::Known(d)).collect();
        let value = self.graph.input(input, dtype, shape)?;
        bound.push((
            TensorSpec {
                name: input.to_string(),
                dtype: dtype.name().to_string(),
                shape: dims.iter().map(|d| d.to_string()).collect(),
            },
            data,
        ));
        Ok(value)
    }

    fn stored(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<Value> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        self.weight(name, shape, &dims, dtype)
    }

    /// The leading dims (all but the last) of `x`, cached by value name.
    pub fn lead_of(&mut self, x: &Value) -> Result<Lead> {
        if let Some(lead) = self.leads.get(x.name()) {
            return Ok(lead.clone());
        }
        let rank = x.rank() as i64;
        let value = self.graph.shape_of(x, 0, rank - 1)?;
        let lead = Lead {
            value,
            dims: x.shape[..x.rank() - 1].to_vec(),
        };
        self.leads.insert(x.name().to_string(), lead.clone());
        Ok(lead)
    }

    /// `x @ Wᵀ + b` for the stored Linear `prefix.{weight,bias}` `[out, in]`; float32 out.
    pub fn linear(
        &mut self,
        x: &Value,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        lead: &Lead,
    ) -> Result<Value> {
        self.linear_in(self.compute, x, prefix, in_features, out_features, lead)
    }

    /// [`Layers::linear`] computed in `dtype` (float32 for the modulation MLPs, as the reference keeps them).
    pub fn linear_in(
        &mut self,
        dtype: DType,
        x: &Value,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        lead: &Lead,
    ) -> Result<Value> {
        let y = self.gemm_in(dtype, x, prefix, in_features, out_features, lead)?;
        Ok(self.graph.cast(&y, DType::F32)?)
    }

    /// [`Layers::linear`] left in the compute dtype, for a consumer that takes it as is (another
    /// linear layer, attention): the reference rounds there too, and the float32 round trip
    /// would only move memory.
    pub fn linear_compute(
        &mut self,
        x: &Value,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        lead: &Lead,
    ) -> Result<Value> {
        self.gemm_in(self.compute, x, prefix, in_features, out_features, lead)
    }

    fn gemm_in(
        &mut self,
        dtype: DType,
        x: &Value,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        lead: &Lead,
    ) -> Result<Value> {
        let (weight, bias) = self.linear_weights(prefix, in_features, out_features, dtype)?;
        let x = self.graph.cast(x, dtype)?;
        let flat = self.flatten(&x, in_features)?;
        let y = self.gemm(&flat, prefix, &weight, bias.as_ref())?;
        self.unflatten(&y, out_features, lead)
    }

    /// The weight `[out, in]` and bias (if stored) of the Linear `prefix`, as `dtype`.
    fn linear_weights(
        &mut self,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        dtype: DType,
    ) -> Result<(Value, Option<Value>)> {
        let weight = self.stored(
            &format!("{prefix}.weight"),
            &[out_features, in_features],
            dtype,
        )?;
        let bias = if self.weights.contains(&format!("{prefix}.bias")) {
            Some(self.stored(&format!("{prefix}.bias"), &[out_features], dtype)?)
        } else {
            None
        };
        Ok((weight, bias))
    }

    /// `[..., features]` as `[rows, features]`.
    fn flatten(&mut self, x: &Value, features: usize) -> Result<Value> {
        Ok(if x.rank() == 2 {
            x.clone()
        } else {
            self.graph.reshape(x, &[-1, features as i64])?
        })
    }

    /// `[rows, features]` back to `lead + [features]`.
    fn unflatten(&mut self, y: &Value, features: usize, lead: &Lead) -> Result<Value> {
        if lead.dims.len() == 1 {
            return Ok(y.clone());
        }
        let g = &mut self.graph;
        let out = g.const_i64(&[features as i64])?;
        let target = g.concat(&[&lead.value, &out], 0)?;
        let mut shape = lead.dims.clone();
        shape.push(Dim::Known(features as i64));
        Ok(g.reshape_to(y, &target, shape)?)
    }

    /// `x @ weightᵀ + bias` on rows, named below the Linear `prefix`.
    fn gemm(
        &mut self,
        rows: &Value,
        prefix: &str,
        weight: &Value,
        bias: Option<&Value>,
    ) -> Result<Value> {
        // A graph shared by every layer names its nodes below the layer (`self_attn.q/Gemm`); the
        // exporter adds the layer to wiring errors.
        let scope = match &self.binding {
            WeightBinding::Inputs { prefix: layer, .. } => layer.relative(prefix).unwrap_or(prefix),
            WeightBinding::Initializers => prefix,
        };
        Ok(self
            .graph
            .scoped(scope, |g| g.gemm_transposed(rows, weight, bias))?)
    }

    /// The feed-forward `Linear(first) → GELU (tanh) → Linear(second)` in the compute dtype,
    /// float32 out, run over [`FEED_FORWARD_CHUNKS`] slices of the tokens one after another.
    /// Row by row this is the unsliced computation; what changes is memory: the hidden
    /// activations (`ffn_dim` wide: 0.9 GB in bf16 for the 1.3B at 51,000 tokens, twice over
    /// with the GELU's output) exist for one slice at a time.
    pub fn feed_forward(
        &mut self,
        x: &Value,
        (first, second): (&str, &str),
        (features, hidden): (usize, usize),
        lead: &Lead,
    ) -> Result<Value> {
        let compute = self.compute;
        let (weight_in, bias_in) = self.linear_weights(first, features, hidden, compute)?;
        let (weight_out, bias_out) = self.linear_weights(second, hidden, features, compute)?;
        let x = self.graph.cast(x, compute)?;
        let rows = self.flatten(&x, features)?;
        let g = &mut self.graph;
        // Rows per slice: ceil(rows / chunks). Slice clamps its bounds to the rows, so with fewer
        // rows than that covers (5 rows: slices of 2, 2, 1, 0) the last slices are empty.
        let count = g.shape_of(&rows, 0, 1)?;
        let round_up = g.const_i64(&[FEED_FORWARD_CHUNKS - 1])?;
        let chunks = g.const_i64(&[FEED_FORWARD_CHUNKS])?;
        let padded = g.add(&count, &round_up)?;
        let per_chunk = g.div(&padded, &chunks)?;
        let mut outputs = Vec::new();
        let mut start = g.const_i64(&[0])?;
        for index in 1..=FEED_FORWARD_CHUNKS {
            let g = &mut self.graph;
            let multiple = g.const_i64(&[index])?;
            let end = g.mul(&per_chunk, &multiple)?;
            let slice = g.slice_between(&rows, 0, &start, &end, Dim::Unknown)?;
            let h = self.gemm(&slice, first, &weight_in, bias_in.as_ref())?;
            let h = self
                .graph
                .gelu(&h, skyreels_graph::GeluApproximation::Tanh)?;
            outputs.push(self.gemm(&h, second, &weight_out, bias_out.as_ref())?);
            start = end;
        }
        let parts: Vec<&Value> = outputs.iter().collect();
        let y = self.graph.concat(&parts, 0)?;
        let y = self.graph.cast(&y, DType::F32)?;
        self.unflatten(&y, features, lead)
    }

    /// Unit scale and zero bias `[size]` for parameter-free LayerNorms. The explicit zero bias
    /// sidesteps an ONNX Runtime 1.31 crash in `SkipLayerNormFusion` on bias-less LayerNorms.
    fn identity_affine(&mut self, size: usize) -> Result<(Value, Value)> {
        if let Some(v) = self.ones.get(&size) {
            return Ok(v.clone());
        }
        let ones = self.graph.const_f32(&vec![1.0; size], &[size as i64])?;
        let zeros = self.graph.const_f32(&vec![0.0; size], &[size as i64])?;
        self.ones.insert(size, (ones.clone(), zeros.clone()));
        Ok((ones, zeros))
    }

    /// LayerNorm over the last axis without affine parameters (float32).
    pub fn layer_norm_plain(&mut self, x: &Value, size: usize, eps: f64) -> Result<Value> {
        let (ones, zeros) = self.identity_affine(size)?;
        Ok(self.graph.layer_norm(x, &ones, Some(&zeros), eps as f32)?)
    }

    /// LayerNorm with stored `prefix.{weight,bias}` (float32).
    pub fn layer_norm_affine(
        &mut self,
        x: &Value,
        prefix: &str,
        size: usize,
        eps: f64,
    ) -> Result<Value> {
        let scale = self.stored(&format!("{prefix}.weight"), &[size], DType::F32)?;
        let bias = self.stored(&format!("{prefix}.bias"), &[size], DType::F32)?;
        Ok(self.graph.layer_norm(x, &scale, Some(&bias), eps as f32)?)
    }

    /// RMSNorm with stored `name` `[size]`, in `x`'s dtype (float32, or the compute dtype with
    /// float32 statistics, as ONNX's `RMSNormalization` keeps them).
    pub fn rms_norm(&mut self, x: &Value, name: &str, size: usize, eps: f64) -> Result<Value> {
        let scale = self.stored(name, &[size], x.dtype)?;
        Ok(self.graph.rms_norm(x, &scale, eps as f32)?)
    }

    /// Multi-head attention on `[B, S, heads·d]` tensors, float32 out.
    pub fn attention(
        &mut self,
        query: &Value,
        key: &Value,
        value: &Value,
        num_heads: usize,
        bias: Option<&Value>,
    ) -> Result<Value> {
        let out = self.attention_compute(query, key, value, num_heads, bias)?;
        Ok(self.graph.cast(&out, DType::F32)?)
    }

    /// [`Layers::attention`] with the output left in the compute dtype, for an output projection.
    pub fn attention_compute(
        &mut self,
        query: &Value,
        key: &Value,
        value: &Value,
        num_heads: usize,
        bias: Option<&Value>,
    ) -> Result<Value> {
        let compute = self.compute;
        let g = &mut self.graph;
        let (q, k, v) = (
            g.cast(query, compute)?,
            g.cast(key, compute)?,
            g.cast(value, compute)?,
        );
        let bias = match bias {
            Some(b) => Some(g.cast(b, compute)?),
            None => None,
        };
        let out = match self.attention {
            Attention::ContribMha => {
                let bias = bias
                    .as_ref()
                    .map_or(AttentionBias::None, AttentionBias::Additive);
                g.multi_head_attention(&q, &k, &v, bias, num_heads as i64)?
            }
            Attention::MatMul | Attention::OnnxAttention => {
                let hidden = match q.dim(-1).known() {
                    Some(h) => h,
                    None => return Err(g.error("attention needs a known hidden size").into()),
                };
                let head_dim = hidden / num_heads as i64;
                let scale = 1.0 / (head_dim as f64).sqrt();
                heads_attention(
                    g,
                    self.attention,
                    [&q, &k, &v],
                    bias.as_ref(),
                    num_heads,
                    scale,
                )?
            }
        };
        Ok(out)
    }
}

/// Attention on `[B, S, heads·d]` query/key/value, computed per head as `[B, heads, S, d]`:
/// `softmax(scale·q·kᵀ + bias)·v` as one opset-23 `Attention` node ([`Attention::OnnxAttention`])
/// or as MatMul + Softmax + MatMul (any other form). The output is `[B, S, heads·d]` in the
/// inputs' dtype.
pub fn heads_attention(
    g: &mut Graph,
    form: Attention,
    [q, k, v]: [&Value; 3],
    bias: Option<&Value>,
    num_heads: usize,
    scale: f64,
) -> Result<Value> {
    let hidden = match q.dim(-1).known() {
        Some(h) => h,
        None => return Err(g.error("attention needs a known hidden size").into()),
    };
    let head_dim = hidden / num_heads as i64;
    let q = g.reshape(q, &[0, 0, num_heads as i64, head_dim])?;
    let k = g.reshape(k, &[0, 0, num_heads as i64, head_dim])?;
    let v = g.reshape(v, &[0, 0, num_heads as i64, head_dim])?;
    let q = g.transpose(&q, &[0, 2, 1, 3])?; // (b, heads, s, d)
    let out = match form {
        Attention::OnnxAttention => {
            let k = g.transpose(&k, &[0, 2, 1, 3])?;
            let v = g.transpose(&v, &[0, 2, 1, 3])?;
            g.attention(&q, &k, &v, bias, scale as f32)?
        }
        Attention::MatMul | Attention::ContribMha => {
            let k = g.transpose(&k, &[0, 2, 3, 1])?; // (b, heads, d, s)
            let v = g.transpose(&v, &[0, 2, 1, 3])?;
            let q = match scale {
                1.0 => q,
                _ => {
                    let factor = g.scalar(scale, q.dtype)?;
                    g.mul(&q, &factor)?
                }
            };
            let scores = g.matmul(&q, &k)?;
            let scores = match bias {
                Some(b) => g.add(&scores, b)?,
                None => scores,
            };
            let probabilities = g.softmax(&scores, -1)?;
            g.matmul(&probabilities, &v)?
        }
    };
    let out = g.transpose(&out, &[0, 2, 1, 3])?;
    Ok(g.reshape(&out, &[0, 0, hidden])?)
}
