//! The coroutine runtime: stacks, scheduler, reactor, timers. It knows nothing of
//! libc calls: only "wait for this fd", "sleep until", "park until woken".

pub(crate) mod control;
pub(crate) mod dispatch;
pub(crate) mod dump;
pub(crate) mod futex;
mod monitor;
pub(crate) mod observe;
pub(crate) mod offload;
mod overflow;
pub(crate) mod ownfd;
pub(crate) mod parking;
pub(crate) mod reactor;
mod runq;
mod scheduler;
pub(crate) mod signals;
mod slice;
pub(crate) mod stack;
pub(crate) mod symbolize;
mod task;
mod timer;
pub(crate) mod tls;
pub(crate) mod tp_local;
pub(crate) mod uring;
pub(crate) mod workers;

pub(crate) use dispatch::Guard;
pub use dump::{RunInfo, Stats, run_info, stats};
pub use observe::{CoroutineInfo, CoroutineState, WaitInfo, WaitsOn, WorkerInfo};
pub(crate) use observe::{Family, Label};
pub use reactor::Direction;
pub(crate) use reactor::{Readiness, clear_readiness};
pub use scheduler::in_coroutine;
pub(crate) use scheduler::{
    Breaks, Mail, Remote, after_fork, before_fork, current_home, current_scheduler,
    current_scheduler_id, current_task, fd_closing, fd_created, fd_shut_down, keep_scheduler,
    label, park, park_as, ring_io, root_unparker, sleep_until, spawn_at, wait_any_as, wait_fd,
    wait_signal, with_scheduler, yield_now,
};
pub(crate) use signals::{note_signal, signal_counts};
pub(crate) use slice::{slice_over, yield_for_slice};
pub(crate) use task::{Entry, Unparker, Wake};

/// Records where the running coroutine's own code starts (a C start routine,
/// a Rust closure's type), for the monitor's reports. Outside a coroutine,
/// nothing.
pub(crate) fn note_entry(entry: Entry) {
    if let Some(task) = current_task() {
        task.entry.set(entry);
    }
}

use std::sync::atomic::{AtomicBool, Ordering};

/// Alone on its cache line: every hooked data call on every thread reads it, so
/// a neighbour written often would make each of those reads a cache miss.
#[repr(align(64))]
struct Engaged(AtomicBool);

static ENGAGED: Engaged = Engaged(AtomicBool::new(false));

/// Records, for good, that hooked calls may now need us: a coroutine stack is
/// about to be mapped (no coroutine runs without one) or O_NONBLOCK set on an fd
/// behind the user's back. Called before either happens.
pub(crate) fn engage() {
    // Written once: a store per call would pull the line away from every reader.
    // SeqCst: visible to every thread before the mmap or fcntl that follows.
    if !engaged() {
        ENGAGED.0.store(true, Ordering::SeqCst);
    }
}

/// False while this process has never mapped a coroutine stack nor changed an
/// fd's flags: then no thread is in a coroutine and every hooked call is libc's,
/// which one load of a global decides (a thread-local read is more: a call
/// in a shared library, or for the hot ones two loads, `tp_local`). A
/// coroutine reaches its thread through the scheduler's synchronisation,
/// after its stack was mapped, so its thread sees the flag; a
/// plain thread racing a coroutine's first wait on the same fd is no worse off
/// than with the fd table's own bit, which is set after the fcntl.
#[inline(always)]
pub(crate) fn engaged() -> bool {
    ENGAGED.0.load(Ordering::Relaxed)
}
