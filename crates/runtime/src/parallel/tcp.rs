//! The CPU transport: ranks (processes on one or several hosts, or threads of one process in
//! tests) connected pairwise over TCP, buffers in host memory. Every message carries its
//! collective and length, so ranks that issue different collectives fail with a clear error
//! instead of reading garbage. Reductions add contributions in rank order, so all ranks get the
//! same bits.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::axis::{AllToAll, Concat};
use super::communicator::Communicator;
use super::error::{ParallelError, Result};
use super::rendezvous::{self, Rendezvous, UNIQUE_ID_BYTES, network};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Operation {
    AllToAll = 1,
    AllGather = 2,
    Broadcast = 3,
    Barrier = 4,
    Split = 5,
}

fn operation_name(code: u8) -> String {
    [
        Operation::AllToAll,
        Operation::AllGather,
        Operation::Broadcast,
        Operation::Barrier,
        Operation::Split,
    ]
    .into_iter()
    .find(|o| *o as u8 == code)
    .map_or_else(
        || format!("unknown collective {code}"),
        |o| format!("{o:?}"),
    )
}

const LINK_MAGIC: &[u8; 8] = b"SKYLNK01";

/// A group of ranks connected over TCP.
pub struct TcpCommunicator {
    world_rank: usize,
    /// Connection to every other world rank (`None` for this rank).
    links: Arc<Vec<Option<TcpStream>>>,
    /// World ranks of this group, in group order.
    group: Vec<usize>,
    /// This rank's index in `group`.
    rank: usize,
}

impl TcpCommunicator {
    /// Joins the run: rendezvous at `master` (`host:port`), then connects to every rank. Rank 0
    /// passes the listener it bound on `MASTER_PORT` (see [`rendezvous::listen`]).
    pub fn connect(
        rank: usize,
        world_size: usize,
        master: &str,
        master_listener: Option<&TcpListener>,
        timeout: Duration,
    ) -> Result<TcpCommunicator> {
        let fix = "check that this host can open TCP connections to the other ranks' hosts";
        let listener = TcpListener::bind(("0.0.0.0", 0)).map_err(network(
            rank,
            "opening this rank's listener",
            fix,
        ))?;
        let own_port = listener
            .local_addr()
            .map_err(network(rank, "reading this rank's listener port", fix))?
            .port();
        let table = match (rank, master_listener) {
            (0, Some(master_listener)) => rendezvous::serve(
                master_listener,
                world_size,
                own_port,
                [0; UNIQUE_ID_BYTES],
                timeout,
            )?,
            (0, None) => {
                let port = master
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let master_listener =
                    rendezvous::listen(port, rendezvous::port_file_from_environment().as_deref())?;
                rendezvous::serve(
                    &master_listener,
                    world_size,
                    own_port,
                    [0; UNIQUE_ID_BYTES],
                    timeout,
                )?
            }
            _ => rendezvous::join(master, rank, world_size, own_port, timeout)?,
        };
        TcpCommunicator::from_rendezvous(rank, &listener, &table, timeout)
    }

    /// Connects the mesh: this rank dials every lower rank and accepts every higher one.
    pub fn from_rendezvous(
        rank: usize,
        listener: &TcpListener,
        table: &Rendezvous,
        timeout: Duration,
    ) -> Result<TcpCommunicator> {
        let world_size = table.listeners.len();
        let fix = "check that the ranks' hosts can reach each other on any TCP port";
        let mut links: Vec<Option<TcpStream>> = (0..world_size).map(|_| None).collect();
        for (peer, address) in table.listeners.iter().enumerate().take(rank) {
            let mut stream = TcpStream::connect_timeout(address, timeout).map_err(network(
                rank,
                format!("connecting to rank {peer} at {address}"),
                fix,
            ))?;
            stream
                .write_all(LINK_MAGIC)
                .and_then(|()| stream.write_all(&(rank as u32).to_le_bytes()))
                .map_err(network(rank, format!("greeting rank {peer}"), fix))?;
            links[peer] = Some(stream);
        }
        for _ in rank + 1..world_size {
            let (mut stream, address) =
                listener
                    .accept()
                    .map_err(network(rank, "accepting a higher rank", fix))?;
            let mut greeting = [0; 12];
            stream
                .set_read_timeout(Some(timeout))
                .and_then(|()| stream.read_exact(&mut greeting))
                .map_err(network(
                    rank,
                    format!("reading the greeting of {address}"),
                    fix,
                ))?;
            let peer = u32::from_le_bytes(greeting[8..].try_into().expect("4 bytes")) as usize;
            if &greeting[..8] != LINK_MAGIC
                || peer <= rank
                || peer >= world_size
                || links[peer].is_some()
            {
                return Err(ParallelError::Mismatch {
                    rank,
                    message: format!(
                        "{address} connected as rank {peer}, which this rank did not expect"
                    ),
                });
            }
            links[peer] = Some(stream);
        }
        for stream in links.iter().flatten() {
            stream
                .set_read_timeout(None)
                .and_then(|()| stream.set_nodelay(true))
                .map_err(network(rank, "configuring a link", fix))?;
        }
        Ok(TcpCommunicator {
            world_rank: rank,
            links: Arc::new(links),
            group: (0..world_size).collect(),
            rank,
        })
    }

    /// A group of one rank (world size 1: no network).
    pub fn single() -> TcpCommunicator {
        TcpCommunicator {
            world_rank: 0,
            links: Arc::new(vec![None]),
            group: vec![0],
            rank: 0,
        }
    }

    /// `world_size` ranks as threads of this process (tests): each closure gets its communicator.
    pub fn run_threads<T: Send>(
        world_size: usize,
        body: impl Fn(TcpCommunicator) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let master = rendezvous::listen_local()?;
        let address = master
            .local_addr()
            .map_err(network(0, "reading the rendezvous port", "none"))?
            .to_string();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..world_size)
                .map(|rank| {
                    let (body, master, address) = (&body, &master, &address);
                    scope.spawn(move || {
                        let listener = if rank == 0 { Some(master) } else { None };
                        let communicator = TcpCommunicator::connect(
                            rank,
                            world_size,
                            address,
                            listener,
                            rendezvous::DEFAULT_TIMEOUT,
                        )?;
                        body(communicator)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a rank thread panicked"))
                .collect()
        })
    }

    fn link(&self, member: usize) -> &TcpStream {
        self.links[self.group[member]]
            .as_ref()
            .expect("no link to self")
    }

    fn send(&self, member: usize, operation: Operation, payload: &[u8]) -> Result<()> {
        let mut stream = self.link(member);
        let mut header = [0u8; 9];
        header[0] = operation as u8;
        header[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        stream
            .write_all(&header)
            .and_then(|()| stream.write_all(payload))
            .map_err(self.peer_failed(member))
    }

    fn receive(&self, member: usize, operation: Operation, into: &mut [u8]) -> Result<()> {
        let mut stream = self.link(member);
        let mut header = [0u8; 9];
        stream
            .read_exact(&mut header)
            .map_err(self.peer_failed(member))?;
        let length = u64::from_le_bytes(header[1..].try_into().expect("8 bytes")) as usize;
        if header[0] != operation as u8 || length != into.len() {
            return Err(ParallelError::Mismatch {
                rank: self.world_rank,
                message: format!(
                    "rank {} sent {} with {length} bytes where {:?} with {} bytes was expected",
                    self.group[member],
                    operation_name(header[0]),
                    operation,
                    into.len()
                ),
            });
        }
        stream.read_exact(into).map_err(self.peer_failed(member))
    }

    fn peer_failed(&self, member: usize) -> impl FnOnce(std::io::Error) -> ParallelError {
        let (rank, peer) = (self.world_rank, self.group[member]);
        move |source| ParallelError::PeerStopped { rank, peer, source }
    }

    /// Sends `outgoing(member)` to every other member and receives each member's message into
    /// `incoming(member)`, all at once (one writer thread per peer, so no order can deadlock).
    fn exchange(
        &self,
        operation: Operation,
        outgoing: &(dyn Fn(usize) -> Vec<u8> + Sync),
        incoming: &mut [Vec<u8>],
    ) -> Result<()> {
        let size = self.group.len();
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..size)
                .filter(|member| *member != self.rank)
                .map(|member| scope.spawn(move || self.send(member, operation, &outgoing(member))))
                .collect();
            let mut outcome = Ok(());
            for (member, into) in incoming.iter_mut().enumerate() {
                if member != self.rank && outcome.is_ok() {
                    outcome = self.receive(member, operation, into);
                }
            }
            for writer in writers {
                let written = writer.join().expect("a writer thread panicked");
                if outcome.is_ok() {
                    outcome = written;
                }
            }
            outcome
        })
    }

    fn check_length(&self, what: &str, buffer: &[u8], needed: usize) -> Result<()> {
        if buffer.len() < needed {
            return Err(ParallelError::Buffer(format!(
                "{what}: buffer of {} bytes, the collective needs {needed}",
                buffer.len()
            )));
        }
        Ok(())
    }
}

impl Communicator for TcpCommunicator {
    type Buffer = Vec<u8>;

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.group.len()
    }

    fn split(&mut self, color: usize) -> Result<TcpCommunicator> {
        let mut colors = vec![vec![0u8; 8]; self.size()];
        colors[self.rank] = (color as u64).to_le_bytes().to_vec();
        let own = colors[self.rank].clone();
        self.exchange(Operation::Split, &|_| own.clone(), &mut colors)?;
        let group: Vec<usize> = self
            .group
            .iter()
            .zip(&colors)
            .filter(|(_, c)| **c == own)
            .map(|(world, _)| *world)
            .collect();
        let rank = group
            .iter()
            .position(|w| *w == self.world_rank)
            .expect("own color");
        Ok(TcpCommunicator {
            world_rank: self.world_rank,
            links: Arc::clone(&self.links),
            group,
            rank,
        })
    }

    fn allocate(&mut self, bytes: usize) -> Result<Vec<u8>> {
        Ok(vec![0; bytes])
    }

    fn write(&mut self, buffer: &mut Vec<u8>, host: &[u8]) -> Result<()> {
        self.check_length("write", buffer, host.len())?;
        buffer[..host.len()].copy_from_slice(host);
        Ok(())
    }

    fn read(&mut self, buffer: &Vec<u8>, host: &mut [u8]) -> Result<()> {
        self.check_length("read", buffer, host.len())?;
        host.copy_from_slice(&buffer[..host.len()]);
        Ok(())
    }

    fn all_to_all(
        &mut self,
        send: &Vec<u8>,
        receive: &mut Vec<u8>,
        exchange: &AllToAll,
    ) -> Result<()> {
        if exchange.parts != self.size() {
            return Err(ParallelError::Buffer(format!(
                "all-to-all over {} parts in a group of {}",
                exchange.parts,
                self.size()
            )));
        }
        self.check_length("all-to-all send", send, exchange.bytes())?;
        self.check_length("all-to-all receive", receive, exchange.bytes())?;
        let part = exchange.part_bytes();
        let staged = exchange.pack(&send[..exchange.bytes()]);
        let mut incoming = vec![vec![0u8; part]; self.size()];
        incoming[self.rank].copy_from_slice(&staged[self.rank * part..(self.rank + 1) * part]);
        self.exchange(
            Operation::AllToAll,
            &|member| staged[member * part..(member + 1) * part].to_vec(),
            &mut incoming,
        )?;
        let output = exchange.concat().unpack(&incoming.concat());
        receive[..output.len()].copy_from_slice(&output);
        Ok(())
    }

    fn all_gather(&mut self, send: &Vec<u8>, receive: &mut Vec<u8>, concat: &Concat) -> Result<()> {
        if concat.parts != self.size() {
            return Err(ParallelError::Buffer(format!(
                "all-gather of {} parts in a group of {}",
                concat.parts,
                self.size()
            )));
        }
        let part = concat.part_bytes();
        self.check_length("all-gather send", send, part)?;
        self.check_length("all-gather receive", receive, concat.output_bytes())?;
        let own = &send[..part];
        let mut incoming = vec![vec![0u8; part]; self.size()];
        incoming[self.rank].copy_from_slice(own);
        self.exchange(Operation::AllGather, &|_| own.to_vec(), &mut incoming)?;
        let output = concat.unpack(&incoming.concat());
        receive[..output.len()].copy_from_slice(&output);
        Ok(())
    }

    fn all_reduce_sum(&mut self, buffer: &mut Vec<u8>, count: usize) -> Result<()> {
        let bytes = count * 4;
        self.check_length("all-reduce", buffer, bytes)?;
        let concat = Concat::new(vec![count * 4], 0, self.size(), 1)?;
        let mut gathered = vec![0u8; concat.output_bytes()];
        self.all_gather(&buffer[..bytes].to_vec(), &mut gathered, &concat)?;
        let contributions: Vec<f32> = bytemuck::pod_collect_to_vec(&gathered);
        let sums: Vec<f32> = (0..count)
            .map(|i| (0..self.size()).fold(0.0, |sum, r| sum + contributions[r * count + i]))
            .collect();
        buffer[..bytes].copy_from_slice(bytemuck::cast_slice(&sums));
        Ok(())
    }

    fn broadcast(&mut self, buffer: &mut Vec<u8>, bytes: usize, root: usize) -> Result<()> {
        self.check_length("broadcast", buffer, bytes)?;
        if root >= self.size() {
            return Err(ParallelError::Buffer(format!(
                "broadcast from rank {root} in a group of {}",
                self.size()
            )));
        }
        if self.rank == root {
            let payload = &buffer[..bytes];
            let this = &*self;
            std::thread::scope(|scope| {
                let writers: Vec<_> = (0..self.size())
                    .filter(|m| *m != root)
                    .map(|member| {
                        scope.spawn(move || this.send(member, Operation::Broadcast, payload))
                    })
                    .collect();
                writers
                    .into_iter()
                    .map(|w| w.join().expect("a writer thread panicked"))
                    .collect::<Result<Vec<()>>>()
            })?;
            Ok(())
        } else {
            self.receive(root, Operation::Broadcast, &mut buffer[..bytes])
        }
    }

    fn barrier(&mut self) -> Result<()> {
        let mut incoming = vec![Vec::new(); self.size()];
        self.exchange(Operation::Barrier, &|_| Vec::new(), &mut incoming)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_that_issue_different_collectives_fail_with_a_message() {
        let master = rendezvous::listen_local().unwrap();
        let address = master.local_addr().unwrap().to_string();
        let outcomes = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|rank| {
                    let (master, address) = (&master, &address);
                    scope.spawn(move || -> Result<()> {
                        let listener = (rank == 0).then_some(master);
                        let mut group = TcpCommunicator::connect(
                            rank,
                            2,
                            address,
                            listener,
                            rendezvous::DEFAULT_TIMEOUT,
                        )?;
                        if rank == 0 {
                            group.barrier()
                        } else {
                            let mut buffer = vec![0u8; 4];
                            group.broadcast(&mut buffer, 4, 0)
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        let messages: Vec<String> = outcomes
            .into_iter()
            .map(|o| o.unwrap_err().to_string())
            .collect();
        assert!(
            messages[1].contains(
                "rank 0 sent Barrier with 0 bytes where Broadcast with 4 bytes was expected"
            ),
            "{messages:?}"
        );
    }

    #[test]
    fn split_groups_ranks_by_color_in_rank_order_and_collectives_stay_inside() {
        let results = TcpCommunicator::run_threads(5, |mut world| {
            let rank = world.rank();
            let mut group = world.split(rank % 2)?;
            let mut buffer = (group.rank() as f32 + 1.0).to_le_bytes().to_vec();
            group.all_reduce_sum(&mut buffer, 1)?;
            let mut root = vec![rank as u8];
            group.broadcast(&mut root, 1, group.size() - 1)?;
            world.barrier()?;
            Ok((
                group.rank(),
                group.size(),
                f32::from_le_bytes(buffer[..4].try_into().unwrap()),
                root[0],
            ))
        })
        .unwrap();
        // Even ranks 0, 2, 4 form a group of 3 (sum 1+2+3, last member rank 4); odd 1, 3 a group of 2.
        assert_eq!(
            results,
            vec![
                (0, 3, 6.0, 4),
                (0, 2, 3.0, 3),
                (1, 3, 6.0, 4),
                (1, 2, 3.0, 3),
                (2, 3, 6.0, 4)
            ]
        );
    }

    #[test]
    fn a_rank_of_another_world_size_is_refused_at_rendezvous() {
        let master = rendezvous::listen_local().unwrap();
        let address = master.local_addr().unwrap().to_string();
        let joiner = std::thread::spawn(move || {
            rendezvous::join(&address, 1, 3, 0, std::time::Duration::from_secs(5))
        });
        let error = rendezvous::serve(
            &master,
            2,
            0,
            [0; UNIQUE_ID_BYTES],
            rendezvous::DEFAULT_TIMEOUT,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("rank 1") && error.contains("WORLD_SIZE=3, rank 0 has 2"),
            "{error}"
        );
        assert!(joiner.join().unwrap().is_err());
    }
}
