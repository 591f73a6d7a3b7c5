//! Signals and the parks they end, per scheduler.
//!
//! A handler that runs on a scheduler's thread records its signal number
//! (`note_signal`, async-signal-safe). The scheduler then interrupts each park
//! whose signal mask lets that signal in, as the kernel interrupts only the
//! blocked calls that would receive it: a plain park (a read, a sleep) has its
//! coroutine's mask (below); a park for a call that carries a mask of its own
//! (`pselect`, `ppoll`, `epoll_pwait`, `sigsuspend`) has that mask, and while
//! such parks exist the scheduler's own wait lets in whatever one of them does.
//!
//! Signal waits (the `sigwait` family) park on a signalfd the scheduler owns,
//! whose mask covers every set waited for; when it is readable every such waiter
//! retries its call, which consumes the signal as the kernel does.
//!
//! Green threads have signal masks of their own (`adopt_mask`): virtual, kept
//! in the task, read and written without a system call. The OS thread's real
//! mask is the intersection of those of the green threads living on it (a
//! signal is let in if any of them lets it in), recomputed only when one of
//! them changes its mask, starts or ends — never at a switch. A handler that
//! runs then interrupts the parks of the green threads whose own mask lets its
//! signal in. Coroutines without a mask of their own (the crate's) have the
//! OS thread's.
//!
//! Masks are the kernel's 64-bit sets: bit `sig - 1` for signal `sig`.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ownfd::OwnFd;
use super::reactor::{Reactor, SIGNAL_TOKEN};
use super::scheduler::{current_scheduler, current_task};
use super::task::{Unparker, Wake};
use super::tp_local::tp_local;

// Per OS thread, reached through `per_os_thread`: a handler that runs in a
// coroutine with TLS of its own notes it in its OS thread's block, where the
// scheduler looks. `tp_local`s: a park reads `DELIVERED` every time, and a
// std thread-local in a green thread's own block is a `__tls_get_addr`
// through that block's vector (perf: 1.8 % of a green C echo server).
tp_local! {
    /// Signals whose handler ran on this thread since the scheduler last
    /// looked: (all of them, those whose handler lacks SA_RESTART). Written
    /// from signal handlers: one atomic instruction each.
    static DELIVERED: (AtomicU64, AtomicU64) = zeroed;
}
tp_local! {
    /// Handlers run on this thread: (all, those without SA_RESTART), for plain
    /// threads that block in the real call and must tell a restart from EINTR,
    /// and for coroutines whose wait a handler run in another coroutine of the
    /// thread interrupts.
    static COUNTS: Cell<(u32, u32)> = zeroed;
}
tp_local! {
    /// Handlers running on this thread now (nested ones count; one left by
    /// `siglongjmp` stays counted, which costs only a system call per query),
    /// as the kernel's mask they stand for.
    static IN_HANDLER: Cell<u32> = zeroed;
}

/// Runs `f` on this OS thread's record of delivered signals: a handler that
/// ran in a coroutine with TLS of its own notes it there too, where the
/// scheduler looks.
#[inline]
fn delivered<R>(f: impl FnOnce(&(AtomicU64, AtomicU64)) -> R) -> Option<R> {
    Some(DELIVERED.per_os_thread(f))
}

/// Runs `f` on this OS thread's handler counts (as `delivered`: a handler
/// may run in a coroutine with TLS of its own while the coroutine whose wait
/// it interrupts has another).
#[inline]
fn counts<R>(f: impl FnOnce(&Cell<(u32, u32)>) -> R) -> Option<R> {
    Some(COUNTS.per_os_thread(f))
}

/// The kernel's bit for `sig` (0 for a number out of range).
pub(crate) fn bit(sig: libc::c_int) -> u64 {
    if (1..=64).contains(&sig) {
        1 << (sig - 1)
    } else {
        0
    }
}

/// The kernel's part of a glibc `sigset_t` (its first 64 bits).
///
/// # Safety
/// `set` points at a readable `sigset_t`.
pub(crate) unsafe fn kernel_set(set: *const libc::sigset_t) -> u64 {
    // SAFETY: a sigset_t starts with the kernel's 64-bit set, in the same
    // layout (an array of unsigned longs, bit `sig - 1`).
    unsafe { set.cast::<u64>().read_unaligned() }
}

/// This thread's signal mask, with the raw system call (no hook, no lock).
pub(crate) fn thread_mask() -> u64 {
    let mut old = 0u64;
    // SAFETY: a query only (null new set), into a kernel-sized set of ours.
    unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u64>(),
            &mut old,
            size_of::<u64>(),
        )
    };
    old
}

/// Sets this thread's signal mask, with the raw system call. The monitor's
/// capture signal stays open (a green thread's mask is its own, virtual), and
/// SIGSYS too where Syscall User Dispatch is on: a trap while it is blocked
/// would kill the process.
pub(super) fn set_thread_mask(mask: u64) {
    let mask = mask & !super::monitor::signal_bit();
    let mask = if super::dispatch::on_here() {
        mask & !bit(libc::SIGSYS)
    } else {
        mask
    };
    // SAFETY: a kernel-sized set of ours; no old set asked for.
    unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask,
            std::ptr::null_mut::<u64>(),
            size_of::<u64>(),
        )
    };
}

/// glibc's SIGCANCEL, its own: a program can neither block, wait for nor send it.
pub(crate) const SIGCANCEL: libc::c_int = 32;
/// glibc's SIGSETXID, as SIGCANCEL.
pub(crate) const SIGSETXID: libc::c_int = 33;

/// True for glibc's own signals, which its `pthread_sigmask` and `sigdelset`
/// drop and its `pthread_kill` refuses.
pub(crate) fn glibc_internal(sig: libc::c_int) -> bool {
    sig == SIGCANCEL || sig == SIGSETXID
}

/// SIGKILL and SIGSTOP: the kernel lets no mask hold them and no wait take them.
pub(crate) fn unstoppable() -> u64 {
    bit(libc::SIGKILL) | bit(libc::SIGSTOP)
}

/// Signals no mask can hold: the unstoppable ones (the kernel drops them) and
/// glibc's own (its `pthread_sigmask` drops them).
fn unmaskable() -> u64 {
    unstoppable() | bit(SIGCANCEL) | bit(SIGSETXID)
}

/// The fault signals: raised on the thread whose instruction faulted (or hit a
/// breakpoint), never sent to interrupt a call.
pub(crate) const FAULTS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

/// What an OS thread with no green thread left blocks: everything a thread
/// may block, but the fault signals (blocked, a fault kills the process at
/// once), SIGSYS included since a seccomp filter raises it the same way.
/// Process-directed signals then go to threads that do live.
fn idle_mask() -> u64 {
    let faults = FAULTS
        .iter()
        .fold(bit(libc::SIGSYS), |acc, &s| acc | bit(s));
    !unmaskable() & !faults
}

/// True on the process's first thread (the one green `main` runs on).
fn is_main_thread() -> bool {
    // SAFETY: gettid and getpid have no preconditions.
    unsafe { crate::sys::raw_syscall!(libc::SYS_gettid) == libc::getpid() as libc::c_long }
}

/// The running green thread's own mask; None outside one (outside a
/// coroutine, or in a coroutine that has the OS thread's).
pub(crate) fn own_mask() -> Option<u64> {
    current_task().and_then(|t| t.sigmask.get())
}

/// The running green thread's own mask as it reads it: inside a handler, with
/// what the kernel blocked for the handler (its `sa_mask` and, without
/// SA_NODEFER, its signal): the OS thread's mask less what we set.
pub(crate) fn own_mask_seen() -> Option<u64> {
    let own = own_mask()?;
    if IN_HANDLER.per_os_thread(Cell::get) == 0 {
        return Some(own);
    }
    let applied = current_scheduler()
        .and_then(|s| s.signals.masks.applied.get())
        .unwrap_or(own);
    Some(own | (thread_mask() & !applied))
}

/// Runs a signal handler `f`, known to `own_mask_seen` meanwhile.
/// Async-signal-safe: one const thread-local.
pub(crate) fn in_handler(f: impl FnOnce()) {
    IN_HANDLER.per_os_thread(|n| n.set(n.get() + 1));
    f();
    IN_HANDLER.per_os_thread(|n| n.set(n.get().saturating_sub(1)));
}

/// The caller's mask: its own in a green thread, else the OS thread's.
pub(crate) fn caller_mask() -> u64 {
    own_mask().unwrap_or_else(thread_mask)
}

/// Gives the running coroutine a mask of its own, `mask`, for good (a green
/// thread at its start: its creator's). Nothing outside a coroutine.
pub(crate) fn adopt_mask(mask: u64) {
    let (Some(task), Some(sched)) = (current_task(), current_scheduler()) else {
        return;
    };
    let mask = mask & !unmaskable();
    let masks = &sched.signals.masks;
    masks.changing(|| {
        if let Some(old) = task.sigmask.replace(Some(mask)) {
            masks.count(old, false);
        } else {
            masks.live.set(masks.live.get() + 1);
        }
        masks.count(mask, true);
        masks.apply();
    });
}

/// Replaces the running green thread's own mask with `mask`: the OS thread's
/// follows if the intersection changed (a pending signal it now lets in is
/// delivered before this returns, as by `sigprocmask`). Nothing outside a
/// green thread.
pub(crate) fn set_own_mask(mask: u64) {
    let (Some(task), Some(sched)) = (current_task(), current_scheduler()) else {
        return;
    };
    let Some(old) = task.sigmask.get() else {
        return;
    };
    let mask = mask & !unmaskable();
    if mask != old {
        let masks = &sched.signals.masks;
        // A handler that interrupted a change of this thread's counts cannot
        // make one of its own: its change is dropped (docs/limits.md: approximate).
        masks.changing(|| {
            task.sigmask.set(Some(mask));
            masks.count(old, false);
            masks.count(mask, true);
            masks.apply();
        });
    }
}

/// Runs `f` (a call that passes the thread's mask on: an exec, a spawn, a
/// native thread's creation; a fork child gets it in `after_fork`) with the running green thread's own mask in force on
/// the OS thread, then puts the intersection back. No other coroutine of the
/// thread runs meanwhile; a signal only they let in waits until after.
pub(crate) fn with_own_mask<R>(f: impl FnOnce() -> R) -> R {
    let Some(mask) = own_mask() else {
        return f();
    };
    let Some(sched) = current_scheduler() else {
        return f();
    };
    let applied = sched.signals.masks.applied.get();
    if applied == Some(mask) {
        return f();
    }
    set_thread_mask(mask);
    let r = f();
    set_thread_mask(applied.unwrap_or(mask));
    r
}

/// Delivers the pending signals that `mask` lets in, as a call made with that
/// mask would on its way in: their handlers run now, with `mask` in force.
/// True if one did.
pub(crate) fn deliver_pending(mask: u64) -> bool {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: no fds, our timespec and kernel-sized set: the call only swaps
    // the mask, delivers what it lets in (failing with EINTR), and swaps it back.
    let r = unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_ppoll,
            std::ptr::null::<libc::pollfd>(),
            0,
            &zero,
            &mask,
            size_of::<u64>(),
        )
    };
    r < 0
}

/// Records, from a signal handler, that the handler for `sig` ran on this thread.
/// Only touches const thread-locals: async-signal-safe.
pub(crate) fn note_signal(sig: libc::c_int, restart: bool) {
    let b = bit(sig);
    let _ = delivered(|(all, no_restart)| {
        if !restart {
            no_restart.fetch_or(b, Ordering::Relaxed);
        }
        all.fetch_or(b, Ordering::Release);
    });
    let _ = counts(|s| {
        let (all, no_restart) = s.get();
        s.set((
            all.wrapping_add(1),
            no_restart.wrapping_add(u32::from(!restart)),
        ));
    });
}

/// (handlers run on this thread, those of them without SA_RESTART).
pub(crate) fn signal_counts() -> (u32, u32) {
    counts(Cell::get).unwrap_or_default()
}

/// The own masks of the green threads of one scheduler, as counts.
pub(super) struct Masks {
    /// How many of them block each signal (index `sig - 1`).
    blocked: RefCell<[u32; 64]>,
    /// How many there are.
    live: Cell<u32>,
    /// The OS thread's mask as last set here; None before the first.
    applied: Cell<Option<u64>>,
    /// A change of the counts is under way: a signal handler that runs in the
    /// middle of one and changes its mask must not touch them.
    busy: Cell<bool>,
}

impl Default for Masks {
    fn default() -> Masks {
        Masks {
            blocked: RefCell::new([0; 64]),
            live: Cell::new(0),
            applied: Cell::new(None),
            busy: Cell::new(false),
        }
    }
}

impl Masks {
    /// Runs `change` unless a change is under way on this thread (then this
    /// is a signal handler that interrupted it, and nothing happens).
    fn changing(&self, change: impl FnOnce()) {
        if self.busy.replace(true) {
            return;
        }
        change();
        self.busy.set(false);
    }

    fn count(&self, mask: u64, add: bool) {
        let mut blocked = self.blocked.borrow_mut();
        let mut rest = mask;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            blocked[i] = if add { blocked[i] + 1 } else { blocked[i] - 1 };
        }
    }

    /// Sets the OS thread's mask to the intersection of the own masks, if it
    /// changed. Called only when one of them changed: a system call then.
    fn apply(&self) {
        let live = self.live.get();
        let mask = if live == 0 {
            idle_mask()
        } else {
            let blocked = self.blocked.borrow();
            (0..64)
                .filter(|&i| blocked[i] == live)
                .fold(0, |acc, i| acc | 1 << i)
        };
        if self.applied.get() != Some(mask) {
            self.applied.set(Some(mask));
            set_thread_mask(mask);
        }
    }

    /// A task with its own `mask` ended.
    pub(super) fn ended(&self, mask: u64) {
        self.changing(|| {
            self.count(mask, false);
            self.live.set(self.live.get() - 1);
            if self.live.get() == 0 && is_main_thread() {
                // Green `main` ended: exit handlers and destructors run next on
                // this thread, natively with main's mask, not the idle one.
                if self.applied.get() != Some(mask) {
                    self.applied.set(Some(mask));
                    set_thread_mask(mask);
                }
            } else {
                self.apply();
            }
        });
    }
}

/// A plain park's mask when it has the OS thread's (no valid own mask has
/// every bit: the unmaskable ones are never in one).
pub(super) const THREAD_MASK: u64 = u64::MAX;

/// The signals one `interrupt` took: which plain parks they end, and how.
pub(super) struct Hits {
    all: u64,
    no_restart: u64,
    /// The OS thread's mask, read at the first park that has it.
    os: Cell<Option<u64>>,
}

impl Hits {
    fn wake(&self, hits: u64) -> Wake {
        Wake::Interrupted {
            restart: hits & self.no_restart == 0,
        }
    }

    /// How a plain park whose coroutine has `mask` (`THREAD_MASK`: the OS
    /// thread's) ends, if these signals reach it.
    pub(super) fn plain(&self, mask: u64) -> Option<Wake> {
        let mask = if mask == THREAD_MASK {
            match self.os.get() {
                Some(os) => os,
                None => {
                    let os = thread_mask();
                    self.os.set(Some(os));
                    os
                }
            }
        } else {
            mask
        };
        let hits = self.all & !mask;
        (hits != 0).then(|| self.wake(hits))
    }
}

/// Which list a park is in, and where.
#[derive(Clone, Copy)]
pub(super) enum Entry {
    Masked(usize),
    Waiting(usize),
}

/// One scheduler's interruptible parks and signal waits.
#[derive(Default)]
pub(super) struct Signals {
    /// The green threads' own masks.
    pub(super) masks: Masks,
    /// Parks with a mask of their own, kept with it.
    masked: RefCell<Slab>,
    /// Signal waits, with the set each waits for.
    waiting: RefCell<Slab>,
    /// The signalfd for `waiting` (one of the runtime's own fds).
    signalfd: RefCell<Option<OwnFd>>,
    /// The set it watches (all once it could not be had: never retried).
    watched: Cell<u64>,
}

impl Signals {
    pub(super) fn insert_masked(&self, who: Unparker, mask: u64) -> Entry {
        Entry::Masked(self.masked.borrow_mut().insert(who, mask))
    }

    pub(super) fn insert_waiting(&self, who: Unparker, set: u64) -> Entry {
        Entry::Waiting(self.waiting.borrow_mut().insert(who, set))
    }

    /// Takes the park numbered `seq` out of its list, if it is still there.
    pub(super) fn remove(&self, entry: Entry, seq: u64) {
        match entry {
            Entry::Masked(i) => self.masked.borrow_mut().remove(i, seq),
            Entry::Waiting(i) => self.waiting.borrow_mut().remove(i, seq),
        }
    }

    /// True if a handler ran on this thread since the last `interrupt`. A
    /// plain load: this runs every scheduler round.
    #[inline]
    pub(super) fn pending(&self) -> bool {
        delivered(|d| d.0.load(Ordering::Relaxed)).unwrap_or(0) != 0
    }

    /// Takes the signals handled since the last check, interrupts the parks
    /// with masks of their own that they let in, and says which plain parks
    /// they interrupt (the scheduler finds those in its tasks: a plain park
    /// only stores its mask there, `Task::plain_mask`).
    #[cold]
    #[inline(never)]
    pub(super) fn interrupt(&self) -> Option<Hits> {
        let (all, no_restart) = delivered(|(all, no_restart)| {
            let all = all.swap(0, Ordering::Acquire);
            // A handler that runs between the two keeps its bit in both for
            // the next check.
            (all, no_restart.fetch_and(!all, Ordering::Relaxed) & all)
        })?;
        let hits = Hits {
            all,
            no_restart,
            os: Cell::new(None),
        };
        let hit: Vec<_> = self
            .masked
            .borrow_mut()
            .drain_where(|mask| all & !mask != 0);
        for (who, mask) in hit {
            who.unpark(hits.wake(all & !mask));
        }
        Some(hits)
    }

    /// The mask for the scheduler's own wait: the thread's, less what the parks
    /// with masks of their own let in. None while there are none (the thread's
    /// mask stays as it is).
    pub(super) fn wait_mask(&self) -> Option<u64> {
        let masked = self.masked.borrow();
        if masked.is_empty() {
            return None;
        }
        let let_in = masked.values().fold(0, |acc, mask| acc | !mask);
        Some(thread_mask() & !let_in)
    }

    /// Makes the signalfd watch every set waited for, before the scheduler's
    /// wait. It only grows: a signal nobody waits for any more costs a spurious
    /// wake-up when it arrives (the fd is edge-triggered), a change costs a
    /// system call.
    pub(super) fn watch(&self, reactor: &Reactor) {
        let waiting = self.waiting.borrow();
        if waiting.is_empty() {
            return;
        }
        let wanted = waiting.values().fold(0, |acc, set| acc | set);
        let watched = self.watched.get();
        if wanted & !watched == 0 {
            return;
        }
        let set = watched | wanted;
        let mut own = self.signalfd.borrow_mut();
        let fd = own.as_ref().map_or(-1, OwnFd::raw);
        // SAFETY: a kernel-sized set of ours; `fd` is -1 or our signalfd.
        let r = unsafe {
            crate::sys::raw_syscall!(
                libc::SYS_signalfd4,
                fd,
                &set,
                size_of::<u64>(),
                libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
            )
        } as RawFd;
        let registered = r >= 0
            && (own.is_some() || {
                let new = OwnFd::adopt(r);
                let ok = reactor
                    .epoll()
                    .register_readable(new.raw(), SIGNAL_TOKEN)
                    .is_ok();
                // Refused by the reactor: dropped, so closed.
                if ok {
                    *own = Some(new);
                }
                ok
            });
        if !registered {
            // Said once: the waits then end only by timeout or handler.
            crate::sys::diag(&[
                b"patchall: no signalfd: sigwait in coroutines never sees its signal\n",
            ]);
            self.watched.set(u64::MAX);
            return;
        }
        self.watched.set(set);
    }

    /// The signalfd is readable: every signal wait retries its call.
    pub(super) fn wake_waiting(&self) {
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for (who, _) in waiting.into_entries() {
            who.unpark(Wake::Ready);
        }
    }
}

/// Unparkers (each with a mask or set) by slot, with O(1) insert and remove.
#[derive(Default)]
struct Slab {
    entries: Vec<Option<(Unparker, u64)>>,
    free: Vec<usize>,
    len: usize,
}

impl Slab {
    fn insert(&mut self, who: Unparker, mask: u64) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some((who, mask));
                i
            }
            None => {
                self.entries.push(Some((who, mask)));
                self.entries.len() - 1
            }
        }
    }

    /// Removes slot `i` if it still holds the park numbered `seq` (the slab may have
    /// been drained and refilled meanwhile).
    fn remove(&mut self, i: usize, seq: u64) {
        if self
            .entries
            .get(i)
            .and_then(Option::as_ref)
            .is_some_and(|(w, _)| w.seq == seq)
        {
            self.entries[i] = None;
            self.free.push(i);
            self.len -= 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().flatten().map(|&(_, v)| v)
    }

    /// Takes out the entries whose value satisfies `hit`.
    fn drain_where(&mut self, hit: impl Fn(u64) -> bool) -> Vec<(Unparker, u64)> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.as_ref().is_some_and(|&(_, v)| hit(v)) {
                out.extend(e.take());
                self.free.push(i);
                self.len -= 1;
            }
        }
        out
    }

    fn into_entries(self) -> impl Iterator<Item = (Unparker, u64)> {
        self.entries.into_iter().flatten()
    }
}
