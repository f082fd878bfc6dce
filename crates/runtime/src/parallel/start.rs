//! How a model-running command (`generate`) joins a multi-rank run: as the supervisor of one
//! worker per rank on this host, or as one rank (a supervised worker or a torchrun process) with
//! its world communicator (TCP for `--backend cpu`, NCCL on its GPU for `--backend cuda`).

use super::communicator::Communicator;
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
use crate::tensor::Tensor;

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
        let library = nccl::load(&NcclSearch::from_environment())?;
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
        tracing::info!(
            "NCCL {} ({}): rank {} of {} on GPU {device}",
            library.version,
            library.path.display(),
            environment.rank,
            environment.world_size
        );
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
        let listener =
            rendezvous::listen(port, rendezvous::port_file_from_environment().as_deref())?;
        let id = nccl::unique_id()?;
        Ok(rendezvous::serve(&listener, world_size, 0, id, rendezvous::DEFAULT_TIMEOUT)?.shared_id)
    } else {
        Ok(rendezvous::join(master, rank, world_size, 0, rendezvous::DEFAULT_TIMEOUT)?.shared_id)
    }
}

impl RankContext {
    /// Collective over all ranks: rank 0's `tensors` on every rank (the other ranks pass
    /// `None`), e.g. the prompt contexts only rank 0 encodes.
    pub fn broadcast_tensors(
        &mut self,
        tensors: Option<&[Tensor]>,
    ) -> crate::error::Result<Vec<Tensor>> {
        match &mut self.world {
            World::Tcp(world) => broadcast_tensors(world, tensors),
            World::Nccl(world) => broadcast_tensors(world, tensors),
        }
    }

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

/// Collective over all ranks: rank 0's `tensors` (a count, then per tensor its rank, dims and
/// float32 values, little-endian) broadcast in two steps, the length first.
fn broadcast_tensors<C: Communicator>(
    world: &mut C,
    tensors: Option<&[Tensor]>,
) -> crate::error::Result<Vec<Tensor>> {
    let mut payload = Vec::new();
    if let Some(tensors) = tensors {
        payload.extend((tensors.len() as u64).to_le_bytes());
        for tensor in tensors {
            payload.extend((tensor.shape.len() as u64).to_le_bytes());
            for &dim in &tensor.shape {
                payload.extend((dim as u64).to_le_bytes());
            }
            payload.extend_from_slice(bytemuck::cast_slice(&tensor.data));
        }
    }
    let mut length = world.allocate(8)?;
    world.write(&mut length, &(payload.len() as u64).to_le_bytes())?;
    world.broadcast(&mut length, 8, 0)?;
    let mut bytes = [0u8; 8];
    world.read(&length, &mut bytes)?;
    let length = u64::from_le_bytes(bytes) as usize;
    let mut buffer = world.allocate(length)?;
    if world.rank() == 0 {
        world.write(&mut buffer, &payload)?;
    }
    world.broadcast(&mut buffer, length, 0)?;
    let mut payload = vec![0u8; length];
    world.read(&buffer, &mut payload)?;
    let mut cursor = Cursor {
        bytes: &payload,
        offset: 0,
    };
    let count = cursor.word()?;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let rank = cursor.word()?;
        let shape = (0..rank)
            .map(|_| cursor.word())
            .collect::<Result<Vec<usize>>>()?;
        let data = cursor.take(shape.iter().product::<usize>() * 4)?;
        out.push(Tensor::new(shape, bytemuck::pod_collect_to_vec(data))?);
    }
    Ok(out)
}

/// Reads a broadcast payload front to back.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8]> {
        let taken = self
            .offset
            .checked_add(length)
            .and_then(|end| self.bytes.get(self.offset..end))
            .ok_or_else(|| ParallelError::Buffer("rank 0 broadcast malformed tensors".into()))?;
        self.offset += length;
        Ok(taken)
    }

    fn word(&mut self) -> Result<usize> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")) as usize)
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
    if role.ulysses_group.len() > 1 || sequence_path_forced() {
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
        inner.dit.set_sequence_parallel(Some(Box::new(sequence)));
    }
    let result = match role.branches {
        Branches::Only(branch) => world
            .split(role.guidance_color())
            .map_err(crate::error::RuntimeError::from)
            .and_then(|pair| {
                let mut pair = GuidancePair::new(Borrowed(&mut *inner), branch, pair)?;
                run(&mut pair)
            }),
        Branches::Both => run(inner),
    };
    inner.dit.set_sequence_parallel(None);
    result
}

/// `SKYREELS_ULYSSES_AT_ONE=1` runs the sequence-parallel path even in a Ulysses group of one
/// rank (all-to-alls, gathers and the TeaCache agreement through the communicator), so that one
/// GPU can measure what the path costs and check it reproduces the plain forward.
fn sequence_path_forced() -> bool {
    std::env::var("SKYREELS_ULYSSES_AT_ONE").is_ok_and(|v| v == "1")
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

    fn release_after_sampling(&mut self) {
        self.0.release_after_sampling();
    }
}
