//! Multi-rank generation (issue 11): Ulysses sequence parallel and classifier-free-guidance
//! parallel. One [`Communicator`] trait with two transports (TCP between CPU ranks, NCCL between
//! GPUs), rank start-up (flags, torchrun variables, TCP rendezvous, supervised workers), and the
//! pure sharding of tokens, RoPE and modulation. The sampling loop learns only which branch and
//! which token slice are its own. docs/DESIGN.md ("Multi-GPU") explains how it fits together.

pub mod attention;
pub mod axis;
pub mod check;
pub mod communicator;
pub mod config;
pub mod error;
pub mod guidance;
pub mod layout;
pub mod nccl;
pub mod nccl_search;
pub mod rendezvous;
pub mod sequence;
pub mod shard;
pub mod start;
pub mod supervisor;
pub mod tcp;
pub mod values;

pub use communicator::Communicator;
pub use config::{Launch, ParallelArgs, ParallelConfig, RankEnvironment};
pub use error::ParallelError;
pub use nccl::NcclCommunicator;
pub use tcp::TcpCommunicator;
