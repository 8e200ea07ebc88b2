//! Progress of a knowledge-base build on stderr: one bar per stage (reading,
//! slicing, summarizing, writing). Hidden when stderr is not a terminal, so
//! logs, CI output and tests stay clean.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    /// The running stage and when it started, for the debug log.
    current: Mutex<Option<(String, Instant)>>,
}

impl Progress {
    /// A bar on stderr when `enabled` and stderr is a terminal; else hidden.
    pub fn new(enabled: bool) -> Self {
        let target = if enabled && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:32}] {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        Self {
            bar,
            current: Mutex::new(None),
        }
    }

    /// Logs how long the running stage took (at debug level).
    fn end_stage(&self) {
        let ended = self.current.lock().ok().and_then(|mut c| c.take());
        if let Some((name, started)) = ended {
            tracing::debug!(stage = %name, ms = started.elapsed().as_millis() as u64, "kb build stage done");
        }
    }

    /// Starts a stage of `len` steps.
    pub fn stage(&self, name: &str, len: usize) {
        self.end_stage();
        if let Ok(mut current) = self.current.lock() {
            *current = Some((name.to_string(), Instant::now()));
        }
        self.bar.reset();
        self.bar.set_length(len as u64);
        self.bar.set_message("");
        self.bar.set_prefix(name.to_string());
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    pub fn message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Removes the bar (the build prints its own summary line).
    pub fn finish(&self) {
        self.end_stage();
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
