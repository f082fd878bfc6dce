//! How a model-running command (`generate`) joins a multi-rank run: as the supervisor of one
//! worker per rank on this host, or as one rank (a supervised worker or a torchrun process) with
//! its world communicator (TCP for `--backend cpu`, NCCL on its GPU for `--backend cuda`).

use super::config::{Launch, ParallelConfig};
use super::error::{ParallelError, Result};
use super::guidance::GuidancePair;
use super::layout::{Branches, RankRole};
use super::nccl::{self, NcclCommunicator};
use super::nccl_search::NcclSearch;
use super::rendezvous::{self, UNIQUE_ID_BYTES};
use super::sequence::UlyssesDit;
use super::supervisor;
use super::tcp::TcpCommunicator;
use super::values::ValueTransfer;
use crate::pipeline::denoiser::{Denoiser, DitDenoiser};

/// Staging the NCCL world communicator gets (its contiguous gathers need none).
const WORLD_STAGING_BYTES: usize = 1 << 20;

/// What this process is in the run.
pub enum Joined {
    /// World size 1: no communication.
    Single,
    /// This process started and supervised the workers, which did the work; nothing left to do.
    Supervised,
    /// One rank of the run.
    Rank(Box<RankContext>),
}

/// A rank with its world communicator.
pub struct RankContext {
    /// Its place in the layout.
    pub role: RankRole,
    /// Its GPU (`--backend cuda`).
    pub device: Option<usize>,
    world: World,
}

enum World {
    Tcp(TcpCommunicator),
    Nccl(NcclCommunicator),
}

/// Joins the run `config` describes (call after validating the flags, before loading models).
pub fn join(config: &ParallelConfig, cuda: bool) -> Result<Joined> {
    let environment = match Launch::decide(config, |name| std::env::var(name).ok())? {
        Launch::Single => return Ok(Joined::Single),
        Launch::Supervise { world_size } => {
            if cuda {
                config.device_for(0, world_size, Some(nccl::device_count()?))?;
            }
            let program = std::env::current_exe().map_err(|source| ParallelError::Spawn {
                rank: 0,
                program: "the running binary".into(),
                source,
            })?;
            let arguments: Vec<_> = std::env::args_os().skip(1).collect();
            supervisor::supervise(world_size, &program, &arguments)?;
            return Ok(Joined::Supervised);
        }
        Launch::Rank(environment) => environment,
    };
    let master = format!("{}:{}", environment.master_addr, environment.master_port);
    let role = config.role(environment.rank);
    if cuda {
        nccl::load(&NcclSearch::from_environment())?;
        let available = nccl::device_count()?;
        let device = config.device_for(
            environment.local_rank,
            environment.local_world_size,
            Some(available),
        )?;
        let unique_id = share_unique_id(environment.rank, environment.world_size, &master)?;
        let world = NcclCommunicator::new(
            device,
            environment.rank,
            environment.world_size,
            unique_id,
            WORLD_STAGING_BYTES,
        )?;
        Ok(Joined::Rank(Box::new(RankContext {
            role,
            device: Some(device),
            world: World::Nccl(world),
        })))
    } else {
        let world = TcpCommunicator::connect(
            environment.rank,
            environment.world_size,
            &master,
            None,
            rendezvous::DEFAULT_TIMEOUT,
        )?;
        Ok(Joined::Rank(Box::new(RankContext {
            role,
            device: None,
            world: World::Tcp(world),
        })))
    }
}

/// Rank 0 creates NCCL's unique id and hands it over the TCP rendezvous.
pub(crate) fn share_unique_id(
    rank: usize,
    world_size: usize,
    master: &str,
) -> Result<[u8; UNIQUE_ID_BYTES]> {
    if world_size == 1 {
        return nccl::unique_id();
    }
    if rank == 0 {
        let port = master
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let listener = rendezvous::listen(port)?;
        let id = nccl::unique_id()?;
        Ok(rendezvous::serve(&listener, world_size, 0, id, rendezvous::DEFAULT_TIMEOUT)?.shared_id)
    } else {
        Ok(rendezvous::join(master, rank, world_size, 0, rendezvous::DEFAULT_TIMEOUT)?.shared_id)
    }
}

impl RankContext {
    /// Whether this rank writes the outputs (rank 0).
    pub fn writes_output(&self) -> bool {
        self.role.writes_output()
    }

    /// Runs `run` with this rank's view of `inner`: with Ulysses degree > 1 the DiT runs on this
    /// rank's token slice with its group ([`UlyssesDit`]); with `--cfg-parallel` a
    /// [`GuidancePair`] computes only this rank's branch and exchanges velocities with the pair.
    /// Collective: every rank splits the world the same way, in the same order.
    pub fn run_denoiser<R>(
        &mut self,
        inner: &mut DitDenoiser,
        run: impl FnOnce(&mut dyn Denoiser) -> crate::error::Result<R>,
    ) -> crate::error::Result<R> {
        match &mut self.world {
            World::Tcp(world) => run_rank(&self.role, world, inner, run),
            World::Nccl(world) => run_rank(&self.role, world, inner, run),
        }
    }
}

fn run_rank<C, R>(
    role: &RankRole,
    world: &mut C,
    inner: &mut DitDenoiser,
    run: impl FnOnce(&mut dyn Denoiser) -> crate::error::Result<R>,
) -> crate::error::Result<R>
where
    C: ValueTransfer + Send + 'static,
    C::Buffer: Send,
{
    if role.ulysses_group.len() > 1 {
        let group = world.split(role.ulysses_color())?;
        let config = &inner.dit.component.config;
        let (num_heads, head_dim, out_dim) = (config.num_heads, config.head_dim(), config.out_dim);
        let attention = inner.dit.load_sharded_attention(num_heads / group.size())?;
        tracing::info!(
            "sequence parallel: rank {} of a Ulysses group of {}, attention over {} of {num_heads} heads",
            group.rank(),
            group.size(),
            num_heads / group.size()
        );
        let sequence = UlyssesDit::new(group, attention, num_heads, head_dim, out_dim)?;
        inner.dit.set_sequence_parallel(Box::new(sequence));
    }
    match role.branches {
        Branches::Only(branch) => {
            let pair = world.split(role.guidance_color())?;
            let mut pair = GuidancePair::new(Borrowed(inner), branch, pair)?;
            run(&mut pair)
        }
        Branches::Both => run(inner),
    }
}

/// A borrowed denoiser as an owned one.
struct Borrowed<'a>(&'a mut dyn Denoiser);

impl Denoiser for Borrowed<'_> {
    fn velocity(
        &mut self,
        latents: &crate::tensor::Tensor,
        timesteps: &[f32],
        branch: crate::teacache::Branch,
        row: usize,
        cache: Option<&mut crate::teacache::TeaCache>,
    ) -> crate::error::Result<crate::tensor::Tensor> {
        self.0.velocity(latents, timesteps, branch, row, cache)
    }

    fn has_unconditional(&self) -> bool {
        self.0.has_unconditional()
    }
}
