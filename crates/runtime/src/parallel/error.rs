use std::path::PathBuf;

/// Failures of multi-rank generation; each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    /// Flags or launch environment that cannot form a valid set of ranks.
    #[error("{message}\n  fix: {fix}")]
    Config {
        /// What is wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// The NCCL shared library could not be found or loaded.
    #[error(
        "NCCL library (libnccl.so.2) not found or not loadable (tried: {tried})\n  fix: install NCCL (`pip install nvidia-nccl-cu13`, which PyTorch installs) or point SKYREELS_NCCL_LIBRARY at libnccl.so.2"
    )]
    NcclMissing {
        /// Every path or name tried, with why it failed.
        tried: String,
    },
    /// The CUDA driver library could not be loaded.
    #[error(
        "CUDA driver library (libcuda.so.1) not found: {message}\n  fix: run on a machine with an NVIDIA driver, or use --backend cpu"
    )]
    CudaDriverMissing {
        /// The loader's message.
        message: String,
    },
    /// An NCCL call failed.
    #[error("NCCL {call} failed on rank {rank}: {message}\n  fix: {fix}")]
    Nccl {
        /// The NCCL function.
        call: &'static str,
        /// This process's rank in the communicator.
        rank: usize,
        /// NCCL's error string.
        message: String,
        /// How to fix it.
        fix: &'static str,
    },
    /// A CUDA driver call failed.
    #[error("CUDA: {context}: {message}")]
    Cuda {
        /// What we were doing.
        context: String,
        /// The driver's message.
        message: String,
    },
    /// A TCP connection between ranks failed (rendezvous or the CPU transport).
    #[error("rank {rank}: {context}: {source}\n  fix: {fix}")]
    Network {
        /// This process's rank.
        rank: usize,
        /// What we were doing.
        context: String,
        /// The socket error.
        source: std::io::Error,
        /// How to fix it.
        fix: String,
    },
    /// Another rank stopped while this one exchanged data with it (a consequence, not the cause).
    #[error(
        "rank {rank}: rank {peer} stopped during a collective ({source})\n  fix: see rank {peer}'s own error"
    )]
    PeerStopped {
        /// This process's rank.
        rank: usize,
        /// The rank that stopped.
        peer: usize,
        /// The socket error.
        source: std::io::Error,
    },
    /// Ranks disagreed about a collective (a programming error, or ranks of different runs).
    #[error("rank {rank}: {message}\n  fix: run every rank with the same binary and arguments")]
    Mismatch {
        /// This process's rank.
        rank: usize,
        /// What differed.
        message: String,
    },
    /// The self-check's distributed result differs from the single-rank one.
    #[error(
        "rank {rank}: {message}\n  fix: this is a bug in the multi-rank path; report it with this output"
    )]
    CheckFailed {
        /// This process's rank.
        rank: usize,
        /// What differed, and by how much.
        message: String,
    },
    /// A buffer does not fit the collective it is passed to.
    #[error("{0}")]
    Buffer(String),
    /// A worker process of a supervised run failed.
    #[error(
        "rank {rank} of {world_size} failed ({status}); stopped the other ranks\n  fix: see rank {rank}'s error above (its lines start with `[rank {rank}]`)"
    )]
    RankFailed {
        /// The rank that failed first.
        rank: usize,
        /// World size of the run.
        world_size: usize,
        /// Its exit status.
        status: String,
    },
    /// A worker process could not be started.
    #[error("cannot start rank {rank} ({program}): {source}")]
    Spawn {
        /// The rank.
        rank: usize,
        /// The program started.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ParallelError {
    /// The exit code of a rank that fails with this error: [`PEER_STOPPED_EXIT_CODE`] when it
    /// only followed another rank's failure (so a supervisor reports the cause), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            ParallelError::PeerStopped { .. } => PEER_STOPPED_EXIT_CODE,
            _ => 1,
        }
    }
}

/// Exit code of a rank that stopped because another rank did.
pub const PEER_STOPPED_EXIT_CODE: i32 = 3;

/// Result alias for the parallel module.
pub type Result<T, E = ParallelError> = std::result::Result<T, E>;

/// A configuration error with its fix.
pub(crate) fn config_error(message: impl Into<String>, fix: impl Into<String>) -> ParallelError {
    ParallelError::Config {
        message: message.into(),
        fix: fix.into(),
    }
}
