//! The one interface both transports implement: collectives over the ranks of a group, on
//! buffers that live where the transport computes (host memory for the CPU transport, device
//! memory for NCCL). Every rank must issue the same collectives in the same order.

use super::axis::{AllToAll, Concat};
use super::error::Result;

/// Collectives over a group of ranks.
pub trait Communicator: Sized {
    /// Memory the collectives read and write (allocate once, reuse every step).
    type Buffer;

    /// This process's rank in the group.
    fn rank(&self) -> usize;

    /// Ranks in the group.
    fn size(&self) -> usize;

    /// Collective: a sub-group of the ranks that pass the same `color`, ordered by rank.
    fn split(&mut self, color: usize) -> Result<Self>;

    /// A buffer of `bytes` bytes, zeroed.
    fn allocate(&mut self, bytes: usize) -> Result<Self::Buffer>;

    /// Copies host bytes into the start of `buffer`.
    fn write(&mut self, buffer: &mut Self::Buffer, host: &[u8]) -> Result<()>;

    /// Copies the start of `buffer` into `host` (waits for queued collectives first).
    fn read(&mut self, buffer: &Self::Buffer, host: &mut [u8]) -> Result<()>;

    /// Collective: splits `send` (shaped `exchange.shape`) along the scatter axis, chunk `j` to
    /// rank `j`, and writes the received chunks concatenated along the gather axis into `receive`.
    fn all_to_all(
        &mut self,
        send: &Self::Buffer,
        receive: &mut Self::Buffer,
        exchange: &AllToAll,
    ) -> Result<()>;

    /// Collective: every rank's `send` (shaped `concat.part_shape`) concatenated in rank order
    /// along `concat.axis` into `receive`.
    fn all_gather(
        &mut self,
        send: &Self::Buffer,
        receive: &mut Self::Buffer,
        concat: &Concat,
    ) -> Result<()>;

    /// Collective: the element-wise sum of the first `count` f32 values over all ranks, in place.
    /// Every rank gets the same bits.
    fn all_reduce_sum(&mut self, buffer: &mut Self::Buffer, count: usize) -> Result<()>;

    /// Collective: the first `bytes` bytes of `root`'s buffer into every rank's buffer.
    fn broadcast(&mut self, buffer: &mut Self::Buffer, bytes: usize, root: usize) -> Result<()>;

    /// Makes the transport's own staging hold exchanges of `bytes` bytes (call between
    /// collectives, when a new window shape needs larger ones; a no-op where none is kept).
    fn reserve_staging(&mut self, bytes: usize) -> Result<()> {
        let _ = bytes;
        Ok(())
    }

    /// Collective: returns once every rank has reached it (and, on a device, its queued work is done).
    fn barrier(&mut self) -> Result<()>;
}
