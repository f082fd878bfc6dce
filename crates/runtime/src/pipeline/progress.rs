//! What a running generation tells its front end, and how the front end stops it: every stage,
//! window and sampling step is reported to an [`Observer`], whose answer can cancel the job.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::{Result, RuntimeError};

/// The stages of a job, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Loading graphs into ONNX Runtime sessions.
    Loading,
    /// Encoding the prompt and the negative prompt.
    TextEncoding,
    /// Encoding conditioning images and videos (CLIP, VAE encoder).
    ImageEncoding,
    /// The denoising loop over every window.
    Sampling,
    /// Decoding latents to pixels.
    Decoding,
    /// Writing the video, frames and latents.
    Writing,
}

impl Stage {
    /// The stage's name in logs and JSON (`text_encoding`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Loading => "loading",
            Stage::TextEncoding => "text_encoding",
            Stage::ImageEncoding => "image_encoding",
            Stage::Sampling => "sampling",
            Stage::Decoding => "decoding",
            Stage::Writing => "writing",
        }
    }
}

/// One thing a job reports, in the order it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A stage begins; `what` says on what (`dit`, `window 2/3`, `fox.mp4`).
    StageStarted {
        /// The stage.
        stage: Stage,
        /// What it works on.
        what: String,
    },
    /// A stage ended after `seconds`.
    StageFinished {
        /// The stage.
        stage: Stage,
        /// What it worked on (as in `StageStarted`).
        what: String,
        /// Wall-clock seconds it took.
        seconds: f64,
    },
    /// A sampling window begins (windows count from 1).
    WindowStarted {
        /// This window, 1-based.
        window: usize,
        /// Windows in the job.
        windows: usize,
        /// Pixel frames the window samples (overlap prefix included).
        frames: usize,
        /// Sampling steps (rows of its timestep matrix).
        steps: usize,
    },
    /// A window was taken from the work directory instead of being sampled.
    WindowResumed {
        /// This window, 1-based.
        window: usize,
        /// Windows in the job.
        windows: usize,
    },
    /// A sampling step finished.
    Step {
        /// This window, 1-based.
        window: usize,
        /// Windows in the job.
        windows: usize,
        /// Steps done in this window, 1-based.
        step: usize,
        /// Steps of this window.
        steps: usize,
        /// Share of all sampling steps of the job done, 0–100.
        percent: f64,
    },
}

/// Watches a job. Every report may cancel it: `ControlFlow::Break(())` makes the job stop with
/// [`RuntimeError::Cancelled`] before its next step or stage.
pub trait Observer {
    /// Called for every event.
    fn report(&mut self, progress: &Progress) -> ControlFlow<()>;
}

/// Watches nothing and never cancels.
pub struct Unobserved;

impl Observer for Unobserved {
    fn report(&mut self, _progress: &Progress) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// A flag that another thread sets to cancel a job; as an [`Observer`] it only answers whether
/// to stop, so front ends that show progress check it in their own observer.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> CancelFlag {
        CancelFlag::default()
    }

    /// Asks the job to stop at its next step.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelFlag::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Break` once cancelled.
    pub fn check(&self) -> ControlFlow<()> {
        if self.is_cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Observer for CancelFlag {
    fn report(&mut self, _progress: &Progress) -> ControlFlow<()> {
        self.check()
    }
}

/// Reports `progress` and turns a cancellation into [`RuntimeError::Cancelled`].
pub fn report(observer: &mut dyn Observer, progress: Progress) -> Result<()> {
    match observer.report(&progress) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(RuntimeError::Cancelled),
    }
}

/// Runs `work` as `stage` on `what`, reporting its start and end (with its duration).
pub fn in_stage<T>(
    observer: &mut dyn Observer,
    stage: Stage,
    what: &str,
    work: impl FnOnce(&mut dyn Observer) -> Result<T>,
) -> Result<T> {
    report(
        observer,
        Progress::StageStarted {
            stage,
            what: what.to_string(),
        },
    )?;
    let started = std::time::Instant::now();
    let value = work(observer)?;
    report(
        observer,
        Progress::StageFinished {
            stage,
            what: what.to_string(),
            seconds: started.elapsed().as_secs_f64(),
        },
    )?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_flag_stops_the_next_report() {
        let flag = CancelFlag::new();
        let mut observer = flag.clone();
        let step = || Progress::Step {
            window: 1,
            windows: 1,
            step: 1,
            steps: 2,
            percent: 50.0,
        };
        assert!(report(&mut observer, step()).is_ok());
        flag.cancel();
        assert!(matches!(
            report(&mut observer, step()),
            Err(RuntimeError::Cancelled)
        ));
    }

    #[test]
    fn stages_report_start_and_end_in_order() {
        struct Log(Vec<String>);
        impl Observer for Log {
            fn report(&mut self, progress: &Progress) -> ControlFlow<()> {
                self.0.push(serde_json::to_string(progress).expect("json"));
                ControlFlow::Continue(())
            }
        }
        let mut log = Log(Vec::new());
        let value = in_stage(&mut log, Stage::Decoding, "video", |_| Ok(7)).expect("stage");
        assert_eq!(value, 7);
        assert_eq!(log.0.len(), 2);
        assert_eq!(
            log.0[0],
            r#"{"event":"stage_started","stage":"decoding","what":"video"}"#
        );
        assert!(
            log.0[1].starts_with(
                r#"{"event":"stage_finished","stage":"decoding","what":"video","seconds":"#
            ),
            "{}",
            log.0[1]
        );
    }
}
