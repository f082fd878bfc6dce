//! Logs and progress for command-line front ends: `tracing` events on stderr as text or JSON
//! lines, and a job [`Observer`] that draws an indicatif bar per stage on a terminal, or writes
//! one log line per stage and per sampling step when stderr is a file, a pipe or a journal.

use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::pipeline::progress::{Observer, Progress, Stage};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `warning: message`, one event per line, for people.
    Text,
    /// One JSON object per event (timestamp, level, fields), for log collectors.
    Json,
}

/// Text lines: the message, prefixed by the level except for plain information. The runtime's
/// own events carry their fields for JSON logs and already say them in the message; other
/// libraries' events get their fields appended as `key=value`.
struct TextLines;

/// The message and the other fields of an event.
#[derive(Default)]
struct Fields {
    message: String,
    others: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.others += &format!(" {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.others += &format!(" {}={value:?}", field.name());
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let prefix = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::INFO => "",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ours = event.metadata().target().starts_with("skyreels");
        let others = if ours { "" } else { fields.others.as_str() };
        writeln!(writer, "{prefix}{}{others}", fields.message)
    }
}

/// Installs the process's log subscriber on stderr: events at `level` and above, except ONNX
/// Runtime's own, which show from `warn` (or `level`, if stricter). Call once, first thing.
pub fn init(level: LevelFilter, format: LogFormat) {
    let onnxruntime_level = level.min(LevelFilter::WARN);
    let filter = Targets::new()
        .with_target("ort", onnxruntime_level)
        .with_default(level);
    let registry = tracing_subscriber::registry().with(filter);
    let outcome = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(TextLines)
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second call (tests, a server that set up its own) keeps the first subscriber.
    drop(outcome);
}

/// How job progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressDisplay {
    /// Bars redrawn in place (a terminal).
    Bars,
    /// One `info` log line per stage and per step (files, pipes, journals).
    Lines,
}

impl ProgressDisplay {
    /// Bars when stderr is a terminal, log lines otherwise.
    pub fn for_stderr() -> ProgressDisplay {
        if std::io::stderr().is_terminal() {
            ProgressDisplay::Bars
        } else {
            ProgressDisplay::Lines
        }
    }
}

/// Shows a job's progress on stderr; never cancels it. With bars, a running stage is a spinner
/// (a sampling window a bar of its steps) and a finished one becomes a plain line above them.
pub struct ConsoleProgress {
    style: ProgressDisplay,
    bars: MultiProgress,
    spinners: HashMap<(Stage, String), ProgressBar>,
    window: Option<(ProgressBar, String)>,
}

impl ConsoleProgress {
    /// Progress drawn as `style`.
    pub fn new(style: ProgressDisplay) -> ConsoleProgress {
        ConsoleProgress {
            style,
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            spinners: HashMap::new(),
            window: None,
        }
    }

    fn bar(&self, length: Option<u64>, template: &str) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new_spinner());
        if let Some(length) = length {
            bar.set_length(length);
        }
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    }

    /// A line above the bars (or plainly, when they cannot be drawn).
    fn line(&self, text: String) {
        if self.bars.println(&text).is_err() {
            eprintln!("{text}");
        }
    }
}

fn stage_label(stage: Stage) -> &'static str {
    match stage {
        Stage::Loading => "loading",
        Stage::TextEncoding => "encoding",
        Stage::ImageEncoding => "encoding",
        Stage::Sampling => "sampling",
        Stage::Decoding => "decoding",
        Stage::Writing => "writing",
    }
}

impl Observer for ConsoleProgress {
    fn report(&mut self, progress: &Progress) -> ControlFlow<()> {
        match (self.style, progress) {
            (ProgressDisplay::Lines, Progress::StageStarted { stage, what }) => {
                tracing::info!(stage = stage.name(), what = %what, "{} {what}", stage_label(*stage));
            }
            (
                ProgressDisplay::Lines,
                Progress::StageFinished {
                    stage,
                    what,
                    seconds,
                },
            ) => {
                tracing::info!(
                    stage = stage.name(),
                    what = %what,
                    seconds,
                    "{} {what}: done in {seconds:.1}s",
                    stage_label(*stage)
                );
            }
            (
                ProgressDisplay::Lines,
                Progress::WindowStarted {
                    window,
                    windows,
                    frames,
                    steps,
                },
            ) => {
                tracing::info!(
                    window,
                    windows,
                    frames,
                    steps,
                    "sampling window {window}/{windows}: {frames} frames, {steps} steps"
                );
            }
            (ProgressDisplay::Lines, Progress::WindowResumed { window, windows }) => {
                tracing::info!(
                    window,
                    windows,
                    "window {window}/{windows}: resumed from the work directory"
                );
            }
            (
                ProgressDisplay::Lines,
                Progress::Step {
                    window,
                    windows,
                    step,
                    steps,
                    percent,
                },
            ) => {
                tracing::info!(
                    window,
                    windows,
                    step,
                    steps,
                    percent,
                    "window {window}/{windows} step {step}/{steps} ({percent:.0}%)"
                );
            }
            (ProgressDisplay::Bars, Progress::StageStarted { stage, what }) => {
                if *stage != Stage::Sampling {
                    let bar = self.bar(
                        None,
                        &format!("{{spinner}} {} {what} {{elapsed}}", stage_label(*stage)),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.spinners.insert((*stage, what.clone()), bar);
                }
            }
            (
                ProgressDisplay::Bars,
                Progress::StageFinished {
                    stage,
                    what,
                    seconds,
                },
            ) => {
                if let Some(bar) = self.spinners.remove(&(*stage, what.clone())) {
                    bar.finish_and_clear();
                    self.bars.remove(&bar);
                }
                self.line(format!("{} {what}: {seconds:.1}s", stage_label(*stage)));
            }
            (
                ProgressDisplay::Bars,
                Progress::WindowStarted {
                    window,
                    windows,
                    frames,
                    steps,
                },
            ) => {
                if let Some((previous, _)) = self.window.take() {
                    previous.finish_and_clear();
                    self.bars.remove(&previous);
                }
                let label = format!("sampling window {window}/{windows} ({frames} frames)");
                let bar = self.bar(
                    Some(*steps as u64),
                    &format!(
                        "{label} {{bar:30}} step {{pos}}/{{len}} {{elapsed_precise}} eta {{eta}}"
                    ),
                );
                self.window = Some((bar, label));
            }
            (ProgressDisplay::Bars, Progress::WindowResumed { window, windows }) => {
                self.line(format!(
                    "window {window}/{windows}: resumed from the work directory"
                ));
            }
            (ProgressDisplay::Bars, Progress::Step { step, steps, .. }) => {
                if let Some((bar, label)) = &self.window {
                    bar.set_position(*step as u64);
                    if step == steps {
                        let seconds = bar.elapsed().as_secs_f64();
                        bar.finish_and_clear();
                        self.bars.remove(bar);
                        self.line(format!("{label}: {steps} steps in {seconds:.1}s"));
                        self.window = None;
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }
}
