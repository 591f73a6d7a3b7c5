//! Signals and the parks they end, per scheduler.
//!
//! A handler that runs on a scheduler's thread records its signal number
//! (`note_signal`, async-signal-safe). The scheduler then interrupts each park
//! whose signal mask lets that signal in, as the kernel interrupts only the
//! blocked calls that would receive it: a plain park (a read, a sleep) has the
//! thread's mask; a park for a call that carries a mask of its own (`pselect`,
//! `ppoll`, `epoll_pwait`, `sigsuspend`) has that mask, and while such parks
//! exist the scheduler's own wait lets in whatever one of them does.
//!
//! Signal waits (the `sigwait` family) park on a signalfd the scheduler owns,
//! whose mask covers every set waited for; when it is readable every such waiter
//! retries its call, which consumes the signal as the kernel does.
//!
//! Masks are the kernel's 64-bit sets: bit `sig - 1` for signal `sig`.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ownfd::OwnFd;
use super::reactor::{Reactor, SIGNAL_TOKEN};
use super::task::{Unparker, Wake};

thread_local! {
    /// Signals whose handler ran on this thread since the scheduler last
    /// looked: (all of them, those whose handler lacks SA_RESTART). Written
    /// from signal handlers: const, no destructor, one atomic instruction each.
    static DELIVERED: (AtomicU64, AtomicU64) = const { (AtomicU64::new(0), AtomicU64::new(0)) };
    /// Handlers run on this thread: (all, those without SA_RESTART), for plain
    /// threads that block in the real call and must tell a restart from EINTR.
    static COUNTS: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
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
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u64>(),
            &mut old,
            size_of::<u64>(),
        )
    };
    old
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
        libc::syscall(
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
    let _ = DELIVERED.try_with(|(all, no_restart)| {
        if !restart {
            no_restart.fetch_or(b, Ordering::Relaxed);
        }
        all.fetch_or(b, Ordering::Release);
    });
    let _ = COUNTS.try_with(|s| {
        let (all, no_restart) = s.get();
        s.set((
            all.wrapping_add(1),
            no_restart.wrapping_add(u32::from(!restart)),
        ));
    });
}

/// (handlers run on this thread, those of them without SA_RESTART).
pub(crate) fn signal_counts() -> (u32, u32) {
    COUNTS.try_with(|s| s.get()).unwrap_or_default()
}

/// Which list a park is in, and where.
#[derive(Clone, Copy)]
pub(super) enum Entry {
    Plain(usize),
    Masked(usize),
    Waiting(usize),
}

/// One scheduler's interruptible parks and signal waits.
#[derive(Default)]
pub(super) struct Signals {
    /// Parks with the thread's mask (I/O, sleeps, signal waits).
    plain: RefCell<Slab>,
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
    pub(super) fn insert_plain(&self, who: Unparker) -> Entry {
        Entry::Plain(self.plain.borrow_mut().insert(who, 0))
    }

    pub(super) fn insert_masked(&self, who: Unparker, mask: u64) -> Entry {
        Entry::Masked(self.masked.borrow_mut().insert(who, mask))
    }

    pub(super) fn insert_waiting(&self, who: Unparker, set: u64) -> Entry {
        Entry::Waiting(self.waiting.borrow_mut().insert(who, set))
    }

    /// Takes the park numbered `seq` out of its list, if it is still there.
    pub(super) fn remove(&self, entry: Entry, seq: u64) {
        match entry {
            Entry::Plain(i) => self.plain.borrow_mut().remove(i, seq),
            Entry::Masked(i) => self.masked.borrow_mut().remove(i, seq),
            Entry::Waiting(i) => self.waiting.borrow_mut().remove(i, seq),
        }
    }

    /// Interrupts the parks that the signals handled since the last check let
    /// in. A plain load when none was: this runs every scheduler round.
    #[inline]
    pub(super) fn check(&self) {
        let pending = DELIVERED
            .try_with(|d| d.0.load(Ordering::Relaxed))
            .unwrap_or(0);
        if pending != 0 {
            self.interrupt();
        }
    }

    #[cold]
    #[inline(never)]
    fn interrupt(&self) {
        let Ok((all, no_restart)) = DELIVERED.try_with(|(all, no_restart)| {
            let all = all.swap(0, Ordering::Acquire);
            // A handler that runs between the two keeps its bit in both for
            // the next check.
            (all, no_restart.fetch_and(!all, Ordering::Relaxed) & all)
        }) else {
            return;
        };
        let wake = |hits: u64| Wake::Interrupted {
            restart: hits & no_restart == 0,
        };
        if !self.plain.borrow().is_empty() {
            let hits = all & !thread_mask();
            if hits != 0 {
                let parked = std::mem::take(&mut *self.plain.borrow_mut());
                for (who, _) in parked.into_entries() {
                    who.unpark(wake(hits));
                }
            }
        }
        let hit: Vec<_> = self
            .masked
            .borrow_mut()
            .drain_where(|mask| all & !mask != 0);
        for (who, mask) in hit {
            who.unpark(wake(all & !mask));
        }
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

    /// After a wait that could not deliver signals (zero timeout), delivers
    /// those pending that `mask` lets in: their handlers run now.
    pub(super) fn let_in(&self, mask: u64) {
        deliver_pending(mask);
    }

    /// Makes the signalfd watch every set waited for, before the scheduler's
    /// wait. It only grows: a signal nobody waits for any more costs at most a
    /// spurious wake-up, a change costs a system call.
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
            libc::syscall(
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
