//! The coroutine runtime: stacks, scheduler, reactor, timers. It knows nothing of
//! libc calls: only "wait for this fd", "sleep until", "park until woken".

pub(crate) mod control;
pub(crate) mod offload;
mod overflow;
pub(crate) mod parking;
pub(crate) mod reactor;
mod runq;
mod scheduler;
pub(crate) mod stack;
mod task;
mod timer;

pub use reactor::Direction;
pub use scheduler::in_coroutine;
pub(crate) use scheduler::{
    Breaks, Mail, Remote, after_fork, before_fork, current_home, current_scheduler,
    current_scheduler_id, current_task, fd_closing, fd_created, note_signal, park, park_as,
    root_unparker, signal_counts, sleep_until, spawn_at, wait_any, wait_fd, with_scheduler,
    yield_now,
};
pub(crate) use task::{Unparker, Wake};
