//! The DiT's feed-forward runs over slices of the tokens, one after another, to bound the memory
//! of its hidden activations (`Layers::feed_forward`). Row by row it must be the unsliced formula
//! `W₂ · GELU_tanh(W₁ x + b₁) + b₂`, for any row count: also when the last slices are empty
//! (5 rows are sliced 2, 2, 1, 0), which no DiT fixture reaches.

use safetensors::{Dtype, tensor::TensorView};
use skyreels_contract::manifest::GraphEntry;
use skyreels_contract::{Attention, TensorSpec};
use skyreels_exporter::checkpoint::Checkpoint;
use skyreels_exporter::layers::Layers;
use skyreels_exporter::weights::{WeightSink, WeightStore};
use skyreels_graph::{DType, Dim, Model};
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::session::{Backend, GraphSession, TensorPool};
use skyreels_runtime::tensor::Tensor;
use skyreels_tests::require_onnxruntime;

const FEATURES: usize = 8;
const HIDDEN: usize = 24;

/// Seeded standard-normal values (the runtime's noise source).
fn values(count: usize, seed: u64) -> Vec<f32> {
    NoiseSource::seeded(seed)
        .draw(&[count])
        .expect("noise")
        .data
}

fn gelu_tanh(x: f64) -> f64 {
    let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x.powi(3));
    0.5 * x * (1.0 + inner.tanh())
}

/// `x @ Wᵀ + b` for one row, `W` stored `[out, in]`.
fn linear(row: &[f64], weight: &[f32], bias: &[f32]) -> Vec<f64> {
    bias.iter()
        .enumerate()
        .map(|(o, b)| {
            let w = &weight[o * row.len()..(o + 1) * row.len()];
            f64::from(*b)
                + row
                    .iter()
                    .zip(w)
                    .map(|(x, w)| x * f64::from(*w))
                    .sum::<f64>()
        })
        .collect()
}

#[test]
fn sliced_feed_forward_is_the_formula_for_every_row_count() {
    require_onnxruntime();
    let directory = tempfile::tempdir().unwrap();
    let weights = [
        (
            "ffn.0.weight",
            vec![HIDDEN, FEATURES],
            values(HIDDEN * FEATURES, 1),
        ),
        ("ffn.0.bias", vec![HIDDEN], values(HIDDEN, 2)),
        (
            "ffn.2.weight",
            vec![FEATURES, HIDDEN],
            values(FEATURES * HIDDEN, 3),
        ),
        ("ffn.2.bias", vec![FEATURES], values(FEATURES, 4)),
    ];
    let bytes: Vec<Vec<u8>> = weights
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = weights.iter().zip(&bytes).map(|((name, shape, _), data)| {
        (
            *name,
            TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
        )
    });
    let checkpoint_path = directory.path().join("ffn.safetensors");
    fs_err::write(
        &checkpoint_path,
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();

    let checkpoint = Checkpoint::open(&checkpoint_path).unwrap();
    let sink = WeightSink::new(directory.path(), "ffn.weights", false);
    let mut store = WeightStore::with_names(&checkpoint, |name| Some(name.to_string()), sink);
    let mut layers = Layers::new("ffn", &mut store, DType::F32, Attention::MatMul);
    let shape = vec![Dim::named("rows"), Dim::Known(FEATURES as i64)];
    let x = layers.graph.input("x", DType::F32, shape.clone()).unwrap();
    let lead = layers.lead_of(&x).unwrap();
    let y = layers
        .feed_forward(&x, ("ffn.0", "ffn.2"), (FEATURES, HIDDEN), &lead)
        .unwrap();
    layers.graph.output("y", &y, DType::F32, shape).unwrap();
    let graph = layers.graph;
    store.finish("feed-forward").unwrap();
    Model::from_graph(graph, &Default::default())
        .save(&directory.path().join("ffn.onnx"))
        .unwrap();

    let spec = |name: &str| TensorSpec {
        name: name.into(),
        dtype: "float32".into(),
        shape: vec!["rows".into(), FEATURES.to_string()],
    };
    let entry = GraphEntry {
        name: "ffn".into(),
        file: "ffn.onnx".into(),
        inputs: vec![spec("x")],
        outputs: vec![spec("y")],
    };
    let mut session =
        GraphSession::load(directory.path(), &entry, &Backend::Cpu { threads: 1 }).unwrap();
    for rows in [1, 2, 3, 4, 5, 6, 9, 13, 16] {
        let input =
            Tensor::new(vec![rows, FEATURES], values(rows * FEATURES, rows as u64)).unwrap();
        let mut pool = TensorPool::new();
        pool.insert_f32("x", &input).unwrap();
        session.run(&mut pool).unwrap();
        let output = pool.to_host("y").unwrap();
        assert_eq!(output.shape, [rows, FEATURES]);
        let mut worst = 0f64;
        for (row, got) in input
            .data
            .chunks(FEATURES)
            .zip(output.data.chunks(FEATURES))
        {
            let row: Vec<f64> = row.iter().map(|v| f64::from(*v)).collect();
            let hidden: Vec<f64> = linear(&row, &weights[0].2, &weights[1].2)
                .into_iter()
                .map(gelu_tanh)
                .collect();
            let expected = linear(&hidden, &weights[2].2, &weights[3].2);
            for (g, e) in got.iter().zip(&expected) {
                worst = worst.max((f64::from(*g) - e).abs());
            }
        }
        assert!(worst < 1e-5, "{rows} rows: max-abs {worst:e}");
    }
}
