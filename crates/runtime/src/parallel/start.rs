//! How a model-running command (`generate`) joins a multi-rank run: as the supervisor of one
//! worker per rank on this host, or as one rank (a supervised worker or a torchrun process) with
//! its world communicator (TCP for `--backend cpu`, NCCL on its GPU for `--backend cuda`).

use super::communicator::Communicator;
use super::config::{Launch, ParallelConfig};
use super::error::{ParallelError, Result, config_error};
use super::guidance::GuidancePair;
use super::layout::{Branches, RankRole};
use super::nccl::{self, NcclCommunicator};
use super::nccl_search::NcclSearch;
use super::rendezvous::{self, UNIQUE_ID_BYTES};
use super::supervisor;
use super::tcp::TcpCommunicator;
use crate::pipeline::denoiser::Denoiser;

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

    /// Runs `run` with this rank's view of `inner`: with `--cfg-parallel` and Ulysses degree 1, a
    /// [`GuidancePair`] that computes only this rank's branch and exchanges velocities with the
    /// pair. Sequence parallel is refused until the DiT's attention seam is wired.
    pub fn run_denoiser<R>(
        &mut self,
        inner: &mut dyn Denoiser,
        run: impl FnOnce(&mut dyn Denoiser) -> crate::error::Result<R>,
    ) -> crate::error::Result<R> {
        let branch = match self.role.branches {
            Branches::Only(branch) if self.role.ulysses_group.len() == 1 => branch,
            _ => {
                return Err(config_error(
                    "Ulysses sequence parallel is not wired into the DiT yet",
                    "use --cfg-parallel alone (Ulysses degree 1)",
                )
                .into());
            }
        };
        let color = self.role.guidance_color();
        match &mut self.world {
            World::Tcp(world) => {
                let mut pair = GuidancePair::new(Borrowed(inner), branch, world.split(color)?)?;
                run(&mut pair)
            }
            World::Nccl(world) => {
                let mut pair = GuidancePair::new(Borrowed(inner), branch, world.split(color)?)?;
                run(&mut pair)
            }
        }
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
