//! Rank start-up over TCP, as torchrun's store does: rank 0 listens at `MASTER_ADDR:MASTER_PORT`,
//! every other rank connects and says who it is and where its own listener is, and rank 0 answers
//! each with the table of all ranks' listeners and a 128-byte id it created (NCCL's unique id; the
//! CPU transport leaves it zero). The CPU transport then connects the ranks to each other.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::variables;
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

/// Where rank 0 started by the supervisor reports its port ([`variables::RENDEZVOUS_PORT_FILE`]).
pub fn port_file_from_environment() -> Option<PathBuf> {
    std::env::var_os(variables::RENDEZVOUS_PORT_FILE).map(PathBuf::from)
}

/// Rank 0: listens on `master` (all interfaces at `MASTER_PORT`). With `report_to` (a rank 0
/// the supervisor started, [`port_file_from_environment`]) it listens on a free port instead and
/// writes the port to that file for the supervisor, which starts the other ranks with it.
pub fn listen(port: u16, report_to: Option<&Path>) -> Result<TcpListener> {
    let port = if report_to.is_some() { 0 } else { port };
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(network(
        0,
        format!("listening for the other ranks on port {port}"),
        "set MASTER_PORT to a free port on rank 0's host",
    ))?;
    if let Some(path) = report_to {
        report_port(&listener, path).map_err(network(
            0,
            format!("writing the rendezvous port to {}", path.display()),
            "check that the temporary directory is writable",
        ))?;
    }
    Ok(listener)
}

/// Writes `listener`'s port to `path` whole: to a sibling file first, then renamed, so the reader
/// never sees a partial number.
fn report_port(listener: &TcpListener, path: &Path) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let partial = path.with_extension("partial");
    fs_err::write(&partial, port.to_string())?;
    fs_err::rename(&partial, path)
}

/// Waits until rank 0 (`child`) has written its rendezvous port to `path` (see [`listen`]).
/// `Ok(None)` when rank 0 exited first: its own error says why.
pub fn wait_for_port(
    path: &Path,
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<Option<u16>> {
    let started = Instant::now();
    let fix = "check that rank 0 starts (its lines start with `[rank 0]`)";
    loop {
        if let Ok(text) = fs_err::read_to_string(path)
            && let Ok(port) = text.trim().parse::<u16>()
        {
            return Ok(Some(port));
        }
        match child.try_wait() {
            Ok(Some(_)) => return Ok(None),
            Ok(None) => {}
            Err(source) => {
                return Err(ParallelError::Network {
                    rank: 0,
                    context: "waiting for rank 0 to listen".into(),
                    source,
                    fix: fix.into(),
                });
            }
        }
        if started.elapsed() > timeout {
            return Err(ParallelError::Network {
                rank: 0,
                context: format!(
                    "waiting for rank 0 to listen: no port after {} s",
                    timeout.as_secs()
                ),
                source: std::io::ErrorKind::TimedOut.into(),
                fix: fix.into(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_zero_reports_the_port_it_listens_on_whatever_port_it_was_given() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("rendezvous-port");
        let taken = TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let listener = listen(taken_port, Some(&path)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_ne!(port, taken_port);
        let mut rank_zero = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let reported = wait_for_port(&path, &mut rank_zero, Duration::from_secs(10));
        let _ = rank_zero.kill();
        let _ = rank_zero.wait();
        assert_eq!(reported.unwrap(), Some(port));
        assert!(!path.with_extension("partial").exists());
        // Without a file to report to, the port given is the one taken.
        assert!(listen(taken_port, None).is_err());
    }

    #[test]
    fn waiting_ends_when_rank_zero_exits_before_listening() {
        let directory = tempfile::tempdir().unwrap();
        let mut rank_zero = std::process::Command::new("true").spawn().unwrap();
        let reported = wait_for_port(
            &directory.path().join("rendezvous-port"),
            &mut rank_zero,
            Duration::from_secs(10),
        );
        assert_eq!(reported.unwrap(), None);
    }
}
