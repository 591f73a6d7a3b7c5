//! Parking the running coroutine: until a wake-up, a deadline, a signal or
//! cancellation (`park_as`), until an fd is ready (`wait_any`), a yield, a
//! sleep, a signal wait.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

use super::{current_arc, current_scheduler, current_task, with_scheduler};
use crate::runtime::observe::{self, UNNAMED, Wait, WaitsOn};
use crate::runtime::reactor::{Direction, Prepared};
use crate::runtime::task::{State, Task, Unparker, Wake};
use crate::runtime::uring::{Io, Op};

/// What, besides its own wake-up and deadline, may end a park.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Breaks {
    /// Nothing: a wait whose caller can only report success (a lock, a join).
    Never,
    /// Cancellation (`Wake::Cancelled`) and the task's `timeout()` deadline
    /// (`Wake::Expired`): a wait whose caller can report failure (a channel).
    Stop,
    /// `Stop`, and a signal handler run on this thread (`Wake::Interrupted`): a
    /// wait that stands in for a system call (I/O, sleep).
    Syscall,
    /// A signal handler only, not `Stop`: a wait that stands in for a call
    /// whose only early end is EINTR (`sem_wait`).
    Signal,
    /// `Syscall` for a call made with a signal mask of its own (`pselect`,
    /// `sigsuspend`; the kernel's 64-bit set): a handler interrupts the park
    /// if this mask, not the thread's, lets its signal in, and the scheduler's
    /// own wait lets in what it does.
    Masked(u64),
}

/// Suspends the running coroutine until an `Unparker` made by `register` wakes it
/// or `deadline` passes. `register` receives the handle; it returns false if the
/// condition already holds (then nothing parks). Must be called in a coroutine.
pub(crate) fn park(deadline: Option<Instant>, register: impl FnOnce(Unparker) -> bool) -> Wake {
    park_as(deadline, Breaks::Never, register)
}

/// `park`, also ended by what `breaks` names. A stoppable park in a cancelled
/// coroutine, or past the task's deadline, returns at once without registering.
pub(crate) fn park_as(
    deadline: Option<Instant>,
    breaks: Breaks,
    register: impl FnOnce(Unparker) -> bool,
) -> Wake {
    park_on_what(WaitsOn::Nothing, deadline, breaks, register)
}

/// `park_as`, recording what the park waits on for snapshots.
pub(crate) fn park_on_what(
    on: WaitsOn,
    deadline: Option<Instant>,
    breaks: Breaks,
    register: impl FnOnce(Unparker) -> bool,
) -> Wake {
    let task = current_task().expect("park is only called in a coroutine");
    let outer = task.in_park.replace(true);
    let wake = park_task(task, on, deadline, breaks, register);
    task.in_park.set(outer);
    wake
}

/// Runs `f`, runtime bookkeeping on a coroutine's stack (a futex wake, the
/// lot's queue after a park), as `park_as` runs its own: a futex wait it
/// reaches (one of our own locks, contended, through the `syscall` hook) goes
/// to the kernel instead of parking the coroutine. Our locks' holders never
/// park, so that wait is short; a coroutine parked inside a wake would leave
/// the wake half delivered, the glibc lock around it (a malloc arena's, whose
/// unlock made the wake) contended, and its scheduler, which allocates,
/// blocked in the kernel behind it (measured: the stdio chat on two workers
/// hung so).
pub(crate) fn without_parking<R>(f: impl FnOnce() -> R) -> R {
    let task = current_task();
    let outer = task.map(|t| t.in_park.replace(true));
    let r = f();
    if let (Some(t), Some(o)) = (task, outer) {
        t.in_park.set(o);
    }
    r
}

fn park_task(
    task: &Task,
    on: WaitsOn,
    deadline: Option<Instant>,
    breaks: Breaks,
    register: impl FnOnce(Unparker) -> bool,
) -> Wake {
    let sched = current_scheduler().expect("a coroutine runs on a scheduler");
    // Taken whether or not this parks: a label is for one park only.
    let label = task.label.replace(&UNNAMED);
    let expiry = match breaks {
        Breaks::Never | Breaks::Signal => None,
        Breaks::Stop | Breaks::Syscall | Breaks::Masked(_) => {
            if task.cancelled.get() {
                return Wake::Cancelled;
            }
            task.deadline.get()
        }
    };
    // The task's deadline wins ties: the enclosing timeout() is what ran out.
    let expires_first = expiry.is_some_and(|e| deadline.is_none_or(|d| e <= d));
    if expires_first && expiry.is_some_and(|e| Instant::now() >= e) {
        return Wake::Expired;
    }
    let seq = task.park_seq.get() + 1;
    task.park_seq.set(seq);
    let me = Unparker {
        home: sched.remote.clone(),
        task: Some(current_arc(task)),
        seq,
    };
    let timer_at = if expires_first { expiry } else { deadline };
    // A copy only for a timer or a masked park: most parks (an fd wait
    // without a deadline) hand their only waker to `register`, two
    // reference counts up and down fewer.
    let mut kept = (timer_at.is_some() || matches!(breaks, Breaks::Masked(_))).then(|| me.clone());
    if !register(me) {
        return Wake::Ready;
    }
    let slot = match breaks {
        Breaks::Never | Breaks::Stop => None,
        // A handler that ran before this park began interrupts the parks
        // that were waiting then, never this one (the kernel would not
        // interrupt a call made after the handler): account for it first.
        Breaks::Syscall | Breaks::Signal => {
            sched.check_signals();
            let mask = task
                .sigmask
                .get()
                .unwrap_or(crate::runtime::signals::THREAD_MASK);
            task.plain_mask.set(Some(mask));
            None
        }
        Breaks::Masked(mask) => {
            sched.check_signals();
            let who = kept.clone().expect("kept for a masked park");
            Some(sched.signals.insert_masked(who, mask))
        }
    };
    let timer = timer_at.map(|d| {
        let who = kept.take().expect("kept for a timer");
        sched.timers.borrow_mut().insert(d, who)
    });
    task.wait.set(MaybeUninit::new(Wait {
        label,
        on,
        deadline: timer_at,
        since: None,
    }));
    if observe::on() {
        sched.remote.counters.parked(label.family);
    }
    task.state.set(State::Parked);
    task.stack_hint.set(stack_pointer());
    // SAFETY: `yielder` was set by the coroutine body before any user code ran, and
    // the Yielder lives on this coroutine's stack for as long as it runs.
    unsafe { (*task.yielder.get()).suspend(()) };
    let wake = task.wake.get();
    if let (Some(key), false) = (timer, wake == Wake::TimedOut) {
        sched.timers.borrow_mut().cancel(key);
    }
    if let Some(slot) = slot {
        sched.signals.remove(slot, seq);
    }
    task.plain_mask.set(None);
    match wake {
        Wake::TimedOut if expires_first => Wake::Expired,
        wake => wake,
    }
}

/// Parks the running coroutine until `fd` is ready for `dir`, `deadline` passes or
/// the fd is closed. `Ready` may be spurious: the caller retries its call.
pub(crate) fn wait_fd(fd: RawFd, dir: Direction, deadline: Option<Instant>) -> io::Result<Wake> {
    wait_any(&[(fd, dir)], deadline)
}

/// Parks the running coroutine until any of `fds` is ready (poll, select, epoll
/// on many fds), `deadline` passes, or one of them is closed. Fails, without
/// parking, if an fd cannot be polled.
pub(crate) fn wait_any(fds: &[(RawFd, Direction)], deadline: Option<Instant>) -> io::Result<Wake> {
    wait_any_as(fds, deadline, Breaks::Syscall)
}

/// `wait_any`, ended by signals as `breaks` says (`Syscall` or `Masked`).
pub(crate) fn wait_any_as(
    fds: &[(RawFd, Direction)],
    deadline: Option<Instant>,
    breaks: Breaks,
) -> io::Result<Wake> {
    let sched = current_scheduler().expect("wait_any is only called in a coroutine");
    let mut failed = None;
    let mut me = ptr::null();
    let mut queued = 0;
    let on = fds
        .first()
        .map_or(WaitsOn::Nothing, |&(fd, dir)| WaitsOn::Fd {
            fd,
            dir,
            more: u32::try_from(fds.len() - 1).unwrap_or(u32::MAX),
        });
    let wake = park_on_what(on, deadline, breaks, |who| {
        me = who.task.as_ref().map_or(ptr::null(), Arc::as_ptr);
        let mut reactor = sched.reactor.borrow_mut();
        // The last fd gets `who` itself: one waiter handle fewer to count.
        let mut who = Some(who);
        for (i, &(fd, dir)) in fds.iter().enumerate() {
            let w = if i + 1 == fds.len() {
                who.take()
            } else {
                who.clone()
            };
            let w = w.expect("taken at the last fd only");
            match reactor.prepare_wait(fd, dir, w) {
                Ok(Prepared::Queued) => queued += 1,
                Ok(Prepared::Retry) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        queued == fds.len()
    });
    // Whatever woke us, the other registrations are stale now. A lone fd's
    // `Ready` came from its reactor, which took the waiter out as it woke it
    // (the only other copy of the handle, a timer's, wakes `TimedOut`): its
    // slot, cold by now in a busy server, need not be read again.
    let taken = fds.len() == 1 && wake == Wake::Ready && breaks == Breaks::Syscall;
    if !me.is_null() && !taken {
        let mut reactor = sched.reactor.borrow_mut();
        for &(fd, dir) in &fds[..queued] {
            reactor.cancel_wait(fd, dir, me);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(wake),
    }
}

/// Starts `io` on the running coroutine's scheduler's ring (`uring::Ring::start`)
/// and parks until it completes, `deadline` passes, or what `Breaks::Syscall`
/// names ends the park; an operation that was started and has not completed
/// then is cancelled, and this waits for its completion. None, without
/// parking: the scheduler has no ring. On return `op.res` holds the
/// operation's result if it was started.
///
/// # Safety
/// The buffer `buf..buf+len` stays valid for the kernel's access, and is used
/// by no one else, until this returns.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn ring_io(
    op: &Op,
    io: Io,
    fd: RawFd,
    dir: Direction,
    buf: *mut u8,
    len: usize,
    flags: libc::c_int,
    deadline: Option<Instant>,
) -> Option<Wake> {
    let sched = current_scheduler().expect("ring_io is only called in a coroutine");
    sched.reactor.borrow_mut().ring()?;
    let mut started = false;
    let on = WaitsOn::Fd { fd, dir, more: 0 };
    let wake = park_on_what(on, deadline, Breaks::Syscall, |who| {
        op.who.set(Some(who));
        let mut reactor = sched.reactor.borrow_mut();
        let ring = reactor.ring().expect("checked above");
        // SAFETY: `op` is the caller's and outlives this function, which
        // returns only once the operation completed; the buffer is the
        // caller's promise.
        unsafe { ring.start(io, fd, buf, len, flags, op) };
        started = true;
        true
    });
    if started && op.res.get().is_none() {
        let mut reactor = sched.reactor.borrow_mut();
        reactor.ring().expect("checked above").cancel(op);
        drop(reactor);
        // Not stoppable: the kernel may still write into the buffer.
        while op.res.get().is_none() {
            park(None, |who| {
                op.who.set(Some(who));
                true
            });
        }
    }
    Some(wake)
}

/// The stack pointer of the frame that is about to switch out: its
/// resumption's prefetch (`run::prefetch_resumption`) starts just below, so
/// that it covers the whole frame. The address of a local would lie
/// somewhere inside a frame of a few hundred bytes, leaving the lines below
/// it, which the park writes again next time, to miss.
#[inline(always)]
fn stack_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        // SAFETY: reads a register; touches no memory, stack or flags.
        unsafe {
            std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
        }
        sp
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let here = 0u8;
        ptr::from_ref(&here) as usize
    }
}

/// Requeues the running coroutine behind the others (in a coroutine): `resume`
/// sees it still runnable when it switches out, and queues it.
#[inline]
pub(crate) fn yield_now() {
    let task = current_task().expect("in a coroutine");
    task.state.set(State::Runnable);
    task.stack_hint.set(stack_pointer());
    // SAFETY: as in `park`.
    unsafe { (*task.yielder.get()).suspend(()) };
}

/// Sleeps the running coroutine until `deadline` (in a coroutine).
pub(crate) fn sleep_until(deadline: Instant) -> Wake {
    park_as(Some(deadline), Breaks::Syscall, |_| true)
}

/// Parks the running coroutine until a signal of `set` (the kernel's 64-bit set)
/// may be pending for this thread, `deadline` passes, or a signal handler runs
/// (as for `Breaks::Syscall`). `Ready` may be spurious: the caller retries its
/// call, which consumes the signal.
pub(crate) fn wait_signal(set: u64, deadline: Option<Instant>) -> Wake {
    let sched = current_scheduler().expect("wait_signal is only called in a coroutine");
    let mut entry = None;
    let wake = park_as(deadline, Breaks::Syscall, |who| {
        let seq = who.seq;
        entry = Some((sched.signals.insert_waiting(who, set), seq));
        true
    });
    if let Some((entry, seq)) = entry {
        sched.signals.remove(entry, seq);
    }
    wake
}

/// A handle on the current thread's scheduler for a plain (non-coroutine) waiter.
pub(crate) fn root_unparker() -> io::Result<Unparker> {
    with_scheduler(|s| Unparker {
        home: s.remote.clone(),
        task: None,
        seq: 0,
    })
}
