//! End-to-end sampling parity: the runtime's diffusion-forcing / T2V / I2V loops with
//! `--compat diffusers`, fed the reference's recorded noise, against diffusers 0.42.1's final
//! latents (fixtures from `tools/reference/make_pipeline_fixtures.py`).

use skyreels_contract::Attention;
use skyreels_runtime::dit::Dit;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::pipeline::denoiser::DitDenoiser;
use skyreels_runtime::pipeline::generate::{Conditioning, GenerationInputs, Vae, generate};
use skyreels_runtime::pipeline::plan::{Compat, Plan, Request, Start};
use skyreels_runtime::pipeline::progress::Unobserved;
use skyreels_runtime::pipeline::sampler::WindowSettings;
use skyreels_runtime::pipeline::schedule::FlowSchedule;
use skyreels_runtime::session::Backend;
use skyreels_runtime::vae::{VaeDecoder, VaeEncoder};
use skyreels_tests::{
    add_vae_to_engine, export_dit_engine, fixtures_dir, float, read_safetensors,
    require_onnxruntime,
};

const TOLERANCE: f32 = 1e-4;

fn number(case: &serde_json::Value, key: &str) -> Option<f64> {
    case.get(key).and_then(serde_json::Value::as_f64)
}

fn run_case(name: &str) -> f32 {
    require_onnxruntime();
    let dir = fixtures_dir().join("pipeline").join(name);
    let case: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(dir.join("case.json")).expect("case.json"))
            .expect("json");
    let model = case["model"].as_str().expect("model");
    let engine_dir = export_dit_engine(
        &fixtures_dir().join("dit").join(model).join("diffusers"),
        Attention::MatMul,
    );
    let (inputs, _) = read_safetensors(&dir.join("inputs.safetensors")).expect("inputs");
    let (expected, _) = read_safetensors(&dir.join("expected.safetensors")).expect("expected");
    // Cases that encode pixels (a first/last image, a video to extend) run the exported VAE too.
    let diffusion_forcing = case["pipeline"]
        .as_str()
        .expect("pipeline")
        .contains("DiffusionForcing");
    let encodes_pixels =
        diffusion_forcing && (inputs.contains_key("image") || inputs.contains_key("video"));
    if encodes_pixels {
        add_vae_to_engine(engine_dir.path());
    }
    let engine = Engine::open(engine_dir.path()).expect("engine");
    let start = match (float(&inputs, "video"), float(&inputs, "image")) {
        (Some(video), _) => Start::Video {
            frames: video.shape[2],
        },
        (None, Some(_)) if diffusion_forcing => Start::Image,
        _ => Start::Noise,
    };

    let guidance = number(&case, "guidance_scale").expect("guidance") as f32;
    let plan = Plan::new(Request {
        num_frames: number(&case, "num_frames").expect("frames") as usize,
        height: number(&case, "height").expect("height") as usize,
        width: number(&case, "width").expect("width") as usize,
        steps: number(&case, "num_inference_steps").expect("steps") as usize,
        guidance,
        shift: number(&case, "shift").expect("shift"),
        fps: number(&case, "fps").unwrap_or(24.0) as u32,
        ar_step: number(&case, "ar_step").unwrap_or(0.0) as usize,
        causal_block_size: number(&case, "causal_block_size").unwrap_or(1.0) as usize,
        causal_attention: false,
        base_num_frames: number(&case, "base_num_frames").map(|v| v as usize),
        overlap_history: number(&case, "overlap_history").map(|v| v as usize),
        addnoise_condition: number(&case, "addnoise_condition").unwrap_or(0.0) as f32,
        compat: Compat::Diffusers,
        start,
        last_image: inputs.contains_key("last_image"),
    })
    .expect("plan");
    let causal = plan.block_causal.then_some(plan.request.causal_block_size);
    let mut denoiser = DitDenoiser {
        dit: Dit::load(&engine, &Backend::Cpu { threads: 2 }, causal).expect("dit"),
        context: float(&inputs, "prompt_embeds")
            .expect("prompt_embeds")
            .clone(),
        negative_context: float(&inputs, "negative_prompt_embeds").cloned(),
        image_context: float(&inputs, "image_embeds").cloned(),
        fps: number(&case, "fps_embedding_index").unwrap_or(1.0) as i64,
        condition: float(&expected, "condition").cloned(),
    };
    let settings = WindowSettings {
        guidance,
        addnoise_condition: plan.request.addnoise_condition,
        teacache: None,
    };
    let schedule = FlowSchedule::new(
        Compat::Diffusers,
        plan.request.steps,
        plan.request.shift,
        diffusion_forcing,
    )
    .expect("schedule");
    let timesteps: Vec<i64> = case["timesteps"]
        .as_array()
        .expect("timesteps")
        .iter()
        .map(|v| v.as_i64().expect("int"))
        .collect();
    assert_eq!(
        schedule.schedule.timesteps(),
        timesteps.as_slice(),
        "{name}: scheduler timesteps"
    );
    let mut noise = NoiseSource::from_file(&dir.join("noise.safetensors")).expect("noise");
    let mut conditioning = Conditioning {
        video: float(&inputs, "video").cloned(),
        ..Conditioning::default()
    };
    let mut vae_halves = None;
    if encodes_pixels {
        let backend = Backend::Cpu { threads: 2 };
        let mut encoder = VaeEncoder::load(&engine, &backend).expect("vae encoder");
        if start == Start::Image {
            conditioning.first_image = Some(
                encoder
                    .encode(float(&inputs, "image").expect("image"))
                    .expect("encode image"),
            );
        }
        if let Some(last) = float(&inputs, "last_image") {
            conditioning.last_image = Some(encoder.encode(last).expect("encode last image"));
        }
        vae_halves = Some((
            encoder,
            VaeDecoder::load(&engine, &backend).expect("vae decoder"),
        ));
    }
    let vae = vae_halves.as_mut().map(|(encoder, decoder)| Vae {
        decoder,
        encoder: Some(encoder),
        tiling: None,
    });
    let generation = generate(GenerationInputs {
        plan: &plan,
        denoiser: &mut denoiser,
        schedule: &schedule,
        settings: &settings,
        noise: &mut noise,
        conditioning: &conditioning,
        vae,
        work_dir: None,
        resumed: Default::default(),
        observer: &mut Unobserved,
        // As a one-job process: the DiT's layer weights are released before the final decode,
        // which must not change any result.
        release_after_sampling: true,
    })
    .expect("generate");
    assert_eq!(
        noise.remaining(),
        0,
        "{name}: not every recorded draw was consumed"
    );
    let calls = case["transformer_calls"].as_u64().expect("calls") as usize;
    assert_eq!(
        generation.stats.forwards, calls,
        "{name}: transformer calls"
    );
    let mut want = float(&expected, "latents").expect("latents").clone();
    if inputs.contains_key("last_image") {
        // diffusers returns the last image's latent after the generated ones; the runtime drops it.
        let frames = want.shape[2];
        want = frames_of(&want, 0, frames - 1);
    }
    let error = generation.latents.max_abs_diff(&want);
    if let Some(video) = &conditioning.video {
        // The output video is the input followed by the decoded latents (diffusers' layout).
        let decoded = generation.video.as_ref().expect("decoded video");
        assert_eq!(
            decoded.shape[2],
            video.shape[2] + 4 * (want.shape[2] - 1) + 1,
            "{name}: output frames"
        );
        assert_eq!(
            frames_of(decoded, 0, video.shape[2]).data,
            video.data,
            "{name}: the input video heads the output"
        );
    }
    eprintln!("pipeline parity {name}: max-abs {error:.3e} ({calls} DiT calls)");
    error
}

/// Frames `[start, end)` of a `[1, C, T, H, W]` tensor.
fn frames_of(
    tensor: &skyreels_runtime::Tensor,
    start: usize,
    end: usize,
) -> skyreels_runtime::Tensor {
    let (channels, count, plane) = (
        tensor.shape[1],
        tensor.shape[2],
        tensor.shape[3] * tensor.shape[4],
    );
    let mut data = Vec::new();
    for c in 0..channels {
        data.extend_from_slice(
            &tensor.data[(c * count + start) * plane..(c * count + end) * plane],
        );
    }
    skyreels_runtime::Tensor {
        shape: vec![1, channels, end - start, tensor.shape[3], tensor.shape[4]],
        data,
    }
}

macro_rules! parity_case {
    ($($test:ident => $case:literal),+ $(,)?) => {$(
        #[test]
        fn $test() {
            let error = run_case($case);
            assert!(error <= TOLERANCE, "{}: final latents max-abs {error} > {TOLERANCE}", $case);
        }
    )+};
}

parity_case! {
    pipeline_df_sync_matches_diffusers => "df_sync",
    pipeline_df_async_matches_diffusers => "df_async",
    pipeline_df_async_block_causal_matches_diffusers => "df_async_causal",
    pipeline_df_long_sync_matches_diffusers => "df_long_sync",
    pipeline_df_long_async_matches_diffusers => "df_long_async",
    pipeline_df_long_three_windows_matches_diffusers => "df_long_3seg",
    pipeline_df_long_block_causal_matches_diffusers => "df_long_causal",
    pipeline_df_without_guidance_matches_diffusers => "df_no_cfg",
    pipeline_t2v_matches_diffusers => "t2v",
    pipeline_i2v_matches_diffusers => "i2v",
    pipeline_df_first_image_matches_diffusers => "df_image",
    pipeline_df_first_and_last_image_matches_diffusers => "df_first_last",
    pipeline_video_extension_matches_diffusers => "df_extension",
}

/// The I2V condition (mask + VAE latents of the image followed by black frames) from the runtime's
/// VAE encoder against the one diffusers built for the `i2v` case.
#[test]
fn pipeline_i2v_condition_matches_diffusers() {
    use skyreels_exporter::vae::{self, VaeExportOptions};
    use skyreels_runtime::pipeline::image_condition::image_condition;
    use skyreels_runtime::vae::VaeEncoder;
    require_onnxruntime();
    let dir = fixtures_dir().join("pipeline").join("i2v");
    let out = tempfile::tempdir().expect("tempdir");
    let export = vae::export(
        &fixtures_dir().join("vae").join("diffusers"),
        out.path(),
        &VaeExportOptions {
            compute: skyreels_graph::DType::F32,
            link_weights: true,
        },
    )
    .expect("export");
    skyreels_contract::Manifest {
        vae: Some(export.component),
        ..skyreels_tests::cpu_manifest(skyreels_contract::Attention::MatMul)
    }
    .save(out.path())
    .expect("manifest");
    let engine = Engine::open(out.path()).expect("engine");
    let mut encoder = VaeEncoder::load(&engine, &Backend::Cpu { threads: 2 }).expect("encoder");
    let (inputs, _) = read_safetensors(&dir.join("inputs.safetensors")).expect("inputs");
    let (expected, _) = read_safetensors(&dir.join("expected.safetensors")).expect("expected");
    let condition = image_condition(&mut encoder, float(&inputs, "image").expect("image"), 9)
        .expect("condition");
    let error = condition.max_abs_diff(float(&expected, "condition").expect("condition"));
    eprintln!("pipeline parity i2v condition: max-abs {error:.3e}");
    assert!(error <= TOLERANCE, "I2V condition max-abs {error}");
}
