//! `skyreels-serve` (also reached as `skyreels serve`): loads an engine directory once and serves
//! video generation over HTTP, shaped like the OpenAI Videos API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use skyreels_runtime::logging::LogFormat;
use skyreels_runtime::session::Backend;
use skyreels_serve::auth::{self, ApiKey};
use skyreels_serve::http;
use skyreels_serve::queue::{Queue, QueueConfig, Retention, ShutdownOutcome};
use skyreels_serve::runtime_executor::{RuntimeExecutor, WeightDefaults};
use tracing_subscriber::filter::LevelFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Cpu,
    Cuda,
}

#[derive(Parser, Debug)]
#[command(
    name = "skyreels serve",
    version,
    about = "Serve video generation over HTTP (OpenAI Videos API shape: POST /v1/videos, GET /v1/videos/{id}, /content, DELETE; /health, /metrics)"
)]
struct Args {
    /// Engine directory written by skyreels-export (its models are loaded once, at start-up).
    #[arg(long)]
    engines: PathBuf,
    /// Address to listen on; port 0 picks a free port (the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Where the graphs run: `cpu`, or `cuda` (one GPU; run one server per GPU).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// GPU index for `--backend cuda`.
    #[arg(long, default_value_t = 0)]
    device: i32,
    /// Stream the DiT's layer weights from host memory, two layers on the GPU at a time, for
    /// every job that does not set `offload` itself.
    #[arg(long)]
    offload: bool,
    /// Device memory the DiT's weights may take (e.g. 24GiB); streamed when they do not fit, for
    /// every job that does not set `max_gpu_memory` itself.
    #[arg(long, value_name = "SIZE")]
    max_gpu_memory: Option<String>,
    /// CPU threads for ONNX Runtime (0 = all).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Jobs that may wait besides the running one; more are refused with 429.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    max_queue: u64,
    /// Directory for finished videos (created if missing).
    #[arg(long, default_value = "skyreels-videos")]
    videos: PathBuf,
    /// Finished jobs kept with their videos; the oldest beyond this are deleted.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    keep_jobs: u64,
    /// Seconds a finished job and its video are kept.
    #[arg(long, default_value_t = 86_400.0)]
    keep_seconds: f64,
    /// On SIGTERM or SIGINT, seconds the running job may take to finish before it is cancelled.
    #[arg(long, default_value_t = 20.0)]
    shutdown_grace: f64,
    /// Seconds a cancelled job may take to reach its next step before the server exits anyway.
    #[arg(long, default_value_t = 30.0)]
    cancel_wait: f64,
    /// File holding the API key that every /v1/* route and /metrics then require as
    /// `Authorization: Bearer <key>` (mode 600: readable by its owner only). The key may instead
    /// be given in the environment variable SKYREELS_API_KEY; it is never a flag value, which
    /// `ps` would show.
    #[arg(long, value_name = "PATH")]
    api_key_file: Option<PathBuf>,
    /// Log lines as text for people, or one JSON object per line for log collectors.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormatArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        anyhow::anyhow!("{flag} {value} is not a number of seconds ≥ 0\n  fix: e.g. {flag} 30")
    })
}

fn main() -> std::process::ExitCode {
    skyreels_contract::error_report::exit_code(start(Args::parse()))
}

/// Starts the server `args` describe and runs it until it is told to stop.
fn start(args: Args) -> anyhow::Result<()> {
    skyreels_runtime::logging::init(
        LevelFilter::INFO,
        match args.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        },
    );
    let retention = Retention {
        max_jobs: args.keep_jobs as usize,
        max_age: seconds("--keep-seconds", args.keep_seconds)?,
    };
    let grace = seconds("--shutdown-grace", args.shutdown_grace)?;
    let cancel_wait = seconds("--cancel-wait", args.cancel_wait)?;
    let key = ApiKey::configured(
        args.api_key_file.as_deref(),
        std::env::var_os(auth::KEY_VARIABLE),
    )?;
    if key.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(
            "listening on {} without an API key: anyone who can reach it can submit, read and delete jobs\n  fix: start with --api-key-file PATH (mode 600) or {}, or listen on 127.0.0.1 behind a proxy that authenticates",
            args.listen,
            auth::KEY_VARIABLE
        );
    }
    let listener = std::net::TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {}\n  fix: choose another --listen address or port",
            args.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    // Held until the server exits: a second server on the same directory would restore, run and
    // delete this one's jobs. Taken before any model loads.
    let _videos =
        skyreels_contract::owned_dir::OwnedDir::open_or_create(&args.videos, "videos directory")
            .with_context(|| format!("cannot use --videos {}", args.videos.display()))?;
    let backend = match args.backend {
        BackendArg::Cpu => Backend::Cpu {
            threads: args.threads,
        },
        BackendArg::Cuda => Backend::Cuda {
            device: args.device,
        },
    };
    let loading = Instant::now();
    let weights = WeightDefaults {
        offload: args.offload,
        max_gpu_memory: args.max_gpu_memory.clone(),
    };
    let executor = RuntimeExecutor::load_with(&args.engines, &backend, weights)?;
    let load_seconds = loading.elapsed().as_secs_f64();
    tracing::info!("loaded {} in {load_seconds:.2} s", args.engines.display());
    let config = QueueConfig {
        model: executor.model_name().to_string(),
        max_queue: args.max_queue as usize,
        videos: args.videos.clone(),
        retention,
    };
    let queue = Arc::new(
        Queue::start(executor, config, load_seconds)
            .with_context(|| format!("cannot use --videos {}", args.videos.display()))?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(serve(listener, Arc::clone(&queue), key, grace, cancel_wait))?;
    match outcome {
        ShutdownOutcome::Drained => tracing::info!("stopped"),
        ShutdownOutcome::InterruptedRunning => tracing::info!(
            "stopped (the running job was interrupted after the grace period; it is queued again, to run from the start at the next start, unless it was restarted 3 times already)"
        ),
        ShutdownOutcome::Abandoned => anyhow::bail!(
            "the running job did not stop within --cancel-wait {} s; exiting anyway",
            args.cancel_wait
        ),
    }
    Ok(())
}

/// Serves (requiring `key` when there is one) until SIGTERM or SIGINT, then stops taking jobs,
/// drains the queue (the API keeps answering meanwhile, so clients can fetch what finishes) and
/// closes the listener.
async fn serve(
    listener: std::net::TcpListener,
    queue: Arc<Queue<RuntimeExecutor>>,
    key: Option<ApiKey>,
    grace: Duration,
    cancel_wait: Duration,
) -> anyhow::Result<ShutdownOutcome> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let (done, outcome) = tokio::sync::oneshot::channel();
    let draining = Arc::clone(&queue);
    let shutdown = async move {
        stop_signal().await;
        tracing::info!(
            "shutting down: no new jobs; the running job has {} s to finish; queued jobs are kept for the next start",
            grace.as_secs_f64()
        );
        let drained =
            tokio::task::spawn_blocking(move || draining.shutdown(grace, cancel_wait)).await;
        let _ = done.send(drained.unwrap_or(ShutdownOutcome::Abandoned));
    };
    axum::serve(listener, http::router(queue, key))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")?;
    Ok(outcome.await.unwrap_or(ShutdownOutcome::Abandoned))
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
