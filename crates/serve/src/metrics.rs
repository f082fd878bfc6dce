//! `/metrics` in the Prometheus text format (version 0.0.4): queue depth, jobs by status, seconds
//! per stage, the model load time every job saves, and GPU memory when the executor runs on one.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::executor::GpuMemory;
use crate::queue::Status;

/// Seconds spent in one stage over all finished jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTotal {
    /// Total seconds.
    pub seconds: f64,
    /// Jobs that went through the stage.
    pub count: u64,
}

/// The figures `/metrics` shows, read from the queue at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Jobs waiting.
    pub queue_depth: usize,
    /// The queue's limit.
    pub max_queue: usize,
    /// Jobs kept by the server, by status.
    pub jobs_by_status: BTreeMap<Status, usize>,
    /// Jobs finished since the start, by final status.
    pub finished_total: BTreeMap<Status, u64>,
    /// Requests refused as invalid since the start.
    pub rejected_invalid: u64,
    /// Requests refused because the queue was full since the start.
    pub rejected_full: u64,
    /// Seconds per stage over finished jobs.
    pub stages: BTreeMap<&'static str, StageTotal>,
    /// Seconds the models took to load at start-up (saved by every job after the first).
    pub model_load_seconds: f64,
    /// GPU memory, when on a GPU.
    pub gpu_memory: Option<GpuMemory>,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders `snapshot` as Prometheus text.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "skyreels_queue_depth",
        "gauge",
        "Jobs waiting to run.",
    );
    let _ = writeln!(out, "skyreels_queue_depth {}", snapshot.queue_depth);
    header(
        &mut out,
        "skyreels_queue_capacity",
        "gauge",
        "Jobs that may wait (--max-queue).",
    );
    let _ = writeln!(out, "skyreels_queue_capacity {}", snapshot.max_queue);
    header(
        &mut out,
        "skyreels_jobs",
        "gauge",
        "Jobs kept by the server, by status.",
    );
    for (status, count) in &snapshot.jobs_by_status {
        let _ = writeln!(out, "skyreels_jobs{{status=\"{}\"}} {count}", status.name());
    }
    header(
        &mut out,
        "skyreels_jobs_finished_total",
        "counter",
        "Jobs finished since the start, by final status.",
    );
    for (status, count) in &snapshot.finished_total {
        let _ = writeln!(
            out,
            "skyreels_jobs_finished_total{{status=\"{}\"}} {count}",
            status.name()
        );
    }
    header(
        &mut out,
        "skyreels_requests_rejected_total",
        "counter",
        "Requests refused since the start, by reason.",
    );
    let _ = writeln!(
        out,
        "skyreels_requests_rejected_total{{reason=\"invalid\"}} {}",
        snapshot.rejected_invalid
    );
    let _ = writeln!(
        out,
        "skyreels_requests_rejected_total{{reason=\"queue_full\"}} {}",
        snapshot.rejected_full
    );
    header(
        &mut out,
        "skyreels_stage_seconds",
        "summary",
        "Seconds spent in each stage of finished jobs.",
    );
    for (stage, total) in &snapshot.stages {
        let _ = writeln!(
            out,
            "skyreels_stage_seconds_sum{{stage=\"{stage}\"}} {}",
            total.seconds
        );
        let _ = writeln!(
            out,
            "skyreels_stage_seconds_count{{stage=\"{stage}\"}} {}",
            total.count
        );
    }
    header(
        &mut out,
        "skyreels_model_load_seconds",
        "gauge",
        "Seconds the models took to load at start-up; every job after the first saves them.",
    );
    let _ = writeln!(
        out,
        "skyreels_model_load_seconds {}",
        snapshot.model_load_seconds
    );
    if let Some(gpu) = snapshot.gpu_memory {
        header(
            &mut out,
            "skyreels_gpu_memory_bytes",
            "gauge",
            "GPU memory: held by this server (process), in use by all processes (used), the GPU's (total).",
        );
        let device = gpu.device;
        if let Some(process) = gpu.process_bytes {
            let _ = writeln!(
                out,
                "skyreels_gpu_memory_bytes{{device=\"{device}\",kind=\"process\"}} {process}"
            );
        }
        let _ = writeln!(
            out,
            "skyreels_gpu_memory_bytes{{device=\"{device}\",kind=\"used\"}} {}",
            gpu.used_bytes
        );
        let _ = writeln!(
            out,
            "skyreels_gpu_memory_bytes{{device=\"{device}\",kind=\"total\"}} {}",
            gpu.total_bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_labels() {
        let snapshot = MetricsSnapshot {
            queue_depth: 2,
            max_queue: 8,
            jobs_by_status: Status::ALL.into_iter().zip([2, 1, 3, 0, 1]).collect(),
            finished_total: [
                (Status::Completed, 3),
                (Status::Failed, 0),
                (Status::Cancelled, 1),
            ]
            .into_iter()
            .collect(),
            rejected_invalid: 4,
            rejected_full: 1,
            stages: [
                (
                    "denoise",
                    StageTotal {
                        seconds: 7.5,
                        count: 3,
                    },
                ),
                (
                    "vae_decode",
                    StageTotal {
                        seconds: 0.25,
                        count: 3,
                    },
                ),
            ]
            .into_iter()
            .collect(),
            model_load_seconds: 1.5,
            gpu_memory: Some(GpuMemory {
                device: 0,
                process_bytes: Some(1024),
                used_bytes: 4096,
                total_bytes: 8192,
            }),
        };
        insta::assert_snapshot!(render(&snapshot), @r#"
        # HELP skyreels_queue_depth Jobs waiting to run.
        # TYPE skyreels_queue_depth gauge
        skyreels_queue_depth 2
        # HELP skyreels_queue_capacity Jobs that may wait (--max-queue).
        # TYPE skyreels_queue_capacity gauge
        skyreels_queue_capacity 8
        # HELP skyreels_jobs Jobs kept by the server, by status.
        # TYPE skyreels_jobs gauge
        skyreels_jobs{status="queued"} 2
        skyreels_jobs{status="in_progress"} 1
        skyreels_jobs{status="completed"} 3
        skyreels_jobs{status="failed"} 0
        skyreels_jobs{status="cancelled"} 1
        # HELP skyreels_jobs_finished_total Jobs finished since the start, by final status.
        # TYPE skyreels_jobs_finished_total counter
        skyreels_jobs_finished_total{status="completed"} 3
        skyreels_jobs_finished_total{status="failed"} 0
        skyreels_jobs_finished_total{status="cancelled"} 1
        # HELP skyreels_requests_rejected_total Requests refused since the start, by reason.
        # TYPE skyreels_requests_rejected_total counter
        skyreels_requests_rejected_total{reason="invalid"} 4
        skyreels_requests_rejected_total{reason="queue_full"} 1
        # HELP skyreels_stage_seconds Seconds spent in each stage of finished jobs.
        # TYPE skyreels_stage_seconds summary
        skyreels_stage_seconds_sum{stage="denoise"} 7.5
        skyreels_stage_seconds_count{stage="denoise"} 3
        skyreels_stage_seconds_sum{stage="vae_decode"} 0.25
        skyreels_stage_seconds_count{stage="vae_decode"} 3
        # HELP skyreels_model_load_seconds Seconds the models took to load at start-up; every job after the first saves them.
        # TYPE skyreels_model_load_seconds gauge
        skyreels_model_load_seconds 1.5
        # HELP skyreels_gpu_memory_bytes GPU memory: held by this server (process), in use by all processes (used), the GPU's (total).
        # TYPE skyreels_gpu_memory_bytes gauge
        skyreels_gpu_memory_bytes{device="0",kind="process"} 1024
        skyreels_gpu_memory_bytes{device="0",kind="used"} 4096
        skyreels_gpu_memory_bytes{device="0",kind="total"} 8192
        "#);
    }
}
