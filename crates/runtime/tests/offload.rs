//! Weight streaming (`--offload`, `--max-gpu-memory`) through the real binary on the CPU, where
//! the same double-buffered schedule moves the weights between host buffers: the final latents
//! are bitwise those of the resident run (synchronous, asynchronous block-causal, with guidance
//! and TeaCache), a budget the resident weights exceed streams them, and a budget too small for
//! even two layers is refused before any model loads (docs/BAD_INPUT.md). Through the library:
//! branches passing each layer together get what each gets alone (block-causal attention).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;

const BINARY: &str = env!("CARGO_BIN_EXE_skyreels");

/// The tiny DF engine with 5 layers (so that both slots are refilled within a forward), exported
/// once.
fn tiny_engine() -> &'static Path {
    static ENGINE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, engine) = ENGINE.get_or_init(|| {
        let directory = tempfile::tempdir().unwrap();
        let engine = directory.path().join("engine");
        fs_err::create_dir(&engine).unwrap();
        common::export_tiny_engine_with(&engine, common::TinyModel::DiffusionForcing, 0, Some(5));
        (directory, engine)
    });
    engine
}

fn generate_command(out: &Path, extra: &[&str]) -> Command {
    generate_command_on(tiny_engine(), out, extra)
}

fn generate_command_on(engine: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env("RUST_BACKTRACE", "0")
        .arg("generate")
        .arg("--engines")
        .arg(engine)
        .arg("--out")
        .arg(out)
        .args([
            "--prompt",
            "a fox",
            "--height",
            "32",
            "--width",
            "32",
            "--threads",
            "1",
            "--json",
        ])
        .args(extra);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `generate` with `extra` and returns the bits of its final latents and its summary.
fn generate(directory: &Path, name: &str, extra: &[&str]) -> (Vec<u32>, serde_json::Value) {
    generate_on(tiny_engine(), directory, name, extra)
}

fn generate_on(
    engine: &Path,
    directory: &Path,
    name: &str,
    extra: &[&str],
) -> (Vec<u32>, serde_json::Value) {
    let latents = directory.join(format!("{name}.safetensors"));
    let out = directory.join(format!("{name}.mp4"));
    let output = generate_command_on(engine, &out, extra)
        .arg("--save-latents")
        .arg(&latents)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name} {extra:?}: {}",
        stderr(&output)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let bytes = fs_err::read(&latents).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let bits = bytemuck::pod_collect_to_vec::<u8, f32>(tensors.tensor("latents").unwrap().data())
        .iter()
        .map(|value| value.to_bits())
        .collect();
    (bits, summary)
}

/// The resident and the `--offload` run of `extra` give bitwise the same latents; returns the
/// offloaded run's summary.
fn offload_matches_resident(extra: &[&str]) -> serde_json::Value {
    let directory = tempfile::tempdir().unwrap();
    let (resident, resident_summary) = generate(directory.path(), "resident", extra);
    let offloaded_extra: Vec<&str> = extra.iter().copied().chain(["--offload"]).collect();
    let (offloaded, summary) = generate(directory.path(), "offloaded", &offloaded_extra);
    assert_eq!(
        resident_summary["plan"]["dit_memory"]["placement"],
        "resident"
    );
    assert_eq!(summary["plan"]["dit_memory"]["placement"], "streamed");
    assert_eq!(summary["plan"]["dit_memory"]["reason"], "requested");
    // The text encoder streams its block weights too, and its contexts are the whole graph's.
    assert_eq!(
        resident_summary["plan"]["text_memory"]["placement"],
        "resident"
    );
    assert_eq!(summary["plan"]["text_memory"]["placement"], "streamed");
    assert_eq!(resident.len(), offloaded.len());
    let differing = resident
        .iter()
        .zip(&offloaded)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing,
        0,
        "{extra:?}: {differing} of {} latents differ with --offload",
        resident.len()
    );
    for field in ["dit_forwards", "blocks_computed", "blocks_skipped"] {
        assert_eq!(summary[field], resident_summary[field], "{field}");
    }
    summary
}

#[test]
fn offload_samples_the_resident_latents_synchronous_with_guidance() {
    let summary = offload_matches_resident(&["--num-frames", "5", "--steps", "3"]);
    assert_eq!(
        summary["dit_forwards"], 6,
        "both guidance branches ran: {summary}"
    );
}

#[test]
fn offload_samples_the_resident_latents_asynchronous_block_causal() {
    offload_matches_resident(&[
        "--num-frames",
        "13",
        "--steps",
        "3",
        "--ar-step",
        "2",
        "--causal-block-size",
        "2",
        "--causal-attention",
    ]);
}

#[test]
fn offload_samples_the_resident_latents_with_teacache() {
    let summary = offload_matches_resident(&[
        "--num-frames",
        "9",
        "--steps",
        "6",
        "--teacache",
        "1",
        "--teacache-coefficients",
        "0,0,0,1,0",
    ]);
    let skipped = summary["blocks_skipped"].as_u64().unwrap();
    let computed = summary["blocks_computed"].as_u64().unwrap();
    assert!(
        skipped > 0 && computed > skipped,
        "TeaCache must both skip and compute: {summary}"
    );
}

#[test]
fn offload_samples_the_resident_latents_without_guidance() {
    offload_matches_resident(&["--num-frames", "5", "--steps", "2", "--guidance", "1"]);
}

#[test]
fn offload_of_two_layers_refills_no_slot_within_a_forward_and_matches_too() {
    let directory = tempfile::tempdir().unwrap();
    let engine = directory.path().join("engine");
    fs_err::create_dir(&engine).unwrap();
    common::export_tiny_engine(&engine, common::TinyModel::DiffusionForcing);
    let extra = ["--num-frames", "5", "--steps", "2"];
    let (resident, _) = generate_on(&engine, directory.path(), "resident", &extra);
    let (offloaded, summary) = generate_on(
        &engine,
        directory.path(),
        "offloaded",
        &[&extra[..], &["--offload"]].concat(),
    );
    assert_eq!(summary["plan"]["dit_memory"]["placement"], "streamed");
    assert_eq!(offloaded, resident);
}

/// The block tokens of `inputs` passed through the layers by `Dit::blocks_of` all together, and
/// by `Dit::blocks` one at a time.
fn block_tokens(
    placement: skyreels_runtime::dit::placement::WeightPlacement,
    inputs: &[skyreels_runtime::dit::DitInputs<'_>],
) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    use skyreels_contract::io;
    use skyreels_runtime::dit::Dit;
    let engine = skyreels_runtime::engine::Engine::open(tiny_engine()).unwrap();
    let backend = skyreels_runtime::session::Backend::Cpu { threads: 1 };
    let mut dit = Dit::load_with(&engine, &backend, Some(1), placement).unwrap();
    let bits = |pool: &skyreels_runtime::session::TensorPool| -> Vec<u32> {
        let tokens = pool.to_host(io::BLOCK_TOKENS).unwrap();
        tokens.data.iter().map(|v| v.to_bits()).collect()
    };
    let mut pools: Vec<_> = inputs.iter().map(|i| dit.embed(i).unwrap()).collect();
    dit.blocks_of(&mut pools.iter_mut().collect::<Vec<_>>())
        .unwrap();
    let together = pools.iter().map(bits).collect();
    let alone = inputs
        .iter()
        .map(|input| {
            let mut pool = dit.embed(input).unwrap();
            dit.blocks(&mut pool).unwrap();
            bits(&pool)
        })
        .collect();
    (together, alone)
}

#[test]
fn branches_passing_the_layers_together_get_what_each_gets_alone() {
    use skyreels_runtime::dit::placement::WeightPlacement;
    let mut noise = skyreels_runtime::noise::NoiseSource::seeded(3);
    let latents = noise.draw(&[1, 16, 3, 4, 6]).unwrap();
    let timesteps = skyreels_runtime::Tensor::new(vec![1, 3], vec![900.0, 700.0, 500.0]).unwrap();
    let contexts = [
        noise.draw(&[1, 512, 32]).unwrap(),
        noise.draw(&[1, 512, 32]).unwrap(),
    ];
    let fps = [1i64];
    let inputs: Vec<_> = contexts
        .iter()
        .map(|context| skyreels_runtime::dit::DitInputs {
            latents: &latents,
            timesteps: &timesteps,
            context,
            fps: Some(&fps),
            image_context: None,
        })
        .collect();
    let (resident_together, resident_alone) = block_tokens(WeightPlacement::Resident, &inputs);
    let (streamed_together, streamed_alone) = block_tokens(WeightPlacement::Streamed, &inputs);
    assert_ne!(resident_alone[0], resident_alone[1], "the branches differ");
    assert_eq!(resident_together, resident_alone);
    assert_eq!(streamed_together, streamed_alone);
    assert_eq!(streamed_alone, resident_alone);
}

/// The DiT's weight sizes as the `--dry-run` plan reports them.
fn weight_bytes() -> serde_json::Value {
    let directory = tempfile::tempdir().unwrap();
    let output = generate_command(&directory.path().join("out.mp4"), &["--dry-run"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    plan["dit_memory"]["bytes"].clone()
}

#[test]
fn the_plan_sizes_the_weights_from_the_manifest_and_the_weight_file() {
    let bytes = weight_bytes();
    let manifest = skyreels_contract::Manifest::load(tiny_engine()).unwrap();
    let dit = manifest.dit.unwrap();
    assert_eq!(dit.layers.len(), 5);
    let layers: u64 = dit
        .layers
        .iter()
        .flat_map(|layer| layer.values())
        .map(|location| location.length)
        .sum();
    let slot = dit.layers[0].values().fold(0, |offset, location| {
        (offset + location.length).next_multiple_of(256)
    });
    let file = fs_err::metadata(tiny_engine().join("dit.weights"))
        .unwrap()
        .len();
    assert_eq!(bytes["layers"], layers);
    assert_eq!(bytes["slot"], slot);
    assert_eq!(bytes["outside_layers"], file - layers);
    assert!(slot >= layers / 5, "alignment only adds");
}

#[test]
fn a_budget_below_the_resident_weights_streams_them() {
    let bytes = weight_bytes();
    let [layers, slot, outside] =
        ["layers", "slot", "outside_layers"].map(|key| bytes[key].as_u64().unwrap());
    assert!(slot > 0 && layers >= 2 * slot && outside > 0, "{bytes}");
    let resident = layers + outside;
    let streamed = 2 * slot + outside;
    assert!(streamed < resident, "{bytes}");
    let directory = tempfile::tempdir().unwrap();
    let base = ["--num-frames", "5", "--steps", "2"];
    let (reference, _) = generate(directory.path(), "resident", &base);
    let fits = resident.to_string();
    let (same, summary) = generate(
        directory.path(),
        "fits",
        &[&base[..], &["--max-gpu-memory", &fits]].concat(),
    );
    assert_eq!(summary["plan"]["dit_memory"]["placement"], "resident");
    assert_eq!(same, reference);
    let tight = (resident - 1).to_string();
    let (streamed_latents, summary) = generate(
        directory.path(),
        "tight",
        &[&base[..], &["--max-gpu-memory", &tight]].concat(),
    );
    assert_eq!(summary["plan"]["dit_memory"]["placement"], "streamed");
    assert_eq!(summary["plan"]["dit_memory"]["reason"], "budget");
    assert_eq!(
        summary["plan"]["dit_memory"]["max_gpu_memory"],
        resident - 1
    );
    assert_eq!(streamed_latents, reference);
}

#[test]
fn a_budget_too_small_for_two_layers_is_refused_before_loading() {
    let bytes = weight_bytes();
    let streamed = 2 * bytes["slot"].as_u64().unwrap() + bytes["outside_layers"].as_u64().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("out.mp4");
    let too_small = (streamed - 1).to_string();
    for extra in [
        vec!["--max-gpu-memory", too_small.as_str(), "--dry-run"],
        vec!["--max-gpu-memory", too_small.as_str()],
        vec!["--offload", "--max-gpu-memory", "1K"],
    ] {
        let output = generate_command(&out, &extra).output().unwrap();
        let message = stderr(&output);
        assert!(!output.status.success(), "{extra:?} accepted");
        assert!(
            message.contains("--max-gpu-memory")
                && message.contains("is too small for the DiT even with its weights streamed")
                && message.contains("two layers' weights (2 × ")
                && message.contains("the weights outside the layers (")
                && message.contains(&format!(
                    "fix: pass --max-gpu-memory {}MiB or more",
                    streamed.div_ceil(1 << 20)
                )),
            "{extra:?}: {message}"
        );
        assert!(
            !message.contains("loading") && !message.contains("panicked"),
            "{extra:?}: refused only after loading: {message}"
        );
        let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(error["error"]["field"], "max_gpu_memory", "{error}");
        assert!(!out.exists(), "{extra:?}: wrote {}", out.display());
    }
}

#[test]
fn memory_sizes_that_are_not_sizes_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("out.mp4");
    for (size, expected) in [
        ("24 gigs", "is not a memory size"),
        ("-8G", "is not a memory size"),
        ("0GiB", "is not a usable size"),
    ] {
        let flag = format!("--max-gpu-memory={size}");
        let output = generate_command(&out, &[flag.as_str(), "--dry-run"])
            .output()
            .unwrap();
        let message = stderr(&output);
        assert!(!output.status.success(), "{size:?} accepted");
        assert!(
            message.contains(&format!("--max-gpu-memory {size:?}"))
                && message.contains(expected)
                && message.contains("fix: ")
                && message.contains("24GiB"),
            "{size:?}: {message}"
        );
        assert!(!out.exists());
    }
}
