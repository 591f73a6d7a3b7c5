//! Green threads over many cores: with `PATCHALL_WORKERS=N` (N > 1) the first
//! `pthread_create` starts N - 1 worker threads (native, each with its own
//! scheduler) and from then on every new green thread goes to the least loaded
//! of N workers: `main`'s OS thread and those. `main` itself stays on its own
//! thread, and a green thread never moves (see `runtime::workers`). Without
//! `PATCHALL_WORKERS`, green threads stay on the thread that creates them, as
//! before: one core, no extra OS thread.
//!
//! Everything one green thread does to another across workers goes through
//! parts that wake across threads: joins and once/mutex/cond/sem waits park on
//! the address (the parking lot's unparkers post to the waiter's worker), and
//! `pthread_cancel` posts to the target's worker.

use std::cell::Cell;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};

use crate::config::config;
use crate::runtime::Remote;
use crate::runtime::workers::WorkerSet;
use crate::sys::diag;

thread_local! {
    /// Set while this thread starts the workers: their `pthread_create`s are
    /// glibc's.
    static STARTING: Cell<bool> = const { Cell::new(false) };
}

static WORKERS: OnceLock<Option<WorkerSet>> = OnceLock::new();

/// How many workers green threads spread over (1: the creator's thread).
fn workers() -> usize {
    config().workers.unwrap_or(1)
}

/// True while the workers are being started on this thread.
pub(super) fn starting() -> bool {
    STARTING.try_with(Cell::get).unwrap_or(false)
}

/// The workers, started on first use with this thread's scheduler as worker
/// 0; None with one worker, or (reported once) if the threads could not be
/// started.
fn worker_set() -> Option<&'static WorkerSet> {
    if workers() < 2 {
        return None;
    }
    WORKERS
        .get_or_init(|| {
            let _ = STARTING.try_with(|s| s.set(true));
            let set = WorkerSet::start(workers(), true);
            let _ = STARTING.try_with(|s| s.set(false));
            set.map_err(|e| {
                diag(&[
                    b"patchall: cannot start the worker threads (",
                    e.to_string().as_bytes(),
                    b"); green threads stay on their creator's thread\n",
                ])
            })
            .ok()
        })
        .as_ref()
}

/// Where a new green thread goes: a worker's mailbox (None: this thread) and
/// the load counter to decrement when it ends (None without workers).
pub(super) fn place() -> (Option<Arc<Remote>>, Option<Arc<AtomicUsize>>) {
    match worker_set().map(|set| set.placer().place()) {
        Some(Ok((home, load))) => (home, Some(load)),
        _ => (None, None),
    }
}

/// Live green threads placed on workers (0 without workers).
pub(super) fn live() -> usize {
    WORKERS
        .get()
        .and_then(Option::as_ref)
        .map_or(0, |set| set.placer().load())
}

/// OS threads started for the workers.
pub(super) fn threads() -> usize {
    WORKERS
        .get()
        .and_then(Option::as_ref)
        .map_or(0, |set| set.len() - 1)
}
