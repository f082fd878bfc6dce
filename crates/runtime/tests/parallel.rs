//! Multi-rank machinery on the CPU transport: Ulysses attention over 2 and 4 ranks against the
//! single-rank result (padding, block-causal prefixes), the guidance exchange of
//! `--cfg-parallel`, rank start-up and supervision through the real binary, and the refusals
//! that come before any model loads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::parallel::attention::{UlyssesAttention, UlyssesGeometry, attend};
use skyreels_runtime::parallel::axis::Concat;
use skyreels_runtime::parallel::check::{self, CheckArgs, CheckBackend};
use skyreels_runtime::parallel::guidance::GuidancePair;
use skyreels_runtime::parallel::layout::Branches;
use skyreels_runtime::parallel::shard::{
    TokenSharding, attention_blocks, drop_padding, take_shard,
};
use skyreels_runtime::parallel::{Communicator, ParallelArgs, ParallelConfig, TcpCommunicator};
use skyreels_runtime::pipeline::denoiser::Denoiser;
use skyreels_runtime::pipeline::sampler::{Rows, WindowSettings, sample_window};
use skyreels_runtime::scheduler::{FlowEuler, Schedule, SigmaSchedule};
use skyreels_runtime::teacache::{Branch, TeaCache};
use skyreels_runtime::tensor::Tensor;

mod common;

const BINARY: &str = env!("CARGO_BIN_EXE_skyreels");

fn values(seed: u64, count: usize) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Shard q/k/v over `ranks` threads, all-to-all, attend, all-to-all back, gather, drop the
/// padding: the result must be the single-rank attention.
fn distributed_attention_matches_one_rank(
    ranks: usize,
    frames: usize,
    causal_block_size: Option<usize>,
) {
    let (tokens_per_frame, heads, head_dim) = (3, 4, 8);
    let tokens = frames * tokens_per_frame;
    let row = heads * head_dim;
    let query = values(1, tokens * row);
    let key = values(2, tokens * row);
    let value = values(3, tokens * row);
    let causal = causal_block_size.map(|size| (size, tokens_per_frame));
    let reference = attend(
        &query,
        &key,
        &value,
        [1, tokens, heads, head_dim],
        &attention_blocks(tokens, tokens, causal),
    );
    let sharding = TokenSharding::new(tokens, ranks).unwrap();
    let outputs = TcpCommunicator::run_threads(ranks, |mut group| {
        let rank = group.rank();
        let geometry = UlyssesGeometry {
            batch: 1,
            sharding,
            heads,
            head_dim,
            causal,
        };
        let mut attention = UlyssesAttention::new(&mut group, geometry)?;
        let shard = |full: &[f32]| take_shard(full, 1, row, &sharding, rank, 0.0);
        let out = attention.run(&mut group, &shard(&query), &shard(&key), &shard(&value))?;
        let concat = Concat::new(vec![1, sharding.shard_len(), row], 1, ranks, 4)?;
        let mut send = group.allocate(concat.part_bytes())?;
        let mut gathered = group.allocate(concat.output_bytes())?;
        group.write(&mut send, bytemuck::cast_slice(&out))?;
        group.all_gather(&send, &mut gathered, &concat)?;
        let mut host = vec![0u8; concat.output_bytes()];
        group.read(&gathered, &mut host)?;
        Ok(drop_padding(
            &bytemuck::pod_collect_to_vec::<u8, f32>(&host),
            1,
            row,
            &sharding,
        ))
    })
    .unwrap();
    for (rank, output) in outputs.iter().enumerate() {
        let difference = max_difference(output, &reference);
        assert!(
            difference <= 1e-6,
            "{ranks} ranks, {tokens} tokens, causal {causal_block_size:?}: rank {rank} differs by {difference}"
        );
    }
}

#[test]
fn ulysses_attention_over_two_ranks_matches_one_rank() {
    distributed_attention_matches_one_rank(2, 8, None);
    distributed_attention_matches_one_rank(2, 7, None);
    distributed_attention_matches_one_rank(2, 7, Some(2));
}

#[test]
fn ulysses_attention_over_four_ranks_matches_one_rank_with_padding_and_causal_blocks() {
    // 7 frames of 3 tokens = 21 tokens: shards of 6, 3 padding rows on the last rank.
    assert_eq!(TokenSharding::new(21, 4).unwrap().padding(), 3);
    distributed_attention_matches_one_rank(4, 8, None);
    distributed_attention_matches_one_rank(4, 7, None);
    distributed_attention_matches_one_rank(4, 7, Some(2));
    distributed_attention_matches_one_rank(4, 8, Some(3));
}

fn check_args(degree: usize, cfg_parallel: bool) -> CheckArgs {
    CheckArgs {
        parallel: ParallelArgs {
            ulysses_degree: degree,
            cfg_parallel,
            devices: None,
        },
        backend: CheckBackend::Cpu,
        bench_tokens: 0,
        bench_heads: 12,
        bench_head_dim: 128,
        bench_iterations: 1,
        fail_rank: None,
    }
}

#[test]
fn cfg_parallel_groups_exchange_and_combine_the_guidance_branches() {
    for (degree, cfg_parallel) in [(2, true), (1, true), (3, false)] {
        let args = check_args(degree, cfg_parallel);
        let config = ParallelConfig::new(&args.parallel).unwrap();
        let reports = TcpCommunicator::run_threads(config.world_size(), |mut world| {
            check::run_rank(&mut world, &config, &args, "tcp", None)
        })
        .unwrap();
        assert_eq!(reports.len(), config.world_size());
        for report in &reports {
            assert_eq!(report.collectives_max_error, 0.0);
            assert_eq!(report.cases.len(), 4);
            for case in &report.cases {
                assert!(
                    case.attention_max_error <= 1e-6 && case.guidance_max_error <= 1e-6,
                    "{case:?}"
                );
            }
        }
    }
}

fn run(command: &mut Command) -> (Output, String) {
    let output = command.env("RUST_BACKTRACE", "0").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

#[test]
fn four_cpu_ranks_started_by_the_binary_match_one_rank() {
    let (output, stderr) = run(Command::new(BINARY).args([
        "parallel-check",
        "--ulysses-degree",
        "2",
        "--cfg-parallel",
    ]));
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["world_size"], 4);
    assert_eq!(report["transport"], "tcp");
    assert_eq!(report["collectives_max_error"], 0.0);
    let cases = report["cases"].as_array().unwrap();
    assert!(
        cases
            .iter()
            .any(|c| c["padding"].as_u64() == Some(1) && !c["causal_block_size"].is_null())
    );
    for case in cases {
        assert!(
            case["attention_max_error"].as_f64().unwrap() <= 1e-6,
            "{case}"
        );
        assert!(
            case["guidance_max_error"].as_f64().unwrap() <= 1e-6,
            "{case}"
        );
    }
}

#[test]
fn a_failing_rank_stops_the_others_and_is_named() {
    let (output, stderr) = run(Command::new(BINARY).args([
        "parallel-check",
        "--ulysses-degree",
        "2",
        "--cfg-parallel",
        "--fail-rank",
        "2",
    ]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("[rank 2] Error: rank 2 failed on purpose"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Error: rank 2 of 4 failed (exit status: 1); stopped the other ranks"),
        "{stderr}"
    );
    assert!(stderr.contains("fix: see rank 2's error above"), "{stderr}");
    assert!(output.stdout.is_empty(), "no report after a failure");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ranks_placed_by_torchrun_variables_rendezvous_over_tcp() {
    let port = free_port().to_string();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(BINARY)
                .args(["parallel-check", "--cfg-parallel"])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", "0")
                .env("LOCAL_WORLD_SIZE", "1")
                .env("MASTER_ADDR", "localhost")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for output in &outputs {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&outputs[0].stdout).unwrap();
    assert_eq!(report["world_size"], 2);
    assert!(outputs[1].stdout.is_empty(), "only rank 0 reports");
}

fn assert_refused(output: &Output, stderr: &str, needles: &[&str]) {
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    assert!(stderr.contains("\n  fix: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn inconsistent_rank_variables_are_refused() {
    let (output, stderr) = run(Command::new(BINARY)
        .args(["parallel-check", "--ulysses-degree", "2", "--cfg-parallel"])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("LOCAL_RANK", "0"));
    assert_refused(
        &output,
        &stderr,
        &["WORLD_SIZE=2 but --ulysses-degree 2 --cfg-parallel makes 4 ranks"],
    );
}

#[test]
fn missing_nccl_is_refused_with_the_fix() {
    let (output, stderr) = run(Command::new(BINARY)
        .args(["parallel-check", "--backend", "cuda"])
        .env("SKYREELS_NCCL_LIBRARY", "/nonexistent/libnccl.so.2"));
    assert_refused(
        &output,
        &stderr,
        &[
            "NCCL library (libnccl.so.2) not found",
            "/nonexistent/libnccl.so.2",
            "pip install nvidia-nccl-cu13",
            "SKYREELS_NCCL_LIBRARY",
        ],
    );
}

/// The tiny DF engine (2 attention heads), exported once.
fn tiny_engine() -> &'static Path {
    static ENGINE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, engine) = ENGINE.get_or_init(|| {
        let directory = tempfile::tempdir().unwrap();
        let engine = directory.path().join("engine");
        fs_err::create_dir(&engine).unwrap();
        common::export_tiny_engine(&engine, common::TinyModel::DiffusionForcing);
        (directory, engine)
    });
    engine
}

/// `skyreels generate` on the tiny engine, writing `out`.
fn generate_command(out: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("generate")
        .arg("--engines")
        .arg(tiny_engine())
        .arg("--out")
        .arg(out);
    command
}

fn generate(extra: &[&str]) -> (Output, String, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("out.mp4");
    let mut command = generate_command(&out);
    command
        .args([
            "--prompt",
            "a fox",
            "--num-frames",
            "5",
            "--height",
            "32",
            "--width",
            "32",
            "--steps",
            "2",
        ])
        .args(extra);
    let (output, stderr) = run(&mut command);
    assert!(!out.exists(), "a refused run writes nothing");
    (output, stderr, directory)
}

#[test]
fn generate_refuses_a_degree_that_does_not_divide_the_heads() {
    let (output, stderr, _dir) = generate(&["--ulysses-degree", "3"]);
    assert_refused(
        &output,
        &stderr,
        &[
            "--ulysses-degree 3: the model has 2 attention heads",
            "use a degree that divides 2: 1, 2",
        ],
    );
}

#[test]
fn generate_refuses_more_ranks_than_listed_devices() {
    let (output, stderr, _dir) = generate(&[
        "--backend",
        "cuda",
        "--ulysses-degree",
        "2",
        "--cfg-parallel",
        "--devices",
        "0,1",
    ]);
    assert_refused(
        &output,
        &stderr,
        &["4 ranks on this host but --devices lists 2 GPUs"],
    );
}

#[test]
fn generate_refuses_cfg_parallel_without_an_unconditional_branch() {
    let (output, stderr, _dir) = generate(&["--cfg-parallel", "--guidance", "1"]);
    assert_refused(
        &output,
        &stderr,
        &["no unconditional branch", "drop --cfg-parallel"],
    );
}

fn final_latents(path: &Path) -> Vec<f32> {
    let bytes = fs_err::read(path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    bytemuck::pod_collect_to_vec(tensors.tensor("latents").unwrap().data())
}

/// `generate` on one rank and with `--cfg-parallel` (two supervised CPU ranks, one branch each).
fn cfg_parallel_matches_one_rank(extra: &[&str]) -> serde_json::Value {
    cfg_parallel_matches_one_rank_on(tiny_engine(), extra)
}

/// Returns the one-rank run's `--json` summary.
fn cfg_parallel_matches_one_rank_on(engine: &Path, extra: &[&str]) -> serde_json::Value {
    ranks_match_one_rank(engine, extra, &[&["--cfg-parallel"]])
}

const ULYSSES: &[&str] = &["--ulysses-degree", "2"];
const ULYSSES_CFG: &[&str] = &["--ulysses-degree", "2", "--cfg-parallel"];

/// `generate` on one rank and with each of `layouts` (supervised CPU ranks); every layout's final
/// latents must be within 1e-5 of the one-rank run's. Prints the differences; returns the
/// one-rank run's `--json` summary.
fn ranks_match_one_rank(engine: &Path, extra: &[&str], layouts: &[&[&str]]) -> serde_json::Value {
    let directory = tempfile::tempdir().unwrap();
    let mut latents = Vec::new();
    let mut summaries = Vec::new();
    let runs = std::iter::once(&[][..]).chain(layouts.iter().copied());
    for (index, parallel) in runs.enumerate() {
        let name = format!("run{index}");
        let path = directory.path().join(format!("{name}.safetensors"));
        let out = directory.path().join(format!("{name}.mp4"));
        let (output, stderr) = run(Command::new(BINARY)
            .arg("generate")
            .arg("--engines")
            .arg(engine)
            .arg("--out")
            .arg(&out)
            .arg("--save-latents")
            .arg(&path)
            .args(["--prompt", "a fox", "--threads", "1", "--json"])
            .args(match extra.contains(&"--height") {
                true => &[][..],
                false => &["--height", "32", "--width", "32"][..],
            })
            .args(extra)
            .args(parallel));
        assert!(output.status.success(), "{parallel:?} {extra:?}: {stderr}");
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(
            summary["dit_forwards"].as_u64().unwrap() > 0,
            "one summary, from rank 0"
        );
        assert!(out.exists());
        latents.push(final_latents(&path));
        summaries.push(summary);
    }
    for (layout, other) in layouts.iter().zip(&latents[1..]) {
        let difference = max_difference(&latents[0], other);
        eprintln!("parity {layout:?} {extra:?}: max-abs {difference:e} vs one rank");
        assert!(
            difference <= 1e-5,
            "{extra:?}: {layout:?} differs from one rank by {difference}"
        );
    }
    for (layout, summary) in layouts.iter().zip(&summaries[1..]) {
        // With --cfg-parallel rank 0 counts only its own (conditional) branch.
        let branches = if layout.contains(&"--cfg-parallel") {
            2
        } else {
            1
        };
        assert_eq!(
            summary["blocks_skipped"].as_u64().unwrap() * branches,
            summaries[0]["blocks_skipped"].as_u64().unwrap(),
            "{layout:?}: TeaCache skipped other forwards than one rank"
        );
    }
    summaries.swap_remove(0)
}

#[test]
fn cfg_parallel_generation_matches_one_rank_synchronous() {
    cfg_parallel_matches_one_rank(&["--num-frames", "5", "--steps", "3"]);
}

#[test]
fn cfg_parallel_generation_matches_one_rank_asynchronous_block_causal() {
    cfg_parallel_matches_one_rank(&[
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
fn cfg_parallel_generation_matches_one_rank_with_teacache() {
    let summary = cfg_parallel_matches_one_rank(&[
        "--num-frames",
        "9",
        "--steps",
        "6",
        "--teacache",
        "1",
        "--teacache-coefficients",
        "0,0,0,1,0",
    ]);
    assert!(
        summary["blocks_skipped"].as_u64().unwrap() > 0,
        "TeaCache skipped nothing: {summary}"
    );
}

/// A stand-in model: a velocity that depends on the latents, the timesteps and the branch.
struct FakeModel {
    calls: Vec<Branch>,
}

impl Denoiser for FakeModel {
    fn velocity(
        &mut self,
        latents: &Tensor,
        timesteps: &[f32],
        branch: Branch,
        _row: usize,
        _cache: Option<&mut TeaCache>,
    ) -> skyreels_runtime::Result<Tensor> {
        self.calls.push(branch);
        let offset = match branch {
            Branch::Conditional => 0.25,
            Branch::Unconditional => -0.5,
        };
        let plane = latents.data.len() / timesteps.len();
        let data = latents
            .data
            .iter()
            .enumerate()
            .map(|(i, x)| {
                (x * 0.9 + offset * (i as f32 * 0.37).sin())
                    * (1.0 + timesteps[(i / plane) % timesteps.len()] / 1000.0)
            })
            .collect();
        Tensor::new(latents.shape.clone(), data)
    }

    fn has_unconditional(&self) -> bool {
        true
    }
}

fn sample(denoiser: &mut dyn Denoiser) -> Tensor {
    // 2 latent frames of 2x3, 16 channels; three rows, the second frame one row behind.
    let mut latents = NoiseSource::seeded(7).draw(&[1, 16, 2, 2, 3]).unwrap();
    let rows = Rows {
        timesteps: vec![vec![999.0, 999.0], vec![600.0, 999.0], vec![200.0, 600.0]],
        update: vec![vec![true, false], vec![true, true], vec![true, true]],
        interval: vec![(0, 2), (0, 2), (0, 2)],
    };
    let schedule = Schedule::new(SigmaSchedule::Upstream, 3, 1.0).unwrap();
    let mut schedulers = vec![FlowEuler::new(&schedule), FlowEuler::new(&schedule)];
    let settings = WindowSettings {
        guidance: 6.0,
        addnoise_condition: 0.0,
        teacache: None,
    };
    let stats = sample_window(
        denoiser,
        &mut latents,
        0,
        &rows,
        &mut schedulers,
        &settings,
        &mut NoiseSource::seeded(1),
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(stats.forwards, 6);
    latents
}

#[test]
fn cfg_parallel_ranks_sample_the_same_latents_as_one_rank() {
    let single = sample(&mut FakeModel { calls: Vec::new() });
    for degree in [1, 2] {
        let config = ParallelConfig::new(&ParallelArgs {
            ulysses_degree: degree,
            cfg_parallel: true,
            devices: None,
        })
        .unwrap();
        let results = TcpCommunicator::run_threads(config.world_size(), |mut world| {
            let role = config.role(world.rank());
            let Branches::Only(branch) = role.branches else {
                panic!("cfg-parallel gives each rank one branch")
            };
            let pair = world.split(role.guidance_color())?;
            let mut denoiser = GuidancePair::new(FakeModel { calls: Vec::new() }, branch, pair)
                .map_err(|e| skyreels_runtime::parallel::ParallelError::Buffer(e.to_string()))?;
            let latents = sample(&mut denoiser);
            Ok((branch, latents, denoiser.into_inner().calls))
        })
        .unwrap();
        for (rank, (branch, latents, calls)) in results.iter().enumerate() {
            assert_eq!(
                latents.data,
                single.data,
                "rank {rank} of {}: latents differ",
                config.world_size()
            );
            assert_eq!(
                calls,
                &vec![*branch; 3],
                "rank {rank} ran only its own branch, once per row"
            );
        }
    }
}

/// The tiny image-to-video engine and a `width`×`height` first frame, both in `directory`.
fn image_to_video_engine(directory: &Path, width: u32, height: u32) -> (PathBuf, PathBuf) {
    let engine = directory.join("engine");
    fs_err::create_dir(&engine).unwrap();
    common::export_tiny_engine(&engine, common::TinyModel::ImageToVideo);
    let picture = directory.join("first.png");
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
    })
    .save(&picture)
    .unwrap();
    (engine, picture)
}

#[test]
fn cfg_parallel_generation_matches_one_rank_image_to_video() {
    let directory = tempfile::tempdir().unwrap();
    let (engine, picture) = image_to_video_engine(directory.path(), 48, 32);
    cfg_parallel_matches_one_rank_on(
        &engine,
        &[
            "--num-frames",
            "5",
            "--steps",
            "3",
            "--image",
            picture.to_str().unwrap(),
        ],
    );
}

/// 3 latent frames of 3×3 tokens (48×48 pixels): 27 tokens, so two ranks hold 14 rows each and
/// the last one a padding row; the slices cut the middle frame.
const PADDED: &[&str] = &["--num-frames", "9", "--height", "48", "--width", "48"];

/// An asynchronous block-causal job: 9 latent frames of 9 tokens (81 tokens), blocks of 3 frames.
const BLOCK_CAUSAL: &[&str] = &[
    "--num-frames",
    "33",
    "--height",
    "48",
    "--width",
    "48",
    "--steps",
    "3",
    "--ar-step",
    "2",
    "--causal-block-size",
    "3",
    "--causal-attention",
];

#[test]
fn ulysses_generation_matches_one_rank_synchronous_with_padding() {
    let extra = [PADDED, &["--steps", "3"]].concat();
    ranks_match_one_rank(tiny_engine(), &extra, &[ULYSSES, ULYSSES_CFG]);
}

#[test]
fn ulysses_generation_matches_one_rank_asynchronous_block_causal() {
    // 9 latent frames of 9 tokens (81 tokens: slices of 41 rows, one of them padding, groups of
    // one token; the slices cut frame 4 and the middle block), blocks of 3 frames. (A block size
    // that does not divide the window's latent frames is refused by the plan.)
    ranks_match_one_rank(tiny_engine(), BLOCK_CAUSAL, &[ULYSSES, ULYSSES_CFG]);
}

#[test]
fn ulysses_generation_matches_one_rank_with_teacache() {
    let extra = [
        PADDED,
        &[
            "--steps",
            "6",
            "--teacache",
            "1",
            "--teacache-coefficients",
            "0,0,0,1,0",
        ],
    ]
    .concat();
    // With --offload both branches pass each layer together (two pools sliced before either
    // head runs, and the group agrees on both decisions first).
    let summary = ranks_match_one_rank(
        tiny_engine(),
        &extra,
        &[
            ULYSSES,
            ULYSSES_CFG,
            &["--ulysses-degree", "2", "--offload"],
        ],
    );
    assert!(
        summary["blocks_skipped"].as_u64().unwrap() > 0,
        "TeaCache skipped nothing: {summary}"
    );
}

#[test]
fn ranks_match_one_rank_on_a_long_video() {
    let summary = ranks_match_one_rank(
        tiny_engine(),
        &[
            "--num-frames",
            "21",
            "--base-num-frames",
            "13",
            "--overlap-history",
            "5",
            "--steps",
            "2",
            "--height",
            "48",
            "--width",
            "48",
        ],
        &[&["--cfg-parallel"], ULYSSES, ULYSSES_CFG],
    );
    assert_eq!(summary["windows"].as_u64(), Some(2), "{summary}");
}

#[test]
fn ulysses_generation_matches_one_rank_image_to_video() {
    let directory = tempfile::tempdir().unwrap();
    let (engine, picture) = image_to_video_engine(directory.path(), 48, 48);
    let extra = [
        PADDED,
        &["--steps", "3", "--image", picture.to_str().unwrap()],
    ]
    .concat();
    ranks_match_one_rank(&engine, &extra, &[ULYSSES, ULYSSES_CFG]);
}

#[test]
fn only_rank_0_loads_the_text_encoder_and_the_vae_of_a_one_window_job() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("out.mp4");
    let (output, stderr) = run(Command::new(BINARY)
        .arg("generate")
        .arg("--engines")
        .arg(tiny_engine())
        .arg("--out")
        .arg(&out)
        .args(["--prompt", "a fox", "--threads", "1", "--steps", "2"])
        .args(PADDED)
        .args(ULYSSES_CFG));
    assert!(output.status.success() && out.exists(), "{stderr}");
    for rank in 0..4 {
        for stage in [
            "loading text encoder",
            "loading vae decoder",
            "decoding window",
        ] {
            let line = format!("[rank {rank}] {stage}");
            assert_eq!(
                stderr.contains(&line),
                rank == 0,
                "{line:?} in the log: {stderr}"
            );
        }
        assert!(
            stderr.contains(&format!("[rank {rank}] loading dit")),
            "{stderr}"
        );
    }
}

#[test]
fn an_engine_without_the_sharded_attention_graph_is_refused_with_the_fix() {
    let directory = tempfile::tempdir().unwrap();
    let engine = directory.path().join("engine");
    fs_err::create_dir(&engine).unwrap();
    common::export_tiny_engine(&engine, common::TinyModel::DiffusionForcing);
    // An engine exported before sequence parallel: no `attention_heads_1`.
    let mut manifest = skyreels_contract::Manifest::load(&engine).unwrap();
    let dit = manifest.dit.as_mut().unwrap();
    let before = dit.graphs.len();
    dit.graphs.retain(|graph| graph.name != "attention_heads_1");
    assert_eq!(dit.graphs.len(), before - 1);
    manifest.save(&engine).unwrap();
    let out = directory.path().join("out.mp4");
    let (output, stderr) = run(Command::new(BINARY)
        .arg("generate")
        .arg("--engines")
        .arg(&engine)
        .arg("--out")
        .arg(&out)
        .args(["--prompt", "a fox", "--threads", "1", "--steps", "2"])
        .args(PADDED)
        .args(ULYSSES));
    assert!(!output.status.success() && !out.exists(), "{stderr}");
    for needle in [
        "manifest lists no DiT graph `attention_heads_1` (attention over 1 of 2 heads, for sequence parallel)",
        "fix: re-export the engine with this skyreels-export",
        "rank 0",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in {stderr}");
    }
}

#[test]
fn ulysses_over_two_and_four_ranks_matches_one_rank_with_four_heads() {
    let directory = tempfile::tempdir().unwrap();
    let engine = directory.path().join("engine");
    fs_err::create_dir(&engine).unwrap();
    common::export_tiny_engine(&engine, common::TinyModel::FourHeads);
    let degree_4: &[&str] = &["--ulysses-degree", "4"];
    // 27 tokens over 4 ranks: slices of 7 rows, the last with one padding row; two heads per rank
    // at degree 2 (their order through the all-to-all matters), one at degree 4.
    let extra = [PADDED, &["--steps", "3"]].concat();
    ranks_match_one_rank(&engine, &extra, &[ULYSSES, degree_4, ULYSSES_CFG]);
    // 81 tokens over 4 ranks (slices of 21 rows, groups of 3 tokens), blocks of 3 frames.
    ranks_match_one_rank(&engine, BLOCK_CAUSAL, &[degree_4]);
}

/// One `generate` call's final latents and stderr, with `environment` set.
fn latents_of(extra: &[&str], environment: &[(&str, &str)]) -> (Vec<f32>, String) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("latents.safetensors");
    let mut command = generate_command(&directory.path().join("out.mp4"));
    command
        .arg("--save-latents")
        .arg(&path)
        .args(["--prompt", "a fox", "--threads", "1", "--log-level", "info"])
        .args(extra)
        .envs(environment.iter().copied());
    let (output, stderr) = run(&mut command);
    assert!(output.status.success(), "{environment:?}: {stderr}");
    (final_latents(&path), stderr)
}

#[test]
fn the_sequence_path_forced_at_world_size_one_matches_the_plain_run() {
    // What the GPU run at world size 1 measures (tools/bench/gpu_ulysses.sh on one GPU): a rank
    // placed by torchrun's variables, its Ulysses group of one still going through the
    // communicator (all-to-alls, the head's gather, TeaCache's agreement).
    let teacache = ["--teacache", "1", "--teacache-coefficients", "0,0,0,1,0"];
    let extra = [BLOCK_CAUSAL, &teacache].concat();
    let (plain, _) = latents_of(&extra, &[]);
    let port = free_port().to_string();
    let (forced, stderr) = latents_of(
        &extra,
        &[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", &port),
            ("SKYREELS_ULYSSES_AT_ONE", "1"),
        ],
    );
    assert!(
        stderr.contains("a Ulysses group of 1, attention over"),
        "the sequence path did not run: {stderr}"
    );
    let difference = max_difference(&plain, &forced);
    eprintln!("world size 1, sequence path forced: max-abs {difference:e} vs the plain run");
    assert!(difference <= 1e-5, "differs by {difference}");
}
