//! One host, several ranks: the command starts one worker per rank (this same binary with the
//! same arguments, placed by torchrun's variables; rank 0 first, which listens on a free port and
//! reports it, then the others with that port), prefixes each
//! worker's stderr with `[rank N]`, and when one fails stops the others and reports it. Workers
//! that stopped only because a peer did exit with [`PEER_STOPPED_EXIT_CODE`], so the report names
//! the rank that failed first. Every worker gets `NCCL_NVLS_ENABLE=0` (NVLink multicast off).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::config::variables;
use super::error::{PEER_STOPPED_EXIT_CODE, ParallelError, Result};
use super::rendezvous;

/// How long to wait for the cause once only follow-on failures were seen.
const CAUSE_GRACE: Duration = Duration::from_secs(2);

/// Environment every process the runtime starts gets: NVLink multicast off.
pub const WORKER_ENVIRONMENT: [(&str, &str); 1] = [("NCCL_NVLS_ENABLE", "0")];

/// Starts `world_size` workers running `program args` and waits for all; the first failing
/// worker stops the rest.
pub fn supervise(world_size: usize, program: &Path, args: &[OsString]) -> Result<()> {
    // Rank 0 picks its rendezvous port itself and reports it here; the others start after.
    let directory = tempfile::Builder::new()
        .prefix("skyreels-ranks")
        .tempdir()
        .map_err(|source| ParallelError::Network {
            rank: 0,
            context: "creating a temporary directory for the rendezvous port".into(),
            source,
            fix: "check that the temporary directory (TMPDIR) is writable".into(),
        })?;
    let port_file = directory.path().join("rendezvous-port");
    let mut children: Vec<Option<Child>> = Vec::with_capacity(world_size);
    let mut relays = Vec::with_capacity(world_size);
    let mut port = 0;
    for rank in 0..world_size {
        let report_to = (rank == 0).then_some(port_file.as_path());
        let (child, relay) = match start_rank(program, args, rank, world_size, port, report_to) {
            Ok(started) => started,
            Err(error) => {
                stop(&mut children);
                return Err(error);
            }
        };
        children.push(Some(child));
        relays.push(relay);
        if rank == 0 {
            let child = children[0].as_mut().expect("just started");
            match rendezvous::wait_for_port(&port_file, child, rendezvous::DEFAULT_TIMEOUT) {
                Ok(Some(reported)) => port = reported,
                // Rank 0 stopped before listening: wait_all reports how.
                Ok(None) => break,
                Err(error) => {
                    stop(&mut children);
                    return Err(error);
                }
            }
        }
    }
    let outcome = wait_all(&mut children, world_size);
    for relay in relays {
        let _ = relay.join();
    }
    outcome
}

/// Starts the worker of `rank` (with `MASTER_PORT=port`; rank 0 reports its own port to
/// `port_file`) and a thread relaying its stderr with a `[rank N]` prefix.
fn start_rank(
    program: &Path,
    args: &[OsString],
    rank: usize,
    world_size: usize,
    port: u16,
    port_file: Option<&Path>,
) -> Result<(Child, std::thread::JoinHandle<()>)> {
    let mut command = Command::new(program);
    command
        .args(args)
        .env(variables::RANK, rank.to_string())
        .env(variables::WORLD_SIZE, world_size.to_string())
        .env(variables::LOCAL_RANK, rank.to_string())
        .env(variables::LOCAL_WORLD_SIZE, world_size.to_string())
        .env(variables::MASTER_ADDR, "127.0.0.1")
        .env(variables::MASTER_PORT, port.to_string())
        .env_remove(variables::RENDEZVOUS_PORT_FILE)
        .envs(WORKER_ENVIRONMENT)
        .stdin(Stdio::null())
        .stdout(if rank == 0 {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    if let Some(port_file) = port_file {
        command.env(variables::RENDEZVOUS_PORT_FILE, port_file);
    }
    let mut child = command.spawn().map_err(|source| ParallelError::Spawn {
        rank,
        program: PathBuf::from(program),
        source,
    })?;
    crate::interrupt::forward_to_worker(child.id());
    let stderr = child.stderr.take().expect("piped");
    let relay = std::thread::spawn(move || {
        for line in BufReader::new(stderr)
            .lines()
            .map_while(std::result::Result::ok)
        {
            let mut out = std::io::stderr().lock();
            let _ = writeln!(out, "[rank {rank}] {line}");
        }
    });
    Ok((child, relay))
}

fn wait_all(children: &mut [Option<Child>], world_size: usize) -> Result<()> {
    let mut follow_on: Option<(usize, ExitStatus, Instant)> = None;
    loop {
        let mut running = 0;
        for rank in 0..children.len() {
            let Some(child) = children[rank].as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => running += 1,
                Ok(Some(status)) => {
                    crate::interrupt::forget_worker(child.id());
                    children[rank] = None;
                    if status.success() {
                        continue;
                    }
                    if status.code() == Some(PEER_STOPPED_EXIT_CODE) {
                        follow_on.get_or_insert((rank, status, Instant::now()));
                        continue;
                    }
                    stop(children);
                    return Err(failed(rank, world_size, status));
                }
                Err(_) => children[rank] = None,
            }
        }
        if let Some((rank, status, since)) = follow_on
            && (running == 0 || since.elapsed() > CAUSE_GRACE)
        {
            stop(children);
            return Err(failed(rank, world_size, status));
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn failed(rank: usize, world_size: usize, status: ExitStatus) -> ParallelError {
    ParallelError::RankFailed {
        rank,
        world_size,
        status: status.to_string(),
    }
}

/// Kills and reaps every worker still running (all were started by [`supervise`]).
fn stop(children: &mut [Option<Child>]) {
    for child in children.iter_mut().flatten() {
        let _ = child.kill();
    }
    for slot in children.iter_mut() {
        if let Some(mut child) = slot.take() {
            let _ = child.wait();
            crate::interrupt::forget_worker(child.id());
        }
    }
}
