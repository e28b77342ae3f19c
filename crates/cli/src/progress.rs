//! The command line's side of `glandseg_core::Progress`: indicatif bars, one at a time,
//! styled per task; hidden with `--quiet`, while notes (warnings) are still printed.

use glandseg_core::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;

/// Progress bars on stderr.
pub struct Bars {
    quiet: bool,
    bar: Mutex<Option<(String, ProgressBar)>>,
    msg: Mutex<String>,
}

fn template(task: &str) -> (&'static str, bool) {
    match task {
        "predict" => (
            "predict {msg} [{bar:30}] {pos}/{len} tiles {elapsed} (ETA {eta})",
            true,
        ),
        "train" => (
            "train {bar:30} {pos}/{len} it [{elapsed_precise} < {eta}] {msg}",
            false,
        ),
        "preprocess" => (
            "preprocess {bar:30} {pos}/{len} cases [{elapsed_precise} < {eta}] {msg}",
            false,
        ),
        "evaluate" => ("evaluate [{bar:30}] {pos}/{len} {msg}", true),
        "phantom" => (
            "phantom [{bar:30}] {pos}/{len} cases {elapsed} (ETA {eta})",
            true,
        ),
        _ => ("{bar:30} {pos}/{len} {msg}", true),
    }
}

impl Bars {
    /// Bars, or none with `quiet`.
    pub fn new(quiet: bool) -> Self {
        Bars {
            quiet,
            bar: Mutex::new(None),
            msg: Mutex::new(String::new()),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some((_, b)) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            f(b);
        }
    }

    /// Runs `f` (which prints) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let guard = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some((_, b)) => b.suspend(f),
            None => f(),
        }
    }
}

impl Progress for Bars {
    fn start(&self, task: &str, total: u64) {
        let mut guard = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        let reuse = matches!(guard.as_ref(), Some((t, b)) if t == task && !b.is_finished());
        if !reuse {
            let b = if self.quiet {
                ProgressBar::hidden()
            } else {
                let (t, arrows) = template(task);
                let mut style = ProgressStyle::with_template(t).expect("valid template");
                if arrows {
                    style = style.progress_chars("=> ");
                }
                ProgressBar::new(total).with_style(style)
            };
            b.set_message(self.msg.lock().unwrap_or_else(|p| p.into_inner()).clone());
            *guard = Some((task.to_string(), b));
        }
        let (_, b) = guard.as_ref().expect("set above");
        b.set_length(total);
        b.set_position(0);
    }

    fn set_position(&self, pos: u64) {
        self.with_bar(|b| b.set_position(pos));
    }

    fn inc(&self, n: u64) {
        self.with_bar(|b| b.inc(n));
    }

    fn message(&self, msg: &str) {
        *self.msg.lock().unwrap_or_else(|p| p.into_inner()) = msg.to_string();
        self.with_bar(|b| b.set_message(msg.to_string()));
    }

    fn note(&self, line: &str) {
        self.suspend(|| eprintln!("{line}"));
    }

    fn finish(&self) {
        self.with_bar(|b| b.finish_and_clear());
        self.msg.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
