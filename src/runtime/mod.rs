//! The coroutine runtime: stacks, scheduler, reactor, timers. It knows nothing of
//! libc calls: only "wait for this fd", "sleep until", "park until woken".

mod overflow;
pub(crate) mod reactor;
mod scheduler;
pub(crate) mod stack;
mod task;
mod timer;

pub use reactor::Direction;
pub use scheduler::in_coroutine;
pub(crate) use scheduler::{
    current_task, fd_closing, fd_created, note_signal, park, root_unparker, signal_counts,
    sleep_until, wait_fd, with_scheduler, yield_now,
};
pub(crate) use task::{Unparker, Wake};
