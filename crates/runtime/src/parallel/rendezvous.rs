//! Rank start-up over TCP, as torchrun's store does: rank 0 listens at `MASTER_ADDR:MASTER_PORT`,
//! every other rank connects and says who it is and where its own listener is, and rank 0 answers
//! each with the table of all ranks' listeners and a 128-byte id it created (NCCL's unique id; the
//! CPU transport leaves it zero). The CPU transport then connects the ranks to each other.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::error::{ParallelError, Result};

/// Bytes of NCCL's `ncclUniqueId`.
pub const UNIQUE_ID_BYTES: usize = 128;

/// How long ranks wait for each other at start-up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

const MAGIC: &[u8; 8] = b"SKYRDV01";

/// What rendezvous hands every rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// Each rank's listener, by rank.
    pub listeners: Vec<SocketAddr>,
    /// Rank 0's id (e.g. NCCL's unique id).
    pub shared_id: [u8; UNIQUE_ID_BYTES],
}

/// Maps an I/O error of `rank` to a network error with its context and fix.
pub(super) fn network(
    rank: usize,
    context: impl Into<String>,
    fix: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> ParallelError {
    let context = context.into();
    let fix = fix.into();
    move |source| ParallelError::Network {
        rank,
        context,
        source,
        fix,
    }
}

fn mismatch(rank: usize, message: impl Into<String>) -> ParallelError {
    ParallelError::Mismatch {
        rank,
        message: message.into(),
    }
}

/// Rank 0: listens on `master` (all interfaces at `MASTER_PORT`).
pub fn listen(port: u16) -> Result<TcpListener> {
    TcpListener::bind(("0.0.0.0", port)).map_err(network(
        0,
        format!("listening for the other ranks on port {port}"),
        "set MASTER_PORT to a free port on rank 0's host",
    ))
}

fn write_u32(stream: &mut TcpStream, value: u32) -> std::io::Result<()> {
    stream.write_all(&value.to_le_bytes())
}

fn read_u32(stream: &mut TcpStream) -> std::io::Result<u32> {
    let mut bytes = [0; 4];
    stream.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn write_address(stream: &mut TcpStream, address: &SocketAddr) -> std::io::Result<()> {
    let text = address.to_string();
    write_u32(stream, text.len() as u32)?;
    stream.write_all(text.as_bytes())
}

fn read_address(stream: &mut TcpStream) -> std::io::Result<SocketAddr> {
    let length = read_u32(stream)? as usize;
    if length > 256 {
        return Err(std::io::Error::other("address too long"));
    }
    let mut text = vec![0; length];
    stream.read_exact(&mut text)?;
    String::from_utf8_lossy(&text)
        .parse()
        .map_err(std::io::Error::other)
}

/// Rank 0: accepts the other `world_size − 1` ranks on `listener`, then sends every rank the
/// table and `shared_id`. `own_port` is rank 0's own listener port.
pub fn serve(
    listener: &TcpListener,
    world_size: usize,
    own_port: u16,
    shared_id: [u8; UNIQUE_ID_BYTES],
    timeout: Duration,
) -> Result<Rendezvous> {
    let fix =
        "start every rank within the timeout with the same WORLD_SIZE, MASTER_ADDR and MASTER_PORT";
    let deadline = Instant::now() + timeout;
    listener.set_nonblocking(true).map_err(network(
        0,
        "configuring the rendezvous listener",
        fix,
    ))?;
    let mut joined: Vec<Option<(TcpStream, SocketAddr)>> = (0..world_size).map(|_| None).collect();
    let mut own_address = None;
    let mut waiting = world_size - 1;
    while waiting > 0 {
        let (mut stream, peer) = match listener.accept() {
            Ok(pair) => pair,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let missing: Vec<String> = (1..world_size)
                        .filter(|r| joined[*r].is_none())
                        .map(|r| r.to_string())
                        .collect();
                    return Err(network(
                        0,
                        format!("waiting for rank(s) {} to join", missing.join(", ")),
                        fix,
                    )(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("timed out after {} s", timeout.as_secs()),
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(network(0, "accepting a rank", fix)(e)),
        };
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(timeout)))
            .map_err(network(0, "configuring a rank's connection", fix))?;
        let mut magic = [0; 8];
        stream.read_exact(&mut magic).map_err(network(
            0,
            format!("reading the greeting of {peer}"),
            fix,
        ))?;
        if &magic != MAGIC {
            return Err(mismatch(
                0,
                format!(
                    "{peer} connected to the rendezvous port but is not a skyreels rank of this version"
                ),
            ));
        }
        let hello = (|| -> std::io::Result<(u32, u32, u16)> {
            let rank = read_u32(&mut stream)?;
            let world = read_u32(&mut stream)?;
            let mut port = [0; 2];
            stream.read_exact(&mut port)?;
            Ok((rank, world, u16::from_le_bytes(port)))
        })()
        .map_err(network(0, format!("reading the greeting of {peer}"), fix))?;
        let (rank, world, port) = (hello.0 as usize, hello.1 as usize, hello.2);
        if world != world_size {
            return Err(mismatch(
                0,
                format!("rank {rank} ({peer}) says WORLD_SIZE={world}, rank 0 has {world_size}"),
            ));
        }
        if rank == 0 || rank >= world_size || joined[rank].is_some() {
            return Err(mismatch(
                0,
                format!("{peer} claims rank {rank}, which is out of range or taken"),
            ));
        }
        if own_address.is_none() {
            own_address = stream
                .local_addr()
                .ok()
                .map(|a| SocketAddr::new(a.ip(), own_port));
        }
        joined[rank] = Some((stream, SocketAddr::new(peer.ip(), port)));
        waiting -= 1;
    }
    let mut listeners =
        vec![own_address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], own_port)))];
    listeners.extend(
        joined[1..]
            .iter()
            .map(|j| j.as_ref().expect("all joined").1),
    );
    for (rank, entry) in joined.iter_mut().enumerate().skip(1) {
        let stream = &mut entry.as_mut().expect("all joined").0;
        // Rank 0 as this rank reached it (the address it connected to is one it can reach).
        let own = stream
            .local_addr()
            .map(|a| SocketAddr::new(a.ip(), own_port))
            .unwrap_or(listeners[0]);
        (|| -> std::io::Result<()> {
            write_u32(stream, world_size as u32)?;
            write_address(stream, &own)?;
            for address in &listeners[1..] {
                write_address(stream, address)?;
            }
            stream.write_all(&shared_id)?;
            stream.flush()
        })()
        .map_err(network(0, format!("answering rank {rank}"), fix))?;
    }
    Ok(Rendezvous {
        listeners,
        shared_id,
    })
}

/// Ranks other than 0: connects to `master` (retrying until `timeout`), announces `rank` and its
/// listener port, and receives the table and the shared id.
pub fn join(
    master: &str,
    rank: usize,
    world_size: usize,
    own_port: u16,
    timeout: Duration,
) -> Result<Rendezvous> {
    let fix = "check that rank 0 runs and that MASTER_ADDR:MASTER_PORT reaches it from this host";
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        // Every address of the name (localhost may be ::1 first while rank 0 listens on IPv4).
        let attempt = master.to_socket_addrs().and_then(|addresses| {
            let mut last = std::io::Error::other("the name has no address");
            for address in addresses {
                match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(last)
        });
        match attempt {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => {
                return Err(network(
                    rank,
                    format!("connecting to rank 0 at {master}"),
                    fix,
                )(e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let context = format!("rendezvous with rank 0 at {master}");
    (|| -> std::io::Result<Rendezvous> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        stream.write_all(MAGIC)?;
        write_u32(&mut stream, rank as u32)?;
        write_u32(&mut stream, world_size as u32)?;
        stream.write_all(&own_port.to_le_bytes())?;
        stream.flush()?;
        let world = read_u32(&mut stream)? as usize;
        if world != world_size {
            return Err(std::io::Error::other(format!(
                "rank 0 answered for world size {world}"
            )));
        }
        let listeners = (0..world)
            .map(|_| read_address(&mut stream))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut shared_id = [0; UNIQUE_ID_BYTES];
        stream.read_exact(&mut shared_id)?;
        Ok(Rendezvous {
            listeners,
            shared_id,
        })
    })()
    .map_err(network(rank, context, fix))
}

/// A rendezvous listener on a free loopback port (tests and single-host runs pick its port).
pub fn listen_local() -> Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0)).map_err(network(
        0,
        "listening on a loopback port",
        "check that this host allows local TCP connections",
    ))
}
