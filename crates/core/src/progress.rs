//! Progress reporting as a trait, so the library stages report how far they are without
//! choosing how it is shown: the command line draws bars (its indicatif adapter), a GUI or
//! a test passes its own implementation or [`NoProgress`].

/// Receives the progress of a long-running stage (preprocessing, training, prediction,
/// evaluation). Every method has a do-nothing default, so an implementation overrides only
/// what it shows. Called from worker threads, hence `Send + Sync`.
pub trait Progress: Send + Sync {
    /// A task of `total` steps begins (`task` names it: "preprocess", "train", "predict",
    /// "evaluate"); the position goes back to 0.
    fn start(&self, task: &str, total: u64) {
        let _ = (task, total);
    }
    /// Jumps to step `pos` (a resumed run starts part-way).
    fn set_position(&self, pos: u64) {
        let _ = pos;
    }
    /// `n` more steps are done.
    fn inc(&self, n: u64) {
        let _ = n;
    }
    /// Short status text beside the bar (the case being worked on, the last loss).
    fn message(&self, msg: &str) {
        let _ = msg;
    }
    /// A line for the person running the job (a warning, a decision taken for them),
    /// printed without disturbing a bar.
    fn note(&self, line: &str) {
        let _ = line;
    }
    /// The task is over; a bar is cleared.
    fn finish(&self) {}
}

/// Shows nothing: for library callers and tests that want no output.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
