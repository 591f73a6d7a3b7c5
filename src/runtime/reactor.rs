//! The readiness reactor: one mio `Poll` per scheduler, fds registered once,
//! edge-triggered, for both directions (Go's netpoll model).
//!
//! A readiness edge that arrives while nobody waits is remembered in the slot and
//! consumed by the next waiter, which then retries its call instead of parking.
//! Every registration carries the fd's generation in its token: `fd_closing` bumps
//! it, so an event that was already in flight for a closed fd is recognised as stale
//! and a reused fd number never receives it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use super::task::{Unparker, Wake};
use crate::fdmap::{FdMap, Zeroable};

/// The token of the cross-thread waker.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);
/// The token of the scheduler's signalfd (signal waits).
pub(crate) const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
/// Events taken per wait.
const EVENTS: usize = 1024;

/// Which direction a coroutine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

impl Direction {
    fn bit(self) -> u8 {
        match self {
            Direction::Read => 1,
            Direction::Write => 2,
        }
    }
}

/// Process-wide facts per fd: its generation and which reactors registered it.
pub(crate) struct FdReg {
    pub(crate) generation: AtomicU32,
    /// Bit `min(id, 63)` set for each reactor holding a registration.
    pub(crate) reactors: AtomicU64,
}

// SAFETY: all-zero atomics are valid; atomics are Sync.
unsafe impl Zeroable for FdReg {}

pub(crate) static FD_REGS: FdMap<FdReg> = FdMap::new();

pub(crate) fn reactor_bit(id: usize) -> u64 {
    1 << id.min(63)
}

#[derive(Default)]
struct Slot {
    generation: u32,
    /// Edges seen while nobody waited, per `Direction::bit`.
    ready: u8,
    readers: Vec<Unparker>,
    writers: Vec<Unparker>,
}

impl Slot {
    fn waiters(&mut self, dir: Direction) -> &mut Vec<Unparker> {
        match dir {
            Direction::Read => &mut self.readers,
            Direction::Write => &mut self.writers,
        }
    }
}

pub(crate) struct Reactor {
    poll: Poll,
    events: Box<[libc::epoll_event]>,
    slots: Vec<Option<Box<Slot>>>,
    bit: u64,
}

/// What a coroutine that wants to wait should do next.
pub(crate) enum Prepared {
    /// An edge arrived since its last attempt: retry the call at once.
    Retry,
    /// It is queued as a waiter: park.
    Queued,
}

fn token(fd: RawFd, generation: u32) -> Token {
    Token((fd as u32 as usize) | ((generation as usize) << 32))
}

impl Reactor {
    pub(crate) fn new(id: usize) -> io::Result<Reactor> {
        Ok(Reactor {
            poll: Poll::new()?,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS].into_boxed_slice(),
            slots: Vec::new(),
            bit: reactor_bit(id),
        })
    }

    pub(crate) fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    fn slot_mut(&mut self, fd: RawFd) -> Option<&mut Slot> {
        self.slots.get_mut(fd as usize)?.as_deref_mut()
    }

    /// Registers `fd` (if this generation is not registered yet) and either queues
    /// `who` as a waiter for `dir` or tells it to retry. Fails when the fd cannot
    /// be polled (a regular file gives EPERM): the caller then makes the call as is.
    pub(crate) fn prepare_wait(
        &mut self,
        fd: RawFd,
        dir: Direction,
        who: Unparker,
    ) -> io::Result<Prepared> {
        let reg = FD_REGS
            .get_or_create(fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let generation = reg.generation.load(Ordering::Acquire);
        let index = fd as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        let current = self.slots[index].as_ref().map(|s| s.generation);
        if current != Some(generation) {
            if let Some(stale) = self.slots[index].take() {
                wake_all(*stale, Wake::Closed);
            }
            self.register(fd, generation)?;
            reg.reactors.fetch_or(self.bit, Ordering::AcqRel);
            self.slots[index] = Some(Box::new(Slot {
                generation,
                ..Slot::default()
            }));
        }
        let slot = self.slot_mut(fd).expect("slot was just ensured");
        if slot.ready & dir.bit() != 0 {
            slot.ready &= !dir.bit();
            return Ok(Prepared::Retry);
        }
        slot.waiters(dir).push(who);
        Ok(Prepared::Queued)
    }

    fn register(&self, fd: RawFd, generation: u32) -> io::Result<()> {
        // PRIORITY: TCP urgent data and other EPOLLPRI conditions wake readers too
        // (poll's POLLPRI, select's exceptfds).
        let interest = Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY;
        let registry = self.poll.registry();
        match registry.register(&mut SourceFd(&fd), token(fd, generation), interest) {
            // The same open file under the same number from an unseen close and reopen.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                registry.reregister(&mut SourceFd(&fd), token(fd, generation), interest)
            }
            other => other,
        }
    }

    /// Drops `who` from the waiters of `fd` (after it woke for another reason).
    pub(crate) fn cancel_wait(&mut self, fd: RawFd, dir: Direction, who: &Unparker) {
        if let Some(slot) = self.slot_mut(fd) {
            slot.waiters(dir).retain(|w| !w.same_task(who));
        }
    }

    /// Forgets `fd` of generation `generation`: deregisters it and wakes every waiter
    /// with `Closed`. The caller has already bumped the generation.
    pub(crate) fn forget(&mut self, fd: RawFd, generation: u32) {
        let Some(entry) = self.slots.get_mut(fd as usize) else {
            return;
        };
        if entry.as_ref().is_some_and(|s| s.generation == generation) {
            let slot = entry.take().expect("checked above");
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            wake_all(*slot, Wake::Closed);
        }
    }

    /// Wakes every waiter of `fd` (generation `generation`) to retry its call, and
    /// makes the next waiter retry before it parks: for changes the kernel
    /// raises no event for (`shutdown`).
    pub(crate) fn wake_waiters(&mut self, fd: RawFd, generation: u32) {
        if let Some(slot) = self.slot_mut(fd).filter(|s| s.generation == generation) {
            slot.ready = Direction::Read.bit() | Direction::Write.bit();
            let waiters = std::mem::take(&mut slot.readers)
                .into_iter()
                .chain(std::mem::take(&mut slot.writers));
            waiters.for_each(|who| who.unpark(Wake::Ready));
        }
    }

    /// Waits for events up to `timeout` and hands every woken waiter to `wake`.
    /// With `sigmask`, the wait is made with that signal mask (`epoll_pwait`), so
    /// that the signals parked coroutines let in are delivered meanwhile.
    pub(crate) fn poll(
        &mut self,
        timeout: Option<Duration>,
        sigmask: Option<u64>,
        mut wake: impl FnMut(Unparker),
    ) -> io::Result<Polled> {
        let mut polled = Polled::default();
        // mio has no `epoll_pwait`: its `Poll` is an epoll fd whose event data
        // are its tokens, so the wait is made here, with mio's readiness rules.
        let ms = timeout.map_or(-1, |d| {
            libc::c_int::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        });
        let mask = sigmask
            .as_ref()
            .map_or(std::ptr::null(), std::ptr::from_ref);
        // SAFETY: our epoll fd, a buffer of `EVENTS` entries, a kernel-sized
        // sigset (8 bytes) or null.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                self.poll.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as libc::c_int,
                ms,
                mask,
                size_of::<u64>(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                polled.interrupted = true;
                Ok(polled)
            } else {
                Err(e)
            };
        }
        for i in 0..n as usize {
            let libc::epoll_event { events, u64: data } = self.events[i];
            let token = Token(data as usize);
            if token == WAKER_TOKEN {
                polled.woken = true;
                continue;
            }
            if token == SIGNAL_TOKEN {
                polled.signalled = true;
                continue;
            }
            let fd = (token.0 & 0xffff_ffff) as RawFd;
            let generation = (token.0 >> 32) as u32;
            let Some(slot) = self
                .slots
                .get_mut(fd as usize)
                .and_then(|s| s.as_deref_mut())
            else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            let has = |bits: libc::c_int| events & bits as u32 != 0;
            // Errors and hang-ups wake both directions: the retried call reports
            // them (mio's `is_error`, `is_read_closed`, `is_write_closed`).
            let failed = has(libc::EPOLLERR | libc::EPOLLHUP)
                || (has(libc::EPOLLIN) && has(libc::EPOLLRDHUP));
            for (dir, hit) in [
                (
                    Direction::Read,
                    has(libc::EPOLLIN | libc::EPOLLPRI) || failed,
                ),
                (Direction::Write, has(libc::EPOLLOUT) || failed),
            ] {
                if !hit {
                    continue;
                }
                let waiters = std::mem::take(slot.waiters(dir));
                if waiters.is_empty() {
                    slot.ready |= dir.bit();
                }
                waiters.into_iter().for_each(&mut wake);
            }
        }
        Ok(polled)
    }
}

/// What a `Reactor::poll` saw besides fd events.
#[derive(Default)]
pub(crate) struct Polled {
    /// The cross-thread waker fired.
    pub(crate) woken: bool,
    /// The scheduler's signalfd became readable.
    pub(crate) signalled: bool,
    /// A signal handler ended the wait (EINTR).
    pub(crate) interrupted: bool,
}

fn wake_all(slot: Slot, why: Wake) {
    let Slot {
        readers, writers, ..
    } = slot;
    for who in readers.into_iter().chain(writers) {
        who.unpark(why);
    }
}
