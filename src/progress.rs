//! Progress reporting handed down from the CLI: an indicatif bar on a terminal, plain log lines
//! on stderr otherwise (CI logs, files), nothing at all in tests. Library code never creates its
//! own bars; it receives a [`Progress`] and opens [`Task`]s on it.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Hidden,
}

/// How long work is reported; cheap to clone and pass down. On a terminal every bar of one
/// `Progress` (and of its clones) is drawn by one indicatif `MultiProgress`, so an overall bar and
/// the per-epoch bars below it stay on their own lines.
#[derive(Clone, Debug)]
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
}

impl Progress {
    fn with_mode(mode: Mode) -> Self {
        Progress { mode, multi: MultiProgress::new() }
    }

    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn for_stderr() -> Self {
        Progress::with_mode(if std::io::stderr().is_terminal() { Mode::Bars } else { Mode::Lines })
    }

    /// Reports nothing (tests).
    pub fn hidden() -> Self {
        Progress::with_mode(Mode::Hidden)
    }

    /// Plain lines on stderr, also on a terminal.
    pub fn lines() -> Self {
        Progress::with_mode(Mode::Lines)
    }

    /// Opens a unit of work of `len` steps, labelled `label`.
    pub fn task(&self, label: &str, len: u64) -> Task {
        let bar = match self.mode {
            Mode::Bars => {
                let bar = ProgressBar::new(len);
                bar.set_style(
                    ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(label.to_string());
                self.multi.add(bar)
            }
            _ => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden()),
        };
        Task { bar, label: label.to_string(), mode: self.mode, last_line: Instant::now(), started: Instant::now() }
    }

    /// A one-off message (a bar-safe `eprintln!`), shown in every mode but hidden.
    pub fn println(&self, msg: &str) {
        match self.mode {
            Mode::Hidden => {}
            Mode::Bars => {
                let _ = self.multi.println(msg);
            }
            Mode::Lines => eprintln!("{msg}"),
        }
    }
}

/// One unit of work; dropped or [`Task::finish`]ed when done.
pub struct Task {
    bar: ProgressBar,
    label: String,
    mode: Mode,
    last_line: Instant,
    started: Instant,
}

/// Plain-line mode prints at most this often, so logs stay readable.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

impl Task {
    pub fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        self.maybe_line();
    }

    pub fn set_position(&mut self, pos: u64) {
        self.bar.set_position(pos);
        self.maybe_line();
    }

    pub fn set_length(&mut self, len: u64) {
        self.bar.set_length(len);
    }

    pub fn set_message(&mut self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    /// Prints a line above the bar (or on stderr in line mode).
    pub fn println(&self, msg: &str) {
        match self.mode {
            Mode::Bars => self.bar.println(msg),
            Mode::Lines => eprintln!("{msg}"),
            Mode::Hidden => {}
        }
    }

    pub fn finish(self, msg: &str) {
        match self.mode {
            // A finished bar becomes a plain line above the live ones, so a long run's screen
            // shows the overall bar and the work under way, not a growing stack of full bars.
            Mode::Bars => {
                let line = format!("{} [{:.1}s] {msg}", self.label, self.started.elapsed().as_secs_f64());
                self.bar.println(line);
                self.bar.finish_and_clear();
            }
            Mode::Lines => eprintln!("{}: {msg} ({:.1}s)", self.label, self.started.elapsed().as_secs_f64()),
            Mode::Hidden => {}
        }
    }

    fn maybe_line(&mut self) {
        if self.mode == Mode::Lines && self.last_line.elapsed() >= LINE_INTERVAL {
            self.last_line = Instant::now();
            let len = self.bar.length().map(|l| l.to_string()).unwrap_or_else(|| "?".into());
            eprintln!("{}: {}/{} {}", self.label, self.bar.position(), len, self.bar.message());
        }
    }
}
