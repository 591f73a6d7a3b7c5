//! The readiness reactor: one mio `Poll` per scheduler, fds registered once,
//! edge-triggered, for both directions (Go's netpoll model).
//!
//! A readiness edge that arrives while nobody waits is remembered in the slot and
//! consumed by the next waiter, which then retries its call instead of parking.
//! Every registration carries the fd's generation in its token: `fd_closing` bumps
//! it, so an event that was already in flight for a closed fd is recognised as stale
//! and a reused fd number never receives it.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::task::{Unparker, Wake};
use crate::fdmap::{FdMap, Zeroable};

/// The token of the cross-thread waker.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

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
    events: Events,
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
            events: Events::with_capacity(1024),
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
        let interest = Interest::READABLE | Interest::WRITABLE;
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

    /// Waits for events up to `timeout` and hands every woken waiter to `wake`.
    /// Returns true if the cross-thread waker fired.
    pub(crate) fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut wake: impl FnMut(Unparker),
    ) -> io::Result<bool> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut woken = false;
        for event in self.events.iter() {
            let token = event.token();
            if token == WAKER_TOKEN {
                woken = true;
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
            // Errors and hang-ups wake both directions: the retried call reports them.
            let failed = event.is_error() || event.is_read_closed() || event.is_write_closed();
            for (dir, hit) in [
                (Direction::Read, event.is_readable() || failed),
                (Direction::Write, event.is_writable() || failed),
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
        Ok(woken)
    }
}

fn wake_all(slot: Slot, why: Wake) {
    let Slot {
        readers, writers, ..
    } = slot;
    for who in readers.into_iter().chain(writers) {
        who.unpark(why);
    }
}
