//! `skyreels parallel-check`: the multi-rank machinery end to end without a model. Ranks start
//! as `generate` will start them (supervised workers, or torchrun's variables), join through the
//! chosen transport (TCP for `--backend cpu`, NCCL for `--backend cuda`), verify every collective
//! against exact expectations, then run Ulysses attention (sharded q/k/v → all-to-all → attention
//! → all-to-all → gather, with padding and block-causal prefixes) and the guidance exchange, and
//! compare with the single-rank result. Optionally times the Ulysses all-to-all at a real size.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::attention::{UlyssesAttention, UlyssesGeometry, attend};
use super::axis::{AllToAll, Concat};
use super::communicator::Communicator;
use super::config::{Launch, ParallelArgs, ParallelConfig};
use super::error::{ParallelError, Result, config_error};
use super::layout::{Branches, agree, combine_guidance};
use super::nccl::{self, NcclCommunicator};
use super::nccl_search::NcclSearch;
use super::rendezvous;
use super::shard::{TokenSharding, attention_blocks, drop_padding, take_shard};
use super::start::share_unique_id;
use super::supervisor;
use super::tcp::TcpCommunicator;
use crate::teacache::Branch;

/// Heads of the check's attention (as SkyReels-V2 1.3B: degrees 1, 2, 3, 4, 6, 12 work).
pub const CHECK_HEADS: usize = 12;
const CHECK_HEAD_DIM: usize = 8;
const GUIDANCE_SCALE: f32 = 5.0;
/// Largest difference to the single-rank result that passes.
pub const TOLERANCE: f64 = 1e-6;

/// The transport to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckBackend {
    /// TCP between processes, host buffers.
    Cpu,
    /// NCCL between GPUs, device buffers on one stream.
    Cuda,
}

/// Flags of `skyreels parallel-check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Rank layout.
    #[command(flatten)]
    pub parallel: ParallelArgs,
    /// Transport: `cpu` (TCP) or `cuda` (NCCL).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: CheckBackend,
    /// Also time the Ulysses all-to-all and the sequence gather of this many tokens (0: no timing).
    #[arg(long, default_value_t = 0)]
    pub bench_tokens: usize,
    /// Heads of the timed exchange.
    #[arg(long, default_value_t = 12)]
    pub bench_heads: usize,
    /// Channels per head of the timed exchange.
    #[arg(long, default_value_t = 128)]
    pub bench_head_dim: usize,
    /// Timed repetitions.
    #[arg(long, default_value_t = 20)]
    pub bench_iterations: usize,
    /// Make this rank fail after start-up (to see the supervision stop the others).
    #[arg(long, hide = true)]
    pub fail_rank: Option<usize>,
}

/// What rank 0 reports.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Ranks in the run.
    pub world_size: usize,
    /// Ranks per branch.
    pub ulysses_degree: usize,
    /// Branches on two rank groups.
    pub cfg_parallel: bool,
    /// `tcp` or `nccl`.
    pub transport: String,
    /// The NCCL library loaded, and its version.
    pub nccl: Option<(String, i32)>,
    /// Largest difference of the collectives to their exact expectation.
    pub collectives_max_error: f64,
    /// One entry per attention case.
    pub cases: Vec<CaseReport>,
    /// Timings, when asked for.
    pub bench: Option<BenchReport>,
}

/// One Ulysses attention case against the single-rank result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// What it covers.
    pub name: String,
    /// Real tokens.
    pub tokens: usize,
    /// Padding rows added to split them.
    pub padding: usize,
    /// Frames per causal block, when block-causal.
    pub causal_block_size: Option<usize>,
    /// Largest difference of this rank's gathered attention output to the single-rank one.
    pub attention_max_error: f64,
    /// Largest difference of the guided combination to the single-rank one.
    pub guidance_max_error: f64,
}

/// Time per collective at a real size.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Tokens exchanged.
    pub tokens: usize,
    /// Bytes of one rank's q (bf16).
    pub bytes: usize,
    /// Milliseconds per sequence→heads all-to-all (queued back to back, then one wait).
    pub all_to_all_ms: f64,
    /// Milliseconds per all-gather of the rank's token rows.
    pub all_gather_ms: f64,
}

struct Case {
    name: &'static str,
    frames: usize,
    tokens_per_frame: usize,
    causal_block_size: Option<usize>,
}

const CASES: [Case; 4] = [
    Case {
        name: "divisible tokens",
        frames: 8,
        tokens_per_frame: 3,
        causal_block_size: None,
    },
    Case {
        name: "padded tokens",
        frames: 7,
        tokens_per_frame: 3,
        causal_block_size: None,
    },
    Case {
        name: "padded tokens, block-causal (2 frames a block)",
        frames: 7,
        tokens_per_frame: 3,
        causal_block_size: Some(2),
    },
    Case {
        name: "divisible tokens, block-causal (3 frames a block)",
        frames: 8,
        tokens_per_frame: 3,
        causal_block_size: Some(3),
    },
];

/// Runs the check as this process's launch decides; returns rank 0's report (`None` on other
/// ranks and in the supervisor, whose rank 0 worker prints it).
pub fn run(args: &CheckArgs) -> Result<Option<CheckReport>> {
    let config = ParallelConfig::new(&args.parallel)?;
    config.check_heads(CHECK_HEADS)?;
    if let Some(rank) = args.fail_rank
        && rank >= config.world_size()
    {
        return Err(config_error(
            format!(
                "--fail-rank {rank}: the run has {} ranks",
                config.world_size()
            ),
            "name an existing rank",
        ));
    }
    let launch = Launch::decide(&config, |name| std::env::var(name).ok())?;
    let (rank, world_size, local_rank, local_world_size, master) = match &launch {
        Launch::Supervise { world_size } => {
            if args.backend == CheckBackend::Cuda {
                let available = nccl::device_count()?;
                config.device_for(0, *world_size, Some(available))?;
            }
            let program = std::env::current_exe().map_err(|source| ParallelError::Spawn {
                rank: 0,
                program: "the running binary".into(),
                source,
            })?;
            let arguments: Vec<_> = std::env::args_os().skip(1).collect();
            supervisor::supervise(*world_size, &program, &arguments)?;
            return Ok(None);
        }
        Launch::Single => (0, 1, 0, 1, String::new()),
        Launch::Rank(environment) => (
            environment.rank,
            environment.world_size,
            environment.local_rank,
            environment.local_world_size,
            format!("{}:{}", environment.master_addr, environment.master_port),
        ),
    };
    let report = match args.backend {
        CheckBackend::Cpu => {
            let mut world = if world_size == 1 {
                TcpCommunicator::single()
            } else {
                TcpCommunicator::connect(
                    rank,
                    world_size,
                    &master,
                    None,
                    rendezvous::DEFAULT_TIMEOUT,
                )?
            };
            run_rank(&mut world, &config, args, "tcp", None)?
        }
        CheckBackend::Cuda => {
            let library = nccl::load(&NcclSearch::from_environment())?;
            let available = nccl::device_count()?;
            let device = config.device_for(local_rank, local_world_size, Some(available))?;
            let unique_id = share_unique_id(rank, world_size, &master)?;
            let staging = staging_bytes(args, world_size);
            let mut world = NcclCommunicator::new(device, rank, world_size, unique_id, staging)?;
            let loaded = Some((library.path.display().to_string(), library.version));
            run_rank(&mut world, &config, args, "nccl", loaded)?
        }
    };
    Ok((rank == 0).then_some(report))
}

/// Staging the NCCL transport needs for the check and the timed exchange.
fn staging_bytes(args: &CheckArgs, world_size: usize) -> usize {
    let check = 64 * CHECK_HEADS * CHECK_HEAD_DIM * 4 * world_size;
    let bench = args.bench_tokens.div_ceil(world_size.max(1))
        * world_size
        * args.bench_heads
        * args.bench_head_dim
        * 2;
    check.max(bench).max(1 << 16)
}

/// A reproducible value in [-1, 1) for `(seed, index)` (splitmix64).
fn value(seed: u64, index: usize) -> f32 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

fn max_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

/// One rank's part of the check on an already joined world.
pub fn run_rank<C: Communicator>(
    world: &mut C,
    config: &ParallelConfig,
    args: &CheckArgs,
    transport: &str,
    nccl: Option<(String, i32)>,
) -> Result<CheckReport> {
    let rank = world.rank();
    world.barrier()?;
    if args.fail_rank == Some(rank) {
        return Err(config_error(
            format!("rank {rank} failed on purpose (--fail-rank {rank})"),
            "drop --fail-rank",
        ));
    }
    let collectives_max_error = check_collectives(world)?;
    let role = config.role(rank);
    let mut ulysses = world.split(role.ulysses_color())?;
    let mut guidance = if config.cfg_parallel {
        Some(world.split(role.guidance_color())?)
    } else {
        None
    };
    let mut decision = ulysses.allocate(1)?;
    let agreed = agree(&mut ulysses, &mut decision, rank.is_multiple_of(2))?;
    if agreed != role.ulysses_group.start.is_multiple_of(2) {
        return Err(ParallelError::CheckFailed {
            rank,
            message: "the Ulysses group did not take its rank 0's TeaCache decision".into(),
        });
    }
    let branches = match role.branches {
        Branches::Both => vec![Branch::Conditional, Branch::Unconditional],
        Branches::Only(branch) => vec![branch],
    };
    let mut cases = Vec::new();
    for (index, case) in CASES.iter().enumerate() {
        let report = run_case(&mut ulysses, guidance.as_mut(), &branches, index, case)?;
        if report.attention_max_error > TOLERANCE || report.guidance_max_error > TOLERANCE {
            return Err(ParallelError::CheckFailed {
                rank,
                message: format!(
                    "case `{}` differs from the single-rank result: attention {:e}, guidance {:e} (tolerance {TOLERANCE:e})",
                    report.name, report.attention_max_error, report.guidance_max_error
                ),
            });
        }
        cases.push(report);
    }
    let bench = if args.bench_tokens > 0 {
        Some(bench(&mut ulysses, args)?)
    } else {
        None
    };
    world.barrier()?;
    Ok(CheckReport {
        world_size: config.world_size(),
        ulysses_degree: config.ulysses_degree,
        cfg_parallel: config.cfg_parallel,
        transport: transport.into(),
        nccl,
        collectives_max_error,
        cases,
        bench,
    })
}

/// Every collective against values computed by index arithmetic; returns the largest error
/// (0 for a correct transport: these only move or add small integers).
fn check_collectives<C: Communicator>(world: &mut C) -> Result<f64> {
    let (rank, size) = (world.rank(), world.size());
    let mut error: f64 = 0.0;
    let count = 5;
    let mut buffer = world.allocate(count * 4)?;
    let contribution: Vec<f32> = (0..count).map(|i| ((rank + 1) * (i + 1)) as f32).collect();
    world.write(&mut buffer, bytemuck::cast_slice(&contribution))?;
    world.all_reduce_sum(&mut buffer, count)?;
    let mut sums = vec![0u8; count * 4];
    world.read(&buffer, &mut sums)?;
    let expected: Vec<f32> = (0..count)
        .map(|i| ((i + 1) * size * (size + 1) / 2) as f32)
        .collect();
    error = error.max(max_difference(&floats(&sums), &expected));

    let mut bytes = world.allocate(16)?;
    world.write(&mut bytes, &[rank as u8 + 7; 16])?;
    world.broadcast(&mut bytes, 16, size - 1)?;
    let mut received = [0u8; 16];
    world.read(&bytes, &mut received)?;
    if received != [size as u8 + 6; 16] {
        error = error.max(1.0);
    }

    let concat = Concat::new(vec![2, 3, 2], 1, size, 4)?;
    let piece: Vec<f32> = (0..12).map(|i| (rank * 1000 + i) as f32).collect();
    let mut send = world.allocate(concat.part_bytes())?;
    let mut gathered = world.allocate(concat.output_bytes())?;
    world.write(&mut send, bytemuck::cast_slice(&piece))?;
    world.all_gather(&send, &mut gathered, &concat)?;
    let mut host = vec![0u8; concat.output_bytes()];
    world.read(&gathered, &mut host)?;
    let mut expected = Vec::new();
    for b in 0..2 {
        for source in 0..size {
            for s in 0..3 {
                for c in 0..2 {
                    expected.push((source * 1000 + (b * 3 + s) * 2 + c) as f32);
                }
            }
        }
    }
    error = error.max(max_difference(&floats(&host), &expected));

    let heads = 2 * size;
    let exchange = AllToAll::sequence_to_heads(1, 3, heads, 2, size, 4)?;
    let input: Vec<f32> = (0..3 * heads * 2)
        .map(|i| (rank * 1000 + i) as f32)
        .collect();
    let mut send = world.allocate(exchange.bytes())?;
    let mut receive = world.allocate(exchange.bytes())?;
    world.write(&mut send, bytemuck::cast_slice(&input))?;
    world.all_to_all(&send, &mut receive, &exchange)?;
    let mut host = vec![0u8; exchange.bytes()];
    world.read(&receive, &mut host)?;
    let mut expected = Vec::new();
    for source in 0..size {
        for s in 0..3 {
            for h in 0..2 {
                for d in 0..2 {
                    expected.push((source * 1000 + (s * heads + rank * 2 + h) * 2 + d) as f32);
                }
            }
        }
    }
    error = error.max(max_difference(&floats(&host), &expected));
    world.barrier()?;
    if error != 0.0 {
        return Err(ParallelError::CheckFailed {
            rank,
            message: format!(
                "a collective's result differs from the exact expectation by {error:e}"
            ),
        });
    }
    Ok(error)
}

fn branch_seed(case: usize, branch: Branch) -> u64 {
    (case as u64) * 16 + u64::from(branch == Branch::Unconditional)
}

/// q, k, v `[1, tokens, heads, head_dim]` of a case and branch, and their single-rank attention.
fn branch_data(case_index: usize, case: &Case, branch: Branch) -> ([Vec<f32>; 3], Vec<f32>) {
    let tokens = case.frames * case.tokens_per_frame;
    let length = tokens * CHECK_HEADS * CHECK_HEAD_DIM;
    let seed = branch_seed(case_index, branch);
    let make = |which: u64| {
        (0..length)
            .map(|i| value(seed * 4 + which, i))
            .collect::<Vec<f32>>()
    };
    let (query, key, value) = (make(0), make(1), make(2));
    let causal = case.causal_block_size.map(|c| (c, case.tokens_per_frame));
    let blocks = attention_blocks(tokens, tokens, causal);
    let reference = attend(
        &query,
        &key,
        &value,
        [1, tokens, CHECK_HEADS, CHECK_HEAD_DIM],
        &blocks,
    );
    ([query, key, value], reference)
}

fn run_case<C: Communicator>(
    ulysses: &mut C,
    guidance: Option<&mut C>,
    branches: &[Branch],
    case_index: usize,
    case: &Case,
) -> Result<CaseReport> {
    let tokens = case.frames * case.tokens_per_frame;
    let sharding = TokenSharding::new(tokens, ulysses.size())?;
    let geometry = UlyssesGeometry {
        batch: 1,
        sharding,
        heads: CHECK_HEADS,
        head_dim: CHECK_HEAD_DIM,
        causal: case.causal_block_size.map(|c| (c, case.tokens_per_frame)),
    };
    let row = CHECK_HEADS * CHECK_HEAD_DIM;
    let mut attention = UlyssesAttention::new(ulysses, geometry)?;
    let concat = Concat::new(vec![1, sharding.shard_len(), row], 1, ulysses.size(), 4)?;
    let mut shard_buffer = ulysses.allocate(concat.part_bytes())?;
    let mut gathered_buffer = ulysses.allocate(concat.output_bytes())?;
    let mut attention_max_error: f64 = 0.0;
    let mut outputs = Vec::new();
    for &branch in branches {
        let ([query, key, value], reference) = branch_data(case_index, case, branch);
        let me = ulysses.rank();
        let shard = |full: &[f32]| take_shard(full, 1, row, &sharding, me, 0.0);
        let out = attention.run(ulysses, &shard(&query), &shard(&key), &shard(&value))?;
        ulysses.write(&mut shard_buffer, bytemuck::cast_slice(&out))?;
        ulysses.all_gather(&shard_buffer, &mut gathered_buffer, &concat)?;
        let mut host = vec![0u8; concat.output_bytes()];
        ulysses.read(&gathered_buffer, &mut host)?;
        let full = drop_padding(&floats(&host), 1, row, &sharding);
        attention_max_error = attention_max_error.max(max_difference(&full, &reference));
        outputs.push(full);
    }
    let guided = match guidance {
        None => combine_guidance(&outputs[0], &outputs[1], GUIDANCE_SCALE),
        Some(pair) => {
            let length = outputs[0].len();
            let concat = Concat::new(vec![length], 0, pair.size(), 4)?;
            let mut own = pair.allocate(concat.part_bytes())?;
            let mut both = pair.allocate(concat.output_bytes())?;
            pair.write(&mut own, bytemuck::cast_slice(&outputs[0]))?;
            pair.all_gather(&own, &mut both, &concat)?;
            let mut host = vec![0u8; concat.output_bytes()];
            pair.read(&both, &mut host)?;
            let pair_outputs = floats(&host);
            combine_guidance(
                &pair_outputs[..length],
                &pair_outputs[length..],
                GUIDANCE_SCALE,
            )
        }
    };
    let (_, conditional) = branch_data(case_index, case, Branch::Conditional);
    let (_, unconditional) = branch_data(case_index, case, Branch::Unconditional);
    let expected = combine_guidance(&conditional, &unconditional, GUIDANCE_SCALE);
    Ok(CaseReport {
        name: case.name.into(),
        tokens,
        padding: sharding.padding(),
        causal_block_size: case.causal_block_size,
        attention_max_error,
        guidance_max_error: max_difference(&guided, &expected),
    })
}

/// Times the Ulysses all-to-all of q (bf16) and the gather of the token rows on the group.
fn bench<C: Communicator>(ulysses: &mut C, args: &CheckArgs) -> Result<BenchReport> {
    let ranks = ulysses.size();
    if !args.bench_heads.is_multiple_of(ranks) {
        return Err(config_error(
            format!(
                "--bench-heads {} does not split over {ranks} ranks",
                args.bench_heads
            ),
            "use a head count divisible by the Ulysses degree",
        ));
    }
    let shard_len = args.bench_tokens.div_ceil(ranks);
    let exchange = AllToAll::sequence_to_heads(
        1,
        shard_len,
        args.bench_heads,
        args.bench_head_dim,
        ranks,
        2,
    )?;
    let send = ulysses.allocate(exchange.bytes())?;
    let mut receive = ulysses.allocate(exchange.bytes())?;
    let concat = Concat::new(
        vec![1, shard_len, args.bench_heads * args.bench_head_dim],
        1,
        ranks,
        2,
    )?;
    let mut gathered = ulysses.allocate(concat.output_bytes())?;
    let iterations = args.bench_iterations.max(1);
    let mut time = |run: &mut dyn FnMut(&mut C) -> Result<()>| -> Result<f64> {
        run(ulysses)?;
        ulysses.barrier()?;
        let start = Instant::now();
        for _ in 0..iterations {
            run(ulysses)?;
        }
        ulysses.barrier()?;
        Ok(duration_ms(start.elapsed()) / iterations as f64)
    };
    let all_to_all_ms = time(&mut |c: &mut C| c.all_to_all(&send, &mut receive, &exchange))?;
    let all_gather_ms = time(&mut |c: &mut C| c.all_gather(&send, &mut gathered, &concat))?;
    Ok(BenchReport {
        tokens: args.bench_tokens,
        bytes: exchange.bytes(),
        all_to_all_ms,
        all_gather_ms,
    })
}

fn duration_ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
