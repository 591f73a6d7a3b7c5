//! A coroutine as the scheduler sees it, and the handle that wakes it.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

use corosensei::{Coroutine, Yielder};

use super::observe::{Label, UNNAMED, Wait};
use super::scheduler::Remote;
use super::stack::{Canary, Stack};

pub(crate) type Co = Coroutine<(), (), (), Stack>;

/// Why a parked coroutine was resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// What it waited for happened (fd ready, joined task done, value available).
    Ready,
    /// Its deadline passed first.
    TimedOut,
    /// The fd it waited on was closed (or `dup2`-ed over) by someone else.
    Closed,
    /// A signal handler ran on this thread while it was parked, for a signal its
    /// mask lets in (see `runtime::signals`); `restart` is true if every such
    /// handler that ran was installed with SA_RESTART.
    Interrupted { restart: bool },
    /// Someone asked for this coroutine to be cancelled (`TaskHandle::cancel`,
    /// which `JoinHandle::kill` uses). Hooks map it to ECANCELED.
    Cancelled,
    /// The deadline of an enclosing `patchall::timeout` passed (the task's
    /// `deadline`, not the park's own). Ends only parks that may be stopped
    /// (`Breaks::Stop`, `Breaks::Syscall`), like `Cancelled`; once the deadline has
    /// passed, every such park returns `Expired` at once.
    ///
    /// How a hook maps it, so that plain code unwinds through its own `?`:
    /// - a call that reports errors (read, recv, accept, connect, poll, select,
    ///   epoll_wait…): fail with ETIMEDOUT (`io::ErrorKind::TimedOut`);
    /// - a sleep (nanosleep, clock_nanosleep, usleep, sleep): return at once as if
    ///   the time had elapsed (0, nothing left), and likewise for `Cancelled`.
    ///   EINTR would be wrong: `std::thread::sleep` retries on EINTR, and the
    ///   retry returns at once again, spinning until the original deadline.
    ///
    /// A loop that retries a park until its own deadline must stop on `Expired`
    /// and `Cancelled`: both repeat at once, forever.
    Expired,
}

/// Where a coroutine's own code starts, for reports that name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    None,
    /// A C start routine (a green thread's, `pa_spawn`'s function).
    Code(usize),
    /// The type of a Rust closure (`std::any::type_name`).
    Type(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Runnable,
    Running,
    Parked,
    Done,
}

/// One coroutine. Lives in an `Arc` so wakers on other threads can name it; every
/// field but `id` and `name` is touched only by the owning scheduler's thread.
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) co: UnsafeCell<Option<Co>>,
    pub(crate) yielder: Cell<*const Yielder<(), ()>>,
    pub(crate) errno: Cell<i32>,
    /// The thread pointer of its own TLS block (`tls`), 0 for the carrier's.
    pub(crate) tls: Cell<usize>,
    pub(crate) state: Cell<State>,
    /// Bumped at every park: a wake-up carrying an older value is stale.
    pub(crate) park_seq: Cell<u64>,
    pub(crate) wake: Cell<Wake>,
    /// The stack's overflow range and size, readable from the SIGSEGV handler.
    pub(crate) guard: (usize, usize),
    pub(crate) stack_size: usize,
    pub(crate) canary: Option<Canary>,
    /// A word the layer above keeps per coroutine (a green thread's record).
    pub(crate) local: Cell<usize>,
    /// Per-coroutine storage for calls whose C contract is a per-thread static
    /// result (`gethostbyname`); freed with the task.
    pub(crate) scratch: UnsafeCell<Option<Box<dyn Any + Send>>>,
    /// Set by `TaskHandle::cancel`; stays set.
    pub(crate) cancelled: Cell<bool>,
    /// Set by `exit_current`: the coroutine ends without returning.
    pub(crate) exiting: Cell<bool>,
    /// The nearest deadline of the `patchall::timeout` bodies this coroutine is
    /// in; stoppable parks end at it with `Wake::Expired`.
    pub(crate) deadline: Cell<Option<Instant>>,
    /// The next task in the run queue this one is in (see `runq`).
    pub(crate) next: Cell<*const Task>,
    /// A green thread's own signal mask (the kernel's 64-bit set, see
    /// `signals::adopt_mask`); None for a coroutine that has the OS thread's.
    pub(crate) sigmask: Cell<Option<u64>>,
    /// While it is in a plain interruptible park (`Breaks::Syscall`,
    /// `Breaks::Signal`): its mask, `signals::THREAD_MASK` for the OS
    /// thread's. A signal handler run on its thread ends the park if the
    /// mask lets the signal in (`Scheduler::check_signals` looks here).
    pub(crate) plain_mask: Cell<Option<u64>>,
    /// Set by the coroutine's body as it starts (`note_entry`).
    pub(crate) entry: Cell<Entry>,
    /// Inside `park_as` (or `without_parking`), whose bookkeeping a second
    /// park would corrupt: a futex wait made meanwhile (our own locks'
    /// contention, reaching the `syscall` hook) goes to the kernel instead
    /// (see `runtime::futex`).
    pub(crate) in_park: Cell<bool>,
    /// The Syscall User Dispatch selector while it runs (`dispatch`), saved
    /// at every switch out.
    pub(crate) selector: Cell<u8>,
    /// What the next park stands for, set by the layer about to park
    /// (`runtime::label`); every park takes it and leaves `Label::UNNAMED`.
    pub(crate) label: Cell<&'static Label>,
    /// The current (or last) park, for snapshots (`observe`): written by
    /// every park before the task is `Parked`, read only while it is (left
    /// uninitialised at spawn, which then writes a few words fewer).
    pub(crate) wait: Cell<MaybeUninit<Wait>>,
    /// Its neighbours in its scheduler's list of live tasks.
    pub(crate) live_prev: Cell<*const Task>,
    pub(crate) live_next: Cell<*const Task>,
    /// Itself, while it is parked: see `Scheduler::live_head`.
    pub(crate) held: Cell<Option<Arc<Task>>>,
    /// Where its stack was when it last switched out (0: never): the frames
    /// its resumption returns through lie just above.
    pub(crate) stack_hint: Cell<usize>,
    /// The reactor slot of the fd it last waited on (0: none): its next park
    /// on that fd reads it. A prefetch hint only, never dereferenced (the
    /// slot may be gone).
    pub(crate) slot_hint: Cell<usize>,
}

impl Task {
    /// A runnable task that has not run yet; `co` is None only in tests.
    pub(crate) fn new(id: u64, name: Option<Arc<str>>, co: Option<Co>, stack: StackFacts) -> Task {
        Task {
            id,
            name,
            co: UnsafeCell::new(co),
            yielder: Cell::new(ptr::null()),
            errno: Cell::new(0),
            tls: Cell::new(0),
            state: Cell::new(State::Runnable),
            park_seq: Cell::new(0),
            wake: Cell::new(Wake::Ready),
            guard: stack.guard,
            stack_size: stack.size,
            canary: stack.canary,
            local: Cell::new(0),
            scratch: UnsafeCell::new(None),
            cancelled: Cell::new(false),
            in_park: Cell::new(false),
            exiting: Cell::new(false),
            deadline: Cell::new(None),
            next: Cell::new(ptr::null()),
            sigmask: Cell::new(None),
            plain_mask: Cell::new(None),
            entry: Cell::new(Entry::None),
            selector: Cell::new(super::dispatch::ALLOW),
            label: Cell::new(&UNNAMED),
            wait: Cell::new(MaybeUninit::uninit()),
            live_prev: Cell::new(ptr::null()),
            live_next: Cell::new(ptr::null()),
            held: Cell::new(None),
            stack_hint: Cell::new(0),
            slot_hint: Cell::new(0),
        }
    }
}

/// What a task keeps of its stack, for overflow reports and checks.
pub(crate) struct StackFacts {
    pub(crate) guard: (usize, usize),
    pub(crate) size: usize,
    pub(crate) canary: Option<Canary>,
}

impl StackFacts {
    pub(crate) fn of(stack: &Stack) -> StackFacts {
        StackFacts {
            guard: stack.guard_range(),
            size: stack.size(),
            canary: stack.canary(),
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        // A coroutine abandoned while suspended (its scheduler's thread exited, or
        // nothing can ever wake it) may be suspended inside a C frame: unwinding
        // it could abort the process. Leak its stack instead, as gevent abandons
        // greenlets at exit.
        if let Some(co) = self.co.get_mut().take() {
            if co.started() && !co.done() {
                std::mem::forget(co);
                // It may be parked on an offloaded call that still writes
                // into its scratch storage: leak that too.
                std::mem::forget(self.scratch.get_mut().take());
            }
        }
    }
}

// SAFETY: the non-Sync fields (`co`, the `Cell`s) are only accessed on the thread of
// the scheduler that owns the task; other threads only clone the `Arc` and send
// it back to that scheduler's inbox, where the owner thread reads it.
unsafe impl Send for Task {}
// SAFETY: as above.
unsafe impl Sync for Task {}

/// Wakes one particular park of one coroutine (or the plain thread driving a
/// scheduler, when `task` is `None`). Send + Sync: any thread may use it.
#[derive(Clone)]
pub(crate) struct Unparker {
    pub(crate) home: Arc<Remote>,
    pub(crate) task: Option<Arc<Task>>,
    pub(crate) seq: u64,
}

impl Unparker {
    pub(crate) fn unpark(self, wake: Wake) {
        super::scheduler::unpark(self, wake);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A task with no coroutine, for tests of the structures that hold tasks.
    pub(crate) fn plain_task(id: u64) -> Arc<Task> {
        let stack = StackFacts {
            guard: (0, 0),
            size: 0,
            canary: None,
        };
        Arc::new(Task::new(id, None, None, stack))
    }
}
