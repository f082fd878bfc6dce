//! Op constructors with shape inference. Each checks what it can at wire time.

use crate::Result;
use crate::builder::{Graph, Value, attr};
use crate::dtype::DType;
use crate::shape::{Dim, Shape, broadcast, render};

/// Which GELU form a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeluApproximation {
    /// Exact erf GELU.
    None,
    /// tanh approximation.
    Tanh,
}

/// Optional additive bias / mask for attention.
pub enum AttentionBias<'a> {
    /// No mask: full bidirectional attention.
    None,
    /// Additive float bias broadcastable to `[B, heads, Sq, Sk]` (`-inf` = masked).
    Additive(&'a Value),
}

fn axis_index(rank: usize, axis: i64) -> usize {
    if axis < 0 {
        (rank as i64 + axis) as usize
    } else {
        axis as usize
    }
}

impl Graph {
    fn same_dtype(&self, op: &str, a: &Value, b: &Value) -> Result<()> {
        if a.dtype != b.dtype {
            return Err(self.error(format!("{op}: dtype {} vs {}", a.dtype, b.dtype)));
        }
        Ok(())
    }

    fn binary(&mut self, op: &str, a: &Value, b: &Value) -> Result<Value> {
        self.same_dtype(op, a, b)?;
        let shape = broadcast(&a.shape, &b.shape).ok_or_else(|| {
            self.error(format!(
                "{op}: cannot broadcast {} with {}",
                render(&a.shape),
                render(&b.shape)
            ))
        })?;
        Ok(self.node1(op, &[a, b], vec![], a.dtype, shape))
    }

    /// Elementwise `a + b` with broadcasting.
    pub fn add(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Add", a, b)
    }
    /// Elementwise `a - b`.
    pub fn sub(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Sub", a, b)
    }
    /// Elementwise `a * b`.
    pub fn mul(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Mul", a, b)
    }
    /// Elementwise `a / b`.
    pub fn div(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Div", a, b)
    }
    /// Elementwise `max(a, b)`.
    pub fn max(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Max", a, b)
    }
    /// Elementwise `min(a, b)`.
    pub fn min(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Min", a, b)
    }

    /// Elementwise comparison `a <= b` giving bool.
    pub fn less_or_equal(&mut self, a: &Value, b: &Value) -> Result<Value> {
        let mut v = self.binary("LessOrEqual", a, b)?;
        v.dtype = DType::Bool;
        Ok(v)
    }

    /// `condition ? a : b`.
    pub fn where_(&mut self, condition: &Value, a: &Value, b: &Value) -> Result<Value> {
        self.same_dtype("Where", a, b)?;
        let ab = broadcast(&a.shape, &b.shape)
            .ok_or_else(|| self.error("Where: branch shapes clash"))?;
        let shape = broadcast(&condition.shape, &ab)
            .ok_or_else(|| self.error("Where: condition shape clashes"))?;
        Ok(self.node1("Where", &[condition, a, b], vec![], a.dtype, shape))
    }

    fn unary(&mut self, op: &str, x: &Value) -> Value {
        self.node1(op, &[x], vec![], x.dtype, x.shape.clone())
    }

    /// Logistic sigmoid.
    pub fn sigmoid(&mut self, x: &Value) -> Result<Value> {
        Ok(self.unary("Sigmoid", x))
    }
    /// `x * sigmoid(x)`.
    pub fn silu(&mut self, x: &Value) -> Result<Value> {
        let s = self.unary("Sigmoid", x);
        self.mul(x, &s)
    }
    /// Sine.
    pub fn sin(&mut self, x: &Value) -> Result<Value> {
        Ok(self.unary("Sin", x))
    }
    /// Cosine.
    pub fn cos(&mut self, x: &Value) -> Result<Value> {
        Ok(self.unary("Cos", x))
    }
    /// Natural exponential.
    pub fn exp(&mut self, x: &Value) -> Result<Value> {
        Ok(self.unary("Exp", x))
    }
    /// Square root.
    pub fn sqrt(&mut self, x: &Value) -> Result<Value> {
        Ok(self.unary("Sqrt", x))
    }
    /// Negation.
    pub fn neg(&mut self, x: &Value) -> Result<Value> {
        Ok(self.unary("Neg", x))
    }
    /// Absolute value.
    pub fn abs(&mut self, x: &Value) -> Result<Value> {
        Ok(self.unary("Abs", x))
    }
    /// Floor.
    pub fn floor(&mut self, x: &Value) -> Result<Value> {
        Ok(self.unary("Floor", x))
    }

    /// GELU (opset 20), exact or tanh-approximated.
    pub fn gelu(&mut self, x: &Value, approximation: GeluApproximation) -> Result<Value> {
        let approximate = match approximation {
            GeluApproximation::None => "none",
            GeluApproximation::Tanh => "tanh",
        };
        Ok(self.node1(
            "Gelu",
            &[x],
            vec![attr::string("approximate", approximate)],
            x.dtype,
            x.shape.clone(),
        ))
    }

    /// Element type conversion; a no-op when `x` already has `to`.
    pub fn cast(&mut self, x: &Value, to: DType) -> Result<Value> {
        if x.dtype == to {
            return Ok(x.clone());
        }
        Ok(self.node1(
            "Cast",
            &[x],
            vec![attr::int("to", to.onnx() as i64)],
            to,
            x.shape.clone(),
        ))
    }

    /// Matrix product with numpy batch broadcasting.
    pub fn matmul(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.same_dtype("MatMul", a, b)?;
        if a.rank() < 2 || b.rank() < 2 {
            return Err(self.error("MatMul: both operands need rank >= 2"));
        }
        let (k1, k2) = (a.dim(-1), b.dim(-2));
        if let (Some(x), Some(y)) = (k1.known(), k2.known())
            && x != y
        {
            return Err(self.error(format!(
                "MatMul inner dims {x} vs {y} ({} @ {})",
                render(&a.shape),
                render(&b.shape)
            )));
        }
        let batch = broadcast(&a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2])
            .ok_or_else(|| self.error("MatMul: batch dims clash"))?;
        let mut shape = batch;
        shape.push(a.dim(-2).clone());
        shape.push(b.dim(-1).clone());
        Ok(self.node1("MatMul", &[a, b], vec![], a.dtype, shape))
    }

    /// `a @ bᵀ + c` on 2-D `a` `[M, K]` and `b` `[N, K]` (PyTorch Linear layout, no weight copy).
    pub fn gemm_transposed(&mut self, a: &Value, b: &Value, c: Option<&Value>) -> Result<Value> {
        self.same_dtype("Gemm", a, b)?;
        if a.rank() != 2 || b.rank() != 2 {
            return Err(self.error(format!(
                "Gemm needs 2-D operands, got {} and {}",
                render(&a.shape),
                render(&b.shape)
            )));
        }
        if let (Some(x), Some(y)) = (a.shape[1].known(), b.shape[1].known())
            && x != y
        {
            return Err(self.error(format!("Gemm inner dims {x} vs {y}")));
        }
        let shape = vec![a.shape[0].clone(), b.shape[0].clone()];
        let mut inputs = vec![Some(a), Some(b)];
        if let Some(c) = c {
            self.same_dtype("Gemm", a, c)?;
            if c.rank() != 1 || c.shape[0].known() != b.shape[0].known() {
                return Err(self.error(format!(
                    "Gemm bias {} does not match {} outputs",
                    render(&c.shape),
                    b.shape[0]
                )));
            }
            inputs.push(Some(c));
        }
        Ok(self
            .node(
                "Gemm",
                None,
                &inputs,
                vec![attr::int("transB", 1)],
                vec![(a.dtype, shape)],
            )
            .remove(0))
    }

    /// Reshape to a constant target (`0` copies the input dim, `-1` infers one dim).
    pub fn reshape(&mut self, x: &Value, target: &[i64]) -> Result<Value> {
        let mut shape: Shape = Vec::with_capacity(target.len());
        let mut infer = None;
        for (i, &t) in target.iter().enumerate() {
            shape.push(match t {
                0 => x
                    .shape
                    .get(i)
                    .cloned()
                    .ok_or_else(|| self.error("Reshape: 0 past input rank"))?,
                -1 => {
                    if infer.replace(i).is_some() {
                        return Err(self.error("Reshape: two -1 dims"));
                    }
                    Dim::Unknown
                }
                v if v > 0 => Dim::Known(v),
                v => return Err(self.error(format!("Reshape: bad target dim {v}"))),
            });
        }
        let input_total = x
            .shape
            .iter()
            .try_fold(1i64, |acc, d| d.known().map(|v| acc * v));
        if let Some(i) = infer {
            let rest = shape
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .try_fold(1i64, |acc, (_, d)| d.known().map(|v| acc * v));
            if let (Some(total), Some(rest)) = (input_total, rest) {
                if rest == 0 || total % rest != 0 {
                    return Err(self.error(format!(
                        "Reshape {} to {:?}: sizes do not divide",
                        render(&x.shape),
                        target
                    )));
                }
                shape[i] = Dim::Known(total / rest);
            } else {
                // Carry a single symbolic dim through when everything else cancels out.
                let unknown_in: Vec<&Dim> =
                    x.shape.iter().filter(|d| d.known().is_none()).collect();
                let known_in: i64 = x.shape.iter().filter_map(Dim::known).product();
                if unknown_in.len() == 1 && rest == Some(known_in) {
                    shape[i] = unknown_in[0].clone();
                }
            }
        } else if let Some(total) = input_total {
            let out_total = shape
                .iter()
                .try_fold(1i64, |acc, d| d.known().map(|v| acc * v));
            if let Some(out_total) = out_total
                && out_total != total
            {
                return Err(self.error(format!(
                    "Reshape {} to {:?}: element counts differ",
                    render(&x.shape),
                    target
                )));
            }
        }
        let target_value = self.const_i64(target)?;
        Ok(self.node1("Reshape", &[x, &target_value], vec![], x.dtype, shape))
    }

    /// Reshape to a run-time shape tensor; the caller states the resulting shape.
    pub fn reshape_to(&mut self, x: &Value, target: &Value, result: Shape) -> Result<Value> {
        if target.dtype != DType::I64 || target.rank() != 1 {
            return Err(self.error("Reshape: target must be a 1-D int64 tensor"));
        }
        if let Some(n) = target.shape[0].known()
            && n as usize != result.len()
        {
            return Err(self.error(format!(
                "Reshape: target has {n} dims but result is declared {}",
                render(&result)
            )));
        }
        Ok(self.node1("Reshape", &[x, target], vec![], x.dtype, result))
    }

    /// Permutes axes.
    pub fn transpose(&mut self, x: &Value, perm: &[i64]) -> Result<Value> {
        if perm.len() != x.rank() {
            return Err(self.error(format!("Transpose: perm {:?} for rank {}", perm, x.rank())));
        }
        let shape = perm.iter().map(|&p| x.shape[p as usize].clone()).collect();
        Ok(self.node1(
            "Transpose",
            &[x],
            vec![attr::ints("perm", perm)],
            x.dtype,
            shape,
        ))
    }

    /// Concatenates along `axis`.
    pub fn concat(&mut self, parts: &[&Value], axis: i64) -> Result<Value> {
        let first = parts
            .first()
            .ok_or_else(|| self.error("Concat of nothing"))?;
        let a = axis_index(first.rank(), axis);
        let mut shape = first.shape.clone();
        for p in &parts[1..] {
            self.same_dtype("Concat", first, p)?;
            if p.rank() != first.rank() {
                return Err(self.error("Concat: ranks differ"));
            }
            for (i, (d, e)) in shape.iter().zip(&p.shape).enumerate() {
                if i != a
                    && let (Some(x), Some(y)) = (d.known(), e.known())
                    && x != y
                {
                    return Err(self.error(format!("Concat: dim {i} is {x} vs {y}")));
                }
            }
            shape[a] = shape[a].add(&p.shape[a]);
        }
        Ok(self.node1(
            "Concat",
            parts,
            vec![attr::int("axis", axis)],
            first.dtype,
            shape,
        ))
    }

    /// `x[start:end]` along one axis with constant bounds (`end` may be `i64::MAX`).
    pub fn slice(&mut self, x: &Value, axis: i64, start: i64, end: i64) -> Result<Value> {
        let a = axis_index(x.rank(), axis);
        let mut shape = x.shape.clone();
        shape[a] = match x.shape[a].known() {
            Some(n) => {
                let clamp = |v: i64| if v < 0 { (n + v).max(0) } else { v.min(n) };
                Dim::Known((clamp(end) - clamp(start)).max(0))
            }
            None if start >= 0 && end >= 0 && end != i64::MAX => Dim::Known(end - start),
            None => Dim::Unknown,
        };
        let starts = self.const_i64(&[start])?;
        let ends = self.const_i64(&[end])?;
        let axes = self.const_i64(&[axis])?;
        Ok(self.node1("Slice", &[x, &starts, &ends, &axes], vec![], x.dtype, shape))
    }

    /// `x[start:end]` along one axis with run-time int64 `[1]` bounds; `size` is the result's
    /// extent along that axis.
    pub fn slice_between(
        &mut self,
        x: &Value,
        axis: i64,
        start: &Value,
        end: &Value,
        size: Dim,
    ) -> Result<Value> {
        if start.dtype != DType::I64 || end.dtype != DType::I64 {
            return Err(self.error("Slice: bounds must be int64"));
        }
        let a = axis_index(x.rank(), axis);
        let mut shape = x.shape.clone();
        shape[a] = size;
        let axes = self.const_i64(&[axis])?;
        Ok(self.node1("Slice", &[x, start, end, &axes], vec![], x.dtype, shape))
    }

    /// Splits into equal parts of the given sizes along `axis`.
    pub fn split(&mut self, x: &Value, axis: i64, sizes: &[i64]) -> Result<Vec<Value>> {
        let a = axis_index(x.rank(), axis);
        if let Some(n) = x.shape[a].known()
            && sizes.iter().sum::<i64>() != n
        {
            return Err(self.error(format!("Split: sizes {:?} do not add up to {n}", sizes)));
        }
        let split = self.const_i64(sizes)?;
        let outputs = sizes
            .iter()
            .map(|&s| {
                let mut shape = x.shape.clone();
                shape[a] = Dim::Known(s);
                (x.dtype, shape)
            })
            .collect();
        Ok(self.node(
            "Split",
            None,
            &[Some(x), Some(&split)],
            vec![attr::int("axis", axis)],
            outputs,
        ))
    }

    /// Inserts size-1 axes.
    pub fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Result<Value> {
        let rank = x.rank() + axes.len();
        let mut positions: Vec<usize> = axes.iter().map(|&a| axis_index(rank, a)).collect();
        positions.sort_unstable();
        let mut shape = x.shape.clone();
        for p in positions {
            shape.insert(p, Dim::Known(1));
        }
        let axes_value = self.const_i64(axes)?;
        Ok(self.node1("Unsqueeze", &[x, &axes_value], vec![], x.dtype, shape))
    }

    /// Removes size-1 axes.
    pub fn squeeze(&mut self, x: &Value, axes: &[i64]) -> Result<Value> {
        let mut positions: Vec<usize> = axes.iter().map(|&a| axis_index(x.rank(), a)).collect();
        positions.sort_unstable();
        let mut shape = x.shape.clone();
        for p in positions.into_iter().rev() {
            if let Some(n) = shape[p].known()
                && n != 1
            {
                return Err(self.error(format!("Squeeze: axis {p} has size {n}")));
            }
            shape.remove(p);
        }
        let axes_value = self.const_i64(axes)?;
        Ok(self.node1("Squeeze", &[x, &axes_value], vec![], x.dtype, shape))
    }

    /// LayerNormalization over the last axis; `scale` and `bias` are `[C]`.
    pub fn layer_norm(
        &mut self,
        x: &Value,
        scale: &Value,
        bias: Option<&Value>,
        epsilon: f32,
    ) -> Result<Value> {
        self.same_dtype("LayerNormalization", x, scale)?;
        if scale.rank() != 1 || scale.shape[0].known() != x.dim(-1).known() {
            return Err(self.error(format!(
                "LayerNorm scale {} vs input {}",
                render(&scale.shape),
                render(&x.shape)
            )));
        }
        let inputs = [Some(x), Some(scale), bias];
        let attributes = vec![attr::int("axis", -1), attr::float("epsilon", epsilon)];
        Ok(self
            .node(
                "LayerNormalization",
                None,
                &inputs,
                attributes,
                vec![(x.dtype, x.shape.clone())],
            )
            .remove(0))
    }

    /// RMSNormalization (opset 23) over the last axis.
    pub fn rms_norm(&mut self, x: &Value, scale: &Value, epsilon: f32) -> Result<Value> {
        self.same_dtype("RMSNormalization", x, scale)?;
        if scale.rank() != 1 || scale.shape[0].known() != x.dim(-1).known() {
            return Err(self.error(format!(
                "RMSNorm scale {} vs input {}",
                render(&scale.shape),
                render(&x.shape)
            )));
        }
        let attributes = vec![attr::int("axis", -1), attr::float("epsilon", epsilon)];
        Ok(self.node1(
            "RMSNormalization",
            &[x, scale],
            attributes,
            x.dtype,
            x.shape.clone(),
        ))
    }

    /// Mean over `axes`.
    pub fn reduce_mean(&mut self, x: &Value, axes: &[i64], keep_dims: bool) -> Result<Value> {
        self.reduce("ReduceMean", x, axes, keep_dims)
    }

    /// Euclidean norm `sqrt(Σ x²)` over `axes`.
    pub fn reduce_l2(&mut self, x: &Value, axes: &[i64], keep_dims: bool) -> Result<Value> {
        self.reduce("ReduceL2", x, axes, keep_dims)
    }

    fn reduce(&mut self, op: &str, x: &Value, axes: &[i64], keep_dims: bool) -> Result<Value> {
        if let Some(bad) = axes
            .iter()
            .find(|&&a| a >= x.rank() as i64 || a < -(x.rank() as i64))
        {
            return Err(self.error(format!(
                "{op}: axis {bad} out of range for {}",
                render(&x.shape)
            )));
        }
        let positions: Vec<usize> = axes.iter().map(|&a| axis_index(x.rank(), a)).collect();
        let shape = x
            .shape
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match (positions.contains(&i), keep_dims) {
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
                (false, _) => Some(d.clone()),
            })
            .collect();
        let axes_value = self.const_i64(axes)?;
        Ok(self.node1(
            op,
            &[x, &axes_value],
            vec![attr::int("keepdims", keep_dims as i64)],
            x.dtype,
            shape,
        ))
    }

    /// Softmax along `axis`.
    pub fn softmax(&mut self, x: &Value, axis: i64) -> Result<Value> {
        Ok(self.node1(
            "Softmax",
            &[x],
            vec![attr::int("axis", axis)],
            x.dtype,
            x.shape.clone(),
        ))
    }

    /// Rows of `table` picked by integer `indices` (axis 0).
    pub fn gather(&mut self, table: &Value, indices: &Value) -> Result<Value> {
        if !matches!(indices.dtype, DType::I64 | DType::I32) {
            return Err(self.error("Gather: indices must be integers"));
        }
        let mut shape = indices.shape.clone();
        shape.extend(table.shape[1..].iter().cloned());
        Ok(self.node1(
            "Gather",
            &[table, indices],
            vec![attr::int("axis", 0)],
            table.dtype,
            shape,
        ))
    }

    /// The shape of `x` from `start` to `end` (exclusive) as an int64 vector.
    pub fn shape_of(&mut self, x: &Value, start: i64, end: i64) -> Result<Value> {
        let (s, e) = (
            axis_index(x.rank(), start),
            axis_index(x.rank(), end).min(x.rank()),
        );
        let len = e.saturating_sub(s) as i64;
        let attributes = vec![attr::int("start", start), attr::int("end", end)];
        Ok(self.node1("Shape", &[x], attributes, DType::I64, vec![Dim::Known(len)]))
    }

    /// `[start, start+delta, ...)` below `limit`; scalars in, 1-D out.
    pub fn range(
        &mut self,
        start: &Value,
        limit: &Value,
        delta: &Value,
        length: Dim,
    ) -> Result<Value> {
        self.same_dtype("Range", start, limit)?;
        Ok(self.node1(
            "Range",
            &[start, limit, delta],
            vec![],
            start.dtype,
            vec![length],
        ))
    }

    /// Broadcasts `x` to the run-time shape `target`; the caller states the result shape.
    pub fn expand(&mut self, x: &Value, target: &Value, result: Shape) -> Result<Value> {
        Ok(self.node1("Expand", &[x, target], vec![], x.dtype, result))
    }

    /// N-D convolution (NC...), with explicit pads `[begin..., end...]`.
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the ONNX Conv attributes one to one"
    )]
    pub fn conv(
        &mut self,
        x: &Value,
        weight: &Value,
        bias: Option<&Value>,
        strides: &[i64],
        pads: &[i64],
        dilations: &[i64],
        group: i64,
    ) -> Result<Value> {
        self.same_dtype("Conv", x, weight)?;
        let spatial = x.rank() - 2;
        if weight.rank() != x.rank() || strides.len() != spatial || pads.len() != 2 * spatial {
            return Err(self.error(format!(
                "Conv: input {} weight {} strides {:?} pads {:?}",
                render(&x.shape),
                render(&weight.shape),
                strides,
                pads
            )));
        }
        if let (Some(c), Some(wc)) = (x.shape[1].known(), weight.shape[1].known())
            && c != wc * group
        {
            return Err(self.error(format!(
                "Conv: input has {c} channels, weight expects {}",
                wc * group
            )));
        }
        let mut shape = vec![x.shape[0].clone(), weight.shape[0].clone()];
        for i in 0..spatial {
            let k = weight.shape[2 + i].known().unwrap_or(1);
            shape.push(match x.shape[2 + i].known() {
                Some(n) => Dim::Known(
                    (n + pads[i] + pads[i + spatial] - dilations[i] * (k - 1) - 1) / strides[i] + 1,
                ),
                None if k == 1 && strides[i] == 1 && pads[i] + pads[i + spatial] == 0 => {
                    x.shape[2 + i].clone()
                }
                None => Dim::Unknown,
            });
        }
        let inputs = [Some(x), Some(weight), bias];
        let attributes = vec![
            attr::ints("strides", strides),
            attr::ints("pads", pads),
            attr::ints("dilations", dilations),
            attr::int("group", group),
        ];
        Ok(self
            .node("Conv", None, &inputs, attributes, vec![(x.dtype, shape)])
            .remove(0))
    }

    /// Constant zero padding with `pads = [begin..., end...]` over all axes.
    pub fn pad(&mut self, x: &Value, pads: &[i64]) -> Result<Value> {
        let rank = x.rank();
        if pads.len() != 2 * rank {
            return Err(self.error(format!("Pad: {} pads for rank {rank}", pads.len())));
        }
        let shape = (0..rank)
            .map(|i| match x.shape[i].known() {
                Some(n) => Dim::Known(n + pads[i] + pads[i + rank]),
                None if pads[i] + pads[i + rank] == 0 => x.shape[i].clone(),
                None => Dim::Unknown,
            })
            .collect();
        let pads_value = self.const_i64(pads)?;
        Ok(self.node1(
            "Pad",
            &[x, &pads_value],
            vec![attr::string("mode", "constant")],
            x.dtype,
            shape,
        ))
    }

    /// Nearest-neighbour resize by integer `scales` per axis (`nearest_mode=floor`, asymmetric).
    pub fn resize_nearest(&mut self, x: &Value, scales: &[f32]) -> Result<Value> {
        if scales.len() != x.rank() {
            return Err(self.error("Resize: one scale per axis"));
        }
        let shape = x
            .shape
            .iter()
            .zip(scales)
            .map(|(d, &s)| match d.known() {
                Some(n) => Dim::Known((n as f32 * s) as i64),
                None if s == 1.0 => d.clone(),
                None => Dim::Unknown,
            })
            .collect();
        let scales_value = self.const_f32(scales, &[scales.len() as i64])?;
        let inputs = [Some(x), None, Some(&scales_value)];
        let attributes = vec![
            attr::string("mode", "nearest"),
            attr::string("coordinate_transformation_mode", "asymmetric"),
            attr::string("nearest_mode", "floor"),
        ];
        Ok(self
            .node("Resize", None, &inputs, attributes, vec![(x.dtype, shape)])
            .remove(0))
    }

    /// `com.microsoft.RotaryEmbedding` on `[B, S, heads·d]`: rotates pairs of each head with
    /// `cos[position_ids]` / `sin[position_ids]` (`[max_positions, d/2]` caches); interleaved pairs
    /// are `(x[2j], x[2j+1])`.
    pub fn rotary_embedding(
        &mut self,
        x: &Value,
        position_ids: &Value,
        cos: &Value,
        sin: &Value,
        num_heads: i64,
        interleaved: bool,
    ) -> Result<Value> {
        self.same_dtype("RotaryEmbedding", x, cos)?;
        self.same_dtype("RotaryEmbedding", x, sin)?;
        if x.rank() != 3 || position_ids.dtype != DType::I64 || cos.rank() != 2 {
            return Err(self.error("RotaryEmbedding: input [B, S, hidden], int64 position ids and [positions, d/2] caches"));
        }
        let inputs = [Some(x), Some(position_ids), Some(cos), Some(sin)];
        let attributes = vec![
            attr::int("num_heads", num_heads),
            attr::int("interleaved", interleaved as i64),
        ];
        Ok(self
            .node(
                "RotaryEmbedding",
                Some("com.microsoft"),
                &inputs,
                attributes,
                vec![(x.dtype, x.shape.clone())],
            )
            .remove(0))
    }

    /// The opset-23 `Attention` operator on per-head `[B, heads, S, d]` query and `[B, heads, L, d]`
    /// key/value: `softmax(scale·q·kᵀ + bias)·v`, with `bias` (when given) added to the logits
    /// (broadcast to `[B, heads, S, L]`); the output is `[B, heads, S, d]`.
    pub fn attention(
        &mut self,
        query: &Value,
        key: &Value,
        value: &Value,
        bias: Option<&Value>,
        scale: f32,
    ) -> Result<Value> {
        self.same_dtype("Attention", query, key)?;
        self.same_dtype("Attention", query, value)?;
        if query.rank() != 4 || key.rank() != 4 || value.rank() != 4 {
            return Err(self.error("Attention: query, key and value must be [B, heads, S, d]"));
        }
        let mut inputs = vec![Some(query), Some(key), Some(value)];
        if let Some(b) = bias {
            self.same_dtype("Attention bias", query, b)?;
            inputs.push(Some(b));
        }
        let mut shape = query.shape.clone();
        shape[3] = value.shape[3].clone();
        Ok(self
            .node(
                "Attention",
                None,
                &inputs,
                vec![attr::float("scale", scale)],
                vec![(query.dtype, shape)],
            )
            .remove(0))
    }

    /// `com.microsoft.MultiHeadAttention` on `[B, S, heads·d]` query/key/value.
    pub fn multi_head_attention(
        &mut self,
        query: &Value,
        key: &Value,
        value: &Value,
        bias: AttentionBias<'_>,
        num_heads: i64,
    ) -> Result<Value> {
        self.same_dtype("MultiHeadAttention", query, key)?;
        self.same_dtype("MultiHeadAttention", query, value)?;
        if query.rank() != 3 || key.rank() != 3 || value.rank() != 3 {
            return Err(
                self.error("MultiHeadAttention: query, key and value must be [B, S, hidden]")
            );
        }
        let mut inputs = vec![Some(query), Some(key), Some(value)];
        if let AttentionBias::Additive(b) = bias {
            self.same_dtype("MultiHeadAttention bias", query, b)?;
            inputs.extend([None, None, Some(b)]);
        }
        let shape = query.shape.clone();
        let attributes = vec![attr::int("num_heads", num_heads)];
        Ok(self
            .node(
                "MultiHeadAttention",
                Some("com.microsoft"),
                &inputs,
                attributes,
                vec![(query.dtype, shape)],
            )
            .remove(0))
    }
}

impl Graph {
    /// `com.microsoft.MultiHeadAttention` with an explicit softmax `scale` on the logits
    /// (umT5 uses 1.0: no `1/√d`); otherwise as [`Graph::multi_head_attention`].
    pub fn multi_head_attention_scaled(
        &mut self,
        query: &Value,
        key: &Value,
        value: &Value,
        bias: AttentionBias<'_>,
        num_heads: i64,
        scale: f32,
    ) -> Result<Value> {
        let out = self.multi_head_attention(query, key, value, bias, num_heads)?;
        let node = self
            .nodes
            .last_mut()
            .expect("multi_head_attention appended a node");
        node.attribute.push(attr::float("scale", scale));
        Ok(out)
    }
}
