//! TeaCache end to end on the tiny DF DiT: skipped passes reuse the residual of the last computed
//! one, through the engine's `teacache_residual` / `teacache_reuse` graphs (the GPU path) or on
//! the host (engines without them) with identical results; a zero threshold skips nothing.

use skyreels_contract::Attention;
use skyreels_runtime::Tensor;
use skyreels_runtime::dit::Dit;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::pipeline::denoiser::DitDenoiser;
use skyreels_runtime::pipeline::generate::{
    Conditioning, GenerationInputs, GenerationStats, generate,
};
use skyreels_runtime::pipeline::plan::{Compat, Plan, Request};
use skyreels_runtime::pipeline::progress::Unobserved;
use skyreels_runtime::pipeline::sampler::WindowSettings;
use skyreels_runtime::pipeline::schedule::FlowSchedule;
use skyreels_runtime::session::Backend;
use skyreels_runtime::teacache::TeaCacheConfig;
use skyreels_tests::{
    export_dit_engine, fixtures_dir, float, read_safetensors, require_onnxruntime,
};

/// 13 frames (4 latents), 10 steps, guidance 6: 20 DiT passes per run.
fn sample(engine: &Engine, teacache: Option<TeaCacheConfig>) -> (Tensor, GenerationStats) {
    let (inputs, _) = read_safetensors(
        &fixtures_dir()
            .join("pipeline")
            .join("df_sync")
            .join("inputs.safetensors"),
    )
    .expect("inputs");
    let plan = Plan::new(Request::upstream(13, 32, 48, 10)).expect("plan");
    let mut denoiser = DitDenoiser {
        dit: Dit::load(engine, &Backend::Cpu { threads: 2 }, None).expect("dit"),
        context: float(&inputs, "prompt_embeds").expect("prompt").clone(),
        negative_context: float(&inputs, "negative_prompt_embeds").cloned(),
        image_context: None,
        fps: 1,
        condition: None,
    };
    let settings = WindowSettings {
        guidance: 6.0,
        addnoise_condition: 0.0,
        teacache,
    };
    let schedule = FlowSchedule::new(Compat::Upstream, 10, 8.0, true).expect("schedule");
    let generation = generate(GenerationInputs {
        plan: &plan,
        denoiser: &mut denoiser,
        schedule: &schedule,
        settings: &settings,
        noise: &mut NoiseSource::seeded(7),
        conditioning: &Conditioning::default(),
        vae: None,
        work_dir: None,
        resumed: Default::default(),
        observer: &mut Unobserved,
        release_after_sampling: false,
    })
    .expect("generate");
    (generation.latents, generation.stats)
}

fn teacache(threshold: f64) -> TeaCacheConfig {
    // The identity fit: the rescaled distance is the relative L1 change of the probe itself.
    TeaCacheConfig {
        threshold,
        coefficients: [0.0, 0.0, 0.0, 1.0, 0.0],
        use_retention: true,
    }
}

#[test]
fn teacache_reuses_residuals_through_the_engine_graphs_or_the_host_alike() {
    require_onnxruntime();
    let dir = export_dit_engine(
        &fixtures_dir().join("dit").join("df").join("diffusers"),
        Attention::MatMul,
    );
    let with_graphs = Engine::open(dir.path()).expect("engine");
    assert_eq!(
        with_graphs
            .manifest
            .dit
            .as_ref()
            .expect("dit")
            .teacache
            .len(),
        2,
        "the export writes both TeaCache graphs"
    );
    let mut host_only = Engine::open(dir.path()).expect("engine");
    host_only
        .manifest
        .dit
        .as_mut()
        .expect("dit")
        .teacache
        .clear();

    let (plain, plain_stats) = sample(&with_graphs, None);
    assert_eq!((plain_stats.forwards, plain_stats.blocks_skipped), (20, 0));

    let (never, never_stats) = sample(&with_graphs, Some(teacache(0.0)));
    assert_eq!(
        (never_stats.blocks_computed, never_stats.blocks_skipped),
        (20, 0),
        "a zero threshold computes every pass"
    );
    assert_eq!(
        never.data, plain.data,
        "computing every pass through TeaCache changes nothing"
    );

    let (graphs, graph_stats) = sample(&with_graphs, Some(teacache(0.5)));
    let (host, host_stats) = sample(&host_only, Some(teacache(0.5)));
    assert!(
        graph_stats.blocks_skipped > 0 && graph_stats.blocks_computed >= 10,
        "{graph_stats:?}"
    );
    assert_eq!(graph_stats.blocks_skipped + graph_stats.blocks_computed, 20);
    assert_eq!(
        (host_stats.blocks_computed, host_stats.blocks_skipped),
        (graph_stats.blocks_computed, graph_stats.blocks_skipped)
    );
    assert_eq!(
        graphs.data, host.data,
        "the residual graphs compute what the host does"
    );
    let moved = graphs.max_abs_diff(&plain);
    assert!(
        moved > 0.0 && graphs.data.iter().all(|v| v.is_finite()),
        "skipping changed the result by {moved}"
    );
    eprintln!(
        "teacache tiny DF: {} of 20 passes skipped at 0.5, max-abs change {moved:.3e}",
        graph_stats.blocks_skipped
    );
}
