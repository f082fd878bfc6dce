//! The VAE's building blocks (upstream `CausalConv3d`, `RMS_norm`, `ResidualBlock`,
//! `AttentionBlock`, `Resample`) wired for one chunk, with each causal convolution's history as
//! an explicit graph input (`cache_in.<slot>`) and output (`cache_out.<slot>`).
//!
//! Cache semantics (upstream `feat_cache`, `CACHE_T = 2`): a temporal-kernel-3 convolution sees
//! `cat(history, x)` where the history is the last two frames of its input so far (zeros before
//! the first chunk, which is exactly the causal zero padding), and passes on the last two frames of
//! that concatenation. The first chunk graph has no cache inputs; its outputs initialise them.

use skyreels_contract::TensorSpec;
use skyreels_contract::io::axis;
use skyreels_contract::vae::io;
use skyreels_graph::{DType, Dim, Graph, Shape, Value};

use crate::error::Result;
use crate::weights::WeightStore;

/// One finished graph of a chunk: the graph and its recorded signature.
pub(super) struct GraphPart {
    /// The graph.
    pub(super) graph: Graph,
    /// Its inputs, in order.
    pub(super) inputs: Vec<TensorSpec>,
    /// Its outputs, in order.
    pub(super) outputs: Vec<TensorSpec>,
}

/// A graph under construction for one chunk, with the weights it draws from. Chunk graphs (not
/// the first) are cut into stages ([`ChunkGraph::end_stage`]).
pub(super) struct ChunkGraph<'w, 'c> {
    /// The graph (of the current stage).
    pub(super) graph: Graph,
    name: String,
    /// The stages finished so far.
    finished: Vec<GraphPart>,
    weights: &'w mut WeightStore<'c>,
    /// True for the first chunk: no cache inputs, no temporal resampling.
    pub(super) first: bool,
    /// Spatial size at the current point relative to the latent size (8 at the video, 1 at the latents).
    pub(super) scale: usize,
    /// Dtype of weights, activations and causal caches (float32, or float16 for GPUs); the graph's
    /// video and latents stay float32.
    compute: DType,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

fn spec(name: &str, dtype: DType, shape: &[Dim]) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        dtype: dtype.name().to_string(),
        shape: shape.iter().map(|d| d.to_string()).collect(),
    }
}

/// The symbolic spatial axis `base*scale` (`height`, `height*8`).
pub(super) fn scaled_axis(base: &str, scale: usize) -> Dim {
    if scale == 1 {
        Dim::named(base)
    } else {
        Dim::Named(format!("{base}*{scale}"))
    }
}

impl<'w, 'c> ChunkGraph<'w, 'c> {
    /// Starts graph `name`; `scale` is the spatial size of its input relative to the latents.
    pub(super) fn new(
        name: &str,
        weights: &'w mut WeightStore<'c>,
        first: bool,
        scale: usize,
        compute: DType,
    ) -> Self {
        ChunkGraph {
            graph: Graph::new(name),
            name: name.to_string(),
            finished: Vec::new(),
            weights,
            first,
            scale,
            compute,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// The chunk's graphs in run order: one for a first-chunk graph, one per stage otherwise.
    pub(super) fn into_parts(mut self) -> Vec<GraphPart> {
        self.finished.push(GraphPart {
            graph: self.graph,
            inputs: self.inputs,
            outputs: self.outputs,
        });
        self.finished
    }

    /// Ends the current stage with `x` as its [`io::features`] output and starts the next stage,
    /// which takes it as input; returns that input. A no-op in first-chunk graphs.
    ///
    /// Why stages: a graph's inputs stay alive for its whole run, so one chunk graph held every
    /// old cache beside every new one (2.5 GB each for the decoder at 544×960). Run stage by
    /// stage, each stage's old caches are freed as soon as it has run.
    pub(super) fn end_stage(&mut self, x: &Value) -> Result<Value> {
        if self.first {
            return Ok(x.clone());
        }
        let channels = x.shape[1].known().ok_or_else(|| {
            self.graph
                .error("the channel count at a stage boundary must be fixed")
        })? as usize;
        let shape = self.shape5(channels, self.frames(x)?);
        let stage = self.finished.len();
        let features = io::features(stage);
        self.outputs.push(spec(&features, self.compute, &shape));
        self.graph
            .output(&features, x, self.compute, shape.clone())?;
        let next = Graph::new(&format!("{}.{}", self.name, stage + 1));
        self.finished.push(GraphPart {
            graph: std::mem::replace(&mut self.graph, next),
            inputs: std::mem::take(&mut self.inputs),
            outputs: std::mem::take(&mut self.outputs),
        });
        self.inputs.push(spec(&features, self.compute, &shape));
        Ok(self.graph.input(&features, self.compute, shape)?)
    }

    /// `[batch, channels, frames, height*scale, width*scale]` at the current scale.
    pub(super) fn shape5(&self, channels: usize, frames: usize) -> Shape {
        vec![
            Dim::named(axis::BATCH),
            Dim::Known(channels as i64),
            Dim::Known(frames as i64),
            scaled_axis(axis::HEIGHT, self.scale),
            scaled_axis(axis::WIDTH, self.scale),
        ]
    }

    /// Declares and records a float32 graph input, returned in the compute dtype.
    pub(super) fn input(&mut self, name: &str, shape: Shape) -> Result<Value> {
        self.inputs.push(spec(name, DType::F32, &shape));
        let value = self.graph.input(name, DType::F32, shape)?;
        self.in_compute_dtype(&value)
    }

    /// Declares and records a float32 graph output (cast from the compute dtype).
    pub(super) fn output(&mut self, name: &str, value: &Value, shape: Shape) -> Result<()> {
        let value = if self.compute == DType::F32 {
            value.clone()
        } else {
            self.graph.cast(value, DType::F32)?
        };
        self.outputs.push(spec(name, DType::F32, &shape));
        Ok(self.graph.output(name, &value, DType::F32, shape)?)
    }

    fn in_compute_dtype(&mut self, value: &Value) -> Result<Value> {
        Ok(if self.compute == DType::F32 {
            value.clone()
        } else {
            self.graph.cast(value, self.compute)?
        })
    }

    fn weight(&mut self, name: &str, stored: &[usize], view: &[i64]) -> Result<Value> {
        self.weights
            .initializer(&mut self.graph, name, stored, view, self.compute)
    }

    fn bias(&mut self, name: &str, channels: usize) -> Result<Value> {
        self.weights
            .tensor(&mut self.graph, name, &[channels], self.compute)
    }

    /// The history of cache `slot` (`frames` frames of `channels`): a `cache_in` input in chunk
    /// graphs, `None` in the first graph.
    fn history(&mut self, slot: &str, channels: usize, frames: usize) -> Result<Option<Value>> {
        if self.first {
            return Ok(None);
        }
        // Caches travel in the compute dtype: they never leave the device between chunks.
        let shape = self.shape5(channels, frames);
        let name = format!("{}{slot}", io::CACHE_IN_PREFIX);
        self.inputs.push(spec(&name, self.compute, &shape));
        Ok(Some(self.graph.input(&name, self.compute, shape)?))
    }

    fn pass_on(&mut self, slot: &str, value: &Value, channels: usize, frames: usize) -> Result<()> {
        let shape = self.shape5(channels, frames);
        let name = format!("{}{slot}", io::CACHE_OUT_PREFIX);
        self.outputs.push(spec(&name, self.compute, &shape));
        Ok(self.graph.output(&name, value, self.compute, shape)?)
    }

    fn frames(&self, x: &Value) -> Result<usize> {
        x.shape[2].known().map(|t| t as usize).ok_or_else(|| {
            self.graph
                .error("the frame count of a chunk must be fixed")
                .into()
        })
    }

    /// The last two frames of `cat(history, x)`; a zero frame stands in for missing history.
    fn last_two(&mut self, history: Option<&Value>, x: &Value) -> Result<Value> {
        let frames = self.frames(x)?;
        let g = &mut self.graph;
        Ok(match (history, frames) {
            (_, t) if t >= 2 => g.slice(x, 2, t as i64 - 2, t as i64)?,
            (Some(history), _) => {
                let last = g.slice(history, 2, 1, 2)?;
                g.concat(&[&last, x], 2)?
            }
            // One zero frame before `x` (the causal zero padding): an expanded zero and a Concat
            // rather than `Pad`, which ONNX Runtime's CUDA provider runs slowly on 5-D tensors
            // (0.11 s of a 544×960 first decode chunk).
            (None, _) => {
                let zero = g.scalar(0.0, x.dtype)?;
                let lead = g.shape_of(x, 0, 2)?;
                let one = g.const_i64(&[1])?;
                let spatial = g.shape_of(x, 3, 5)?;
                let target = g.concat(&[&lead, &one, &spatial], 0)?;
                let mut zeros_shape = x.shape.clone();
                zeros_shape[2] = Dim::Known(1);
                let zeros = g.expand(&zero, &target, zeros_shape)?;
                g.concat(&[&zeros, x], 2)?
            }
        })
    }

    /// Upstream `CausalConv3d` with a 3×3×3 kernel (`padding=1`): zero or cached history in time,
    /// zero padding in space. The cache slot is the weight prefix.
    pub(super) fn causal_conv3(
        &mut self,
        x: &Value,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Value> {
        let dims = [out_channels as i64, in_channels as i64, 3, 3, 3];
        let weight = self.weight(
            &format!("{prefix}.weight"),
            &[out_channels, in_channels, 3, 3, 3],
            &dims,
        )?;
        let bias = self.bias(&format!("{prefix}.bias"), out_channels)?;
        let history = self.history(prefix, in_channels, 2)?;
        let cache = self.last_two(history.as_ref(), x)?;
        self.pass_on(prefix, &cache, in_channels, 2)?;
        let g = &mut self.graph;
        let y = g.scoped(prefix, |g| match &history {
            Some(history) => {
                let joined = g.concat(&[history, x], 2)?;
                g.conv(
                    &joined,
                    &weight,
                    Some(&bias),
                    &[1, 1, 1],
                    &[0, 1, 1, 0, 1, 1],
                    &[1, 1, 1],
                    1,
                )
            }
            None => g.conv(
                x,
                &weight,
                Some(&bias),
                &[1, 1, 1],
                &[2, 1, 1, 0, 1, 1],
                &[1, 1, 1],
                1,
            ),
        })?;
        Ok(y)
    }

    /// A 1×1×1 convolution (`CausalConv3d(..., 1)`; no history needed).
    pub(super) fn conv1(
        &mut self,
        x: &Value,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Value> {
        let dims = [out_channels as i64, in_channels as i64, 1, 1, 1];
        let weight = self.weight(
            &format!("{prefix}.weight"),
            &[out_channels, in_channels, 1, 1, 1],
            &dims,
        )?;
        let bias = self.bias(&format!("{prefix}.bias"), out_channels)?;
        Ok(self.graph.scoped(prefix, |g| {
            g.conv(x, &weight, Some(&bias), &[1, 1, 1], &[0; 6], &[1, 1, 1], 1)
        })?)
    }

    /// Upstream `RMS_norm`: `x / max(‖x‖₂ over channels, 1e-12) · √C · γ` with `γ` stored as
    /// `stored_shape` (`[C, 1, 1, 1]`, or `[C, 1, 1]` in attention blocks).
    pub(super) fn rms_norm(
        &mut self,
        x: &Value,
        gamma_name: &str,
        stored_shape: &[usize],
    ) -> Result<Value> {
        let channels = stored_shape[0];
        let gamma = self.weight(gamma_name, stored_shape, &[channels as i64, 1, 1, 1])?;
        let compute = self.compute;
        let g = &mut self.graph;
        let normalized = if compute == DType::F32 {
            let norm = g.reduce_l2(x, &[1], true)?;
            let eps = g.scalar(1e-12, DType::F32)?;
            let norm = g.max(&norm, &eps)?;
            g.div(x, &norm)?
        } else {
            // The sum of squares overflows float16: take the norm in float32, scale in float16.
            let wide = g.cast(x, DType::F32)?;
            let norm = g.reduce_l2(&wide, &[1], true)?;
            let eps = g.scalar(1e-12, DType::F32)?;
            let norm = g.max(&norm, &eps)?;
            let one = g.scalar(1.0, DType::F32)?;
            let inverse = g.div(&one, &norm)?;
            let inverse = g.cast(&inverse, compute)?;
            g.mul(x, &inverse)?
        };
        let root = g.scalar((channels as f64).sqrt(), compute)?;
        let scale = g.mul(&gamma, &root)?; // [C, 1, 1, 1], folded by ONNX Runtime
        Ok(g.mul(&normalized, &scale)?)
    }

    /// `RMS_norm → SiLU`.
    pub(super) fn norm_silu(
        &mut self,
        x: &Value,
        gamma_name: &str,
        channels: usize,
    ) -> Result<Value> {
        let h = self.rms_norm(x, gamma_name, &[channels, 1, 1, 1])?;
        Ok(self.graph.silu(&h)?)
    }

    /// Upstream `ResidualBlock` at `prefix` (`residual.{0,2,3,6}`, `shortcut`).
    pub(super) fn residual_block(
        &mut self,
        x: &Value,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Value> {
        let shortcut = if in_channels != out_channels {
            self.conv1(x, &format!("{prefix}.shortcut"), in_channels, out_channels)?
        } else {
            x.clone()
        };
        let h = self.norm_silu(x, &format!("{prefix}.residual.0.gamma"), in_channels)?;
        let h = self.causal_conv3(
            &h,
            &format!("{prefix}.residual.2"),
            in_channels,
            out_channels,
        )?;
        let h = self.norm_silu(&h, &format!("{prefix}.residual.3.gamma"), out_channels)?;
        let h = self.causal_conv3(
            &h,
            &format!("{prefix}.residual.6"),
            out_channels,
            out_channels,
        )?;
        Ok(self.graph.add(&h, &shortcut)?)
    }

    /// Upstream `AttentionBlock`: per frame, single-head attention over the `H·W` positions.
    pub(super) fn attention_block(
        &mut self,
        x: &Value,
        prefix: &str,
        channels: usize,
    ) -> Result<Value> {
        let c = channels as i64;
        let h = self.rms_norm(x, &format!("{prefix}.norm.gamma"), &[channels, 1, 1])?;
        let qkv_weight = self.weight(
            &format!("{prefix}.to_qkv.weight"),
            &[3 * channels, channels, 1, 1],
            &[3 * c, c, 1, 1, 1],
        )?;
        let qkv_bias = self.bias(&format!("{prefix}.to_qkv.bias"), 3 * channels)?;
        let proj_weight = self.weight(
            &format!("{prefix}.proj.weight"),
            &[channels, channels, 1, 1],
            &[c, c, 1, 1, 1],
        )?;
        let proj_bias = self.bias(&format!("{prefix}.proj.bias"), channels)?;
        let compute = self.compute;
        let g = &mut self.graph;
        g.scoped(prefix, |g| {
            let qkv = g.conv(
                &h,
                &qkv_weight,
                Some(&qkv_bias),
                &[1, 1, 1],
                &[0; 6],
                &[1, 1, 1],
                1,
            )?;
            let parts = g.split(&qkv, 1, &[c, c, c])?;
            let q = g.transpose(&parts[0], &[0, 2, 3, 4, 1])?; // (b, t, h, w, c)
            let positions = g.shape_of(&q, 0, 4)?;
            let q = g.reshape(&q, &[0, 0, -1, c])?; // (b, t, hw, c)
            let k = g.transpose(&parts[1], &[0, 2, 1, 3, 4])?;
            let k = g.reshape(&k, &[0, 0, c, -1])?; // (b, t, c, hw)
            let v = g.transpose(&parts[2], &[0, 2, 3, 4, 1])?;
            let v = g.reshape(&v, &[0, 0, -1, c])?;
            let scale = g.scalar(1.0 / (channels as f64).sqrt(), compute)?;
            let scores = g.matmul(&q, &k)?;
            let scores = g.mul(&scores, &scale)?;
            let probs = g.softmax(&scores, -1)?;
            let out = g.matmul(&probs, &v)?; // (b, t, hw, c)
            let channels_value = g.const_i64(&[c])?;
            let target = g.concat(&[&positions, &channels_value], 0)?;
            let mut shape = parts[0].shape.clone();
            shape.remove(1);
            shape.push(Dim::Known(c));
            let out = g.reshape_to(&out, &target, shape)?; // (b, t, h, w, c)
            let out = g.transpose(&out, &[0, 4, 1, 2, 3])?;
            let out = g.conv(
                &out,
                &proj_weight,
                Some(&proj_bias),
                &[1, 1, 1],
                &[0; 6],
                &[1, 1, 1],
                1,
            )?;
            g.add(&out, x)
        })
        .map_err(Into::into)
    }

    /// Upstream `Resample` in `downsample2d` / `downsample3d` mode: zero-pad right and bottom,
    /// 3×3 stride-2 convolution per frame, then (3-D, after the first chunk) a stride-2 temporal
    /// convolution over the previous chunk's last frame and this chunk's frames.
    pub(super) fn downsample(
        &mut self,
        x: &Value,
        prefix: &str,
        channels: usize,
        temporal: bool,
    ) -> Result<Value> {
        let c = channels as i64;
        let weight = self.weight(
            &format!("{prefix}.resample.1.weight"),
            &[channels, channels, 3, 3],
            &[c, c, 1, 3, 3],
        )?;
        let bias = self.bias(&format!("{prefix}.resample.1.bias"), channels)?;
        let x = self.graph.scoped(prefix, |g| {
            g.conv(
                x,
                &weight,
                Some(&bias),
                &[1, 2, 2],
                &[0, 0, 0, 0, 1, 1],
                &[1, 1, 1],
                1,
            )
        })?;
        self.scale /= 2;
        if !temporal {
            return Ok(x);
        }
        let slot = format!("{prefix}.time_conv");
        let history = self.history(&slot, channels, 1)?;
        let frames = self.frames(&x)? as i64;
        let last = self.graph.slice(&x, 2, frames - 1, frames)?;
        self.pass_on(&slot, &last, channels, 1)?;
        let Some(history) = history else {
            return Ok(x);
        };
        let weight = self.weight(
            &format!("{slot}.weight"),
            &[channels, channels, 3, 1, 1],
            &[c, c, 3, 1, 1],
        )?;
        let bias = self.bias(&format!("{slot}.bias"), channels)?;
        let g = &mut self.graph;
        g.scoped(&slot, |g| {
            let joined = g.concat(&[&history, &x], 2)?;
            g.conv(
                &joined,
                &weight,
                Some(&bias),
                &[2, 1, 1],
                &[0; 6],
                &[1, 1, 1],
                1,
            )
        })
        .map_err(Into::into)
    }

    /// Upstream `Resample` in `upsample2d` / `upsample3d` mode. 3-D: after the first chunk, a
    /// temporal convolution to `2C` channels whose halves become frames `2i` and `2i+1` (the first
    /// chunk passes its frame through and leaves zero history: upstream's "Rep" marker). Then
    /// nearest ×2 in space and a 3×3 convolution to `C/2` channels.
    pub(super) fn upsample(
        &mut self,
        x: &Value,
        prefix: &str,
        channels: usize,
        temporal: bool,
    ) -> Result<Value> {
        let c = channels as i64;
        let mut x = x.clone();
        if temporal {
            let slot = format!("{prefix}.time_conv");
            let history = self.history(&slot, channels, 2)?;
            match history {
                None => {
                    let shape = x.shape.clone();
                    let compute = self.compute;
                    let g = &mut self.graph;
                    let zero = g.scalar(0.0, compute)?;
                    let lead = g.shape_of(&x, 0, 2)?;
                    let two = g.const_i64(&[2])?;
                    let spatial = g.shape_of(&x, 3, 5)?;
                    let target = g.concat(&[&lead, &two, &spatial], 0)?;
                    let mut zeros_shape = shape;
                    zeros_shape[2] = Dim::Known(2);
                    let zeros = g.expand(&zero, &target, zeros_shape)?;
                    self.pass_on(&slot, &zeros, channels, 2)?;
                }
                Some(history) => {
                    let frames = self.frames(&x)?;
                    let weight = self.weight(
                        &format!("{slot}.weight"),
                        &[2 * channels, channels, 3, 1, 1],
                        &[2 * c, c, 3, 1, 1],
                    )?;
                    let bias = self.bias(&format!("{slot}.bias"), 2 * channels)?;
                    let cache = self.last_two(Some(&history), &x)?;
                    self.pass_on(&slot, &cache, channels, 2)?;
                    let g = &mut self.graph;
                    x = g.scoped(&slot, |g| {
                        let joined = g.concat(&[&history, &x], 2)?;
                        let y = g.conv(
                            &joined,
                            &weight,
                            Some(&bias),
                            &[1, 1, 1],
                            &[0; 6],
                            &[1, 1, 1],
                            1,
                        )?;
                        let halves = g.split(&y, 1, &[c, c])?;
                        let mut interleaved = Vec::with_capacity(2 * frames);
                        for i in 0..frames as i64 {
                            for half in &halves {
                                interleaved.push(g.slice(half, 2, i, i + 1)?);
                            }
                        }
                        let refs: Vec<&Value> = interleaved.iter().collect();
                        g.concat(&refs, 2)
                    })?;
                }
            }
        }
        let out = channels / 2;
        let weight = self.weight(
            &format!("{prefix}.resample.1.weight"),
            &[out, channels, 3, 3],
            &[out as i64, c, 1, 3, 3],
        )?;
        let bias = self.bias(&format!("{prefix}.resample.1.bias"), out)?;
        self.scale *= 2;
        let g = &mut self.graph;
        g.scoped(prefix, |g| {
            let up = g.resize_nearest(&x, &[1.0, 1.0, 1.0, 2.0, 2.0])?;
            g.conv(
                &up,
                &weight,
                Some(&bias),
                &[1, 1, 1],
                &[0, 1, 1, 0, 1, 1],
                &[1, 1, 1],
                1,
            )
        })
        .map_err(Into::into)
    }

    /// `[1, C, 1, 1, 1]` constant in the compute dtype from per-channel values.
    pub(super) fn channel_constant(&mut self, values: &[f32]) -> Result<Value> {
        let constant = self
            .graph
            .const_f32(values, &[1, values.len() as i64, 1, 1, 1])?;
        self.in_compute_dtype(&constant)
    }
}
