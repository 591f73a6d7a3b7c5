//! The readiness reactor: one epoll instance per scheduler, fds registered once,
//! edge-triggered, for both directions (Go's netpoll model). Its epoll and
//! waker fds are `OwnFd`s, whose numbers may change under it (a program's
//! `dup2` onto them): hence epoll by hand rather than mio, whose `Poll`
//! keeps one number for life.
//!
//! A readiness edge that arrives while nobody waits is remembered in the slot and
//! consumed by the next waiter, which then retries its call instead of parking.
//! Every registration carries the fd's generation in its token: `fd_closing` bumps
//! it, so an event that was already in flight for a closed fd is recognised as stale
//! and a reused fd number never receives it.

use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::ownfd::OwnFd;
use super::task::{Task, Unparker, Wake};
use super::uring::Ring;
use crate::fdmap::{FdMap, Zeroable};

/// The token of the cross-thread waker.
const WAKER_TOKEN: u64 = u64::MAX;
/// The token of the scheduler's signalfd (signal waits).
pub(crate) const SIGNAL_TOKEN: u64 = u64::MAX - 1;
/// What a waiter's fd is registered for, edge-triggered: readiness both ways,
/// and TCP urgent data and other EPOLLPRI conditions (poll's POLLPRI,
/// select's exceptfds), which wake readers too.
const INTEREST: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
/// Events taken from the kernel per wait.
const EVENTS: usize = 1024;

/// An epoll instance whose fd is one of the runtime's own (`OwnFd`): shared
/// by a scheduler and the threads that deregister fds from it.
pub(crate) struct Epoll(OwnFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes flags and returns a new fd.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(OwnFd::adopt(fd)))
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: a valid epoll_event for the duration of the call.
        let r = self
            .0
            .with(|ep| unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) });
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `fd` for readability under `token`, edge-triggered (the
    /// signalfd: a signal pending that no one waits for any more would keep a
    /// level-triggered one ready, and every wait would return at once).
    pub(crate) fn register_readable(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = libc::EPOLLIN as u32 | libc::EPOLLET as u32;
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Removes `fd`'s registration, if any.
    pub(crate) fn deregister(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits for events into `events`; how many came. With `sigmask`, the
    /// wait is made with that signal mask (`epoll_pwait`).
    fn wait(
        &self,
        events: &mut Vec<libc::epoll_event>,
        timeout: Option<Duration>,
        sigmask: Option<u64>,
    ) -> io::Result<usize> {
        // Rounded up to whole milliseconds: waking early would only spin.
        let ms = timeout.map_or(-1, |d| {
            libc::c_int::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        });
        let mask = sigmask
            .as_ref()
            .map_or(std::ptr::null(), std::ptr::from_ref);
        events.clear();
        loop {
            let ep = self.0.raw();
            // SAFETY: our epoll fd, a buffer with room for `capacity` events, a
            // kernel-sized sigset (8 bytes) or null.
            let n = unsafe {
                crate::sys::raw_syscall!(
                    libc::SYS_epoll_pwait,
                    ep,
                    events.as_mut_ptr(),
                    events.capacity() as libc::c_int,
                    ms,
                    mask,
                    size_of::<u64>(),
                )
            };
            if n >= 0 {
                // SAFETY: the kernel wrote `n` events.
                unsafe { events.set_len(n as usize) };
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            // A `dup2` moved our epoll while this was about to wait on its
            // old number: wait on the new one.
            if matches!(e.raw_os_error(), Some(libc::EBADF | libc::EINVAL)) && self.0.raw() != ep {
                continue;
            }
            return Err(e);
        }
    }
}

/// The cross-thread waker: an eventfd registered in a scheduler's epoll.
pub(crate) struct Waker(OwnFd);

impl Waker {
    pub(crate) fn new(epoll: &Epoll) -> io::Result<Waker> {
        // By system call, as the waker's reads and writes: libc's names reach
        // the hooks, where a coroutine's call is the program's (a
        // cancellation point acts there).
        // SAFETY: eventfd2 takes an initial value and flags, returns a new fd.
        let fd = unsafe {
            crate::sys::raw_syscall!(
                libc::SYS_eventfd2,
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ) as RawFd
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let waker = Waker(OwnFd::adopt(fd));
        let events = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        epoll.ctl(libc::EPOLL_CTL_ADD, waker.0.raw(), events, WAKER_TOKEN)?;
        Ok(waker)
    }

    /// Makes the scheduler's epoll wait return (each write is an edge).
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        self.0.with(|fd| {
            // SAFETY: writes 8 bytes from a local, to our own eventfd.
            let w =
                || unsafe { crate::sys::raw_syscall!(libc::SYS_write, fd, &one as *const u64, 8) };
            if w() < 0 {
                // The counter is full (EAGAIN): empty it and write again.
                let mut sink: u64 = 0;
                // SAFETY: reads 8 bytes into a local, from our own eventfd.
                unsafe { crate::sys::raw_syscall!(libc::SYS_read, fd, &mut sink as *mut u64, 8) };
                w();
            }
        });
    }
}

/// Which direction a coroutine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Readable (input, a connection to accept, end of file).
    Read,
    /// Writable (room to send, a connection completed).
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

/// Everything the process keeps per fd number, in one entry of one table
/// (`FD_REGS`): its generation, which reactors registered it, its readiness
/// cache, and the fd table's facts. One entry, so that one close
/// (`fdtable::closing`) forgets all of it.
pub(crate) struct FdReg {
    pub(crate) generation: AtomicU32,
    /// The readiness cache (`Readiness`): what the last attempts and events
    /// said, and a tick that every event moves on.
    readiness: AtomicU32,
    /// Bit `min(id, 63)` set for each reactor holding a registration.
    pub(crate) reactors: AtomicU64,
    /// The fd table's facts (`crate::fdtable`, the layer above, alone reads
    /// and writes them): kept here, where the reactor can reach them too,
    /// rather than in a second table with a lifetime of its own.
    pub(crate) facts: FdFacts,
}

/// The fd table's words for one fd; their meaning is `crate::fdtable`'s.
pub(crate) struct FdFacts {
    /// Kind and flags (`fdtable`'s KNOWN, KIND_*, USER_NONBLOCK…); 0 for
    /// nothing known.
    pub(crate) bits: AtomicU32,
    /// The open file description's group, shared with the fds dup'ed from or
    /// to this one; 0 for none (never dup'ed, as far as we saw).
    pub(crate) group: AtomicU32,
    /// SO_RCVTIMEO / SO_SNDTIMEO in microseconds, 0 for none.
    pub(crate) rcvtimeo_us: AtomicU64,
    pub(crate) sndtimeo_us: AtomicU64,
}

// SAFETY: all-zero atomics are valid (generation 0, nothing registered,
// nothing cached, nothing known); atomics are Sync.
unsafe impl Zeroable for FdReg {}

pub(crate) static FD_REGS: FdMap<FdReg> = FdMap::new();

impl FdReg {
    /// Forgets what was cached: the fd number is about to mean another file
    /// (or the same one, unseen for a while). Unknown means "try".
    pub(crate) fn reset_readiness(&self) {
        // The tick moves on too: a call that began before must not mark idle.
        let _ = self
            .readiness
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some((cur & !Readiness::BITS).wrapping_add(Readiness::TICK_ONE))
            });
    }

    /// Records an event: the directions it reports are worth a try again.
    fn mark_ready(
        &self,
        read: bool,
        write: bool,
        read_closed: bool,
        write_closed: bool,
        urgent: bool,
    ) {
        let mut cleared = 0;
        let mut sticky = 0;
        if read {
            cleared |= Readiness::IDLE_READ;
        }
        if write {
            cleared |= Readiness::IDLE_WRITE;
        }
        if read_closed {
            sticky |= Readiness::READ_CLOSED;
        }
        if write_closed {
            sticky |= Readiness::WRITE_CLOSED;
        }
        if urgent {
            sticky |= Readiness::URGENT;
        }
        let _ = self
            .readiness
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                let tick = (cur & !Readiness::BITS).wrapping_add(Readiness::TICK_ONE);
                Some(tick | (cur & Readiness::BITS & !cleared) | sticky)
            });
    }
}

/// A snapshot of one fd's readiness cache, taken before an attempt.
///
/// Edge-triggered epoll says when something changed, never that nothing is
/// left; the cache says what the program's own calls found since. A call that
/// found nothing (EAGAIN, or a TCP read shorter than asked: the kernel copies
/// until the queue is empty) marks its direction idle, and the next call parks
/// before trying. Every event the reactor sees moves the tick on and marks its
/// directions ready; a call marks idle only if the tick is where it was when
/// the call began (`clear_readiness`), so an event that came in between (on
/// another worker's reactor) is never erased. Closed and urgent-data states
/// stay until the fd is closed: no edge follows them, and a short read there
/// (stopped at end of file or at the urgent mark) leaves data behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Readiness(u32);

impl Readiness {
    const IDLE_READ: u32 = 1 << 0;
    const IDLE_WRITE: u32 = 1 << 1;
    const READ_CLOSED: u32 = 1 << 2;
    const WRITE_CLOSED: u32 = 1 << 3;
    const URGENT: u32 = 1 << 4;
    const BITS: u32 = 0xff;
    const TICK_ONE: u32 = 1 << 8;

    /// The cache of `fd`: unknown (ready) if no one ever looked.
    #[inline]
    pub(crate) fn of(fd: RawFd) -> Readiness {
        Readiness(
            FD_REGS
                .get(fd)
                .map_or(0, |r| r.readiness.load(Ordering::Acquire)),
        )
    }

    /// True when a call for `dir` would find nothing: park before trying.
    #[inline]
    pub(crate) fn idle(self, dir: Direction) -> bool {
        let (idle, closed) = match dir {
            Direction::Read => (Self::IDLE_READ, Self::READ_CLOSED),
            Direction::Write => (Self::IDLE_WRITE, Self::WRITE_CLOSED),
        };
        self.0 & (idle | closed) == idle
    }

    /// True when a read shorter than asked emptied the receive queue: no end
    /// of file or urgent mark was seen, where a read stops short with data left.
    #[inline]
    pub(crate) fn short_read_drains(self) -> bool {
        self.0 & (Self::READ_CLOSED | Self::URGENT) == 0
    }
}

/// Marks `dir` of `fd` idle after a call that began when the cache was `seen`
/// found nothing, unless an event arrived since (the tick moved): then the
/// next call tries. After an EAGAIN read the queue is empty, so an urgent mark
/// seen before is behind it.
pub(crate) fn clear_readiness(fd: RawFd, dir: Direction, seen: Readiness, would_block: bool) {
    let Some(reg) = FD_REGS.get(fd) else { return };
    let set = match dir {
        Direction::Read => Readiness::IDLE_READ,
        Direction::Write => Readiness::IDLE_WRITE,
    };
    let unset = if dir == Direction::Read && would_block {
        Readiness::URGENT
    } else {
        0
    };
    let _ = reg
        .readiness
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
            ((cur ^ seen.0) & !Readiness::BITS == 0).then_some((cur | set) & !unset)
        });
}

pub(crate) fn reactor_bit(id: usize) -> u64 {
    1 << id.min(63)
}

/// One fd's registration in one reactor. Its hot words (generation, the
/// readiness bits, the first waiter of each direction) share one cache line:
/// at a thousand connections a park and its wake-up each find the slot cold,
/// and a waiter list in a buffer of its own was a second miss each time.
#[derive(Default)]
#[repr(C, align(64))]
struct Slot {
    generation: u32,
    /// Edges seen while nobody waited, per `Direction::bit`.
    ready: u8,
    /// `Direction::bit`s whose waiters overflowed into `more`.
    crowded: u8,
    first: [Option<Unparker>; 2],
    more: [Vec<Unparker>; 2],
}

impl Slot {
    /// Queues `who` for `dir`, or tells it to retry if an edge came since
    /// the last attempt.
    #[inline]
    fn prepare(&mut self, dir: Direction, who: Unparker) -> Prepared {
        if self.ready & dir.bit() != 0 {
            self.ready &= !dir.bit();
            return Prepared::Retry;
        }
        if let Some(task) = &who.task {
            task.slot_hint.set(ptr::from_ref::<Slot>(self) as usize);
        }
        self.push(dir, who);
        Prepared::Queued
    }

    fn push(&mut self, dir: Direction, who: Unparker) {
        let i = dir as usize;
        if self.first[i].is_none() {
            self.first[i] = Some(who);
        } else {
            self.more[i].push(who);
            self.crowded |= dir.bit();
        }
    }

    fn has_waiters(&self, dir: Direction) -> bool {
        self.first[dir as usize].is_some()
    }

    /// Hands every waiter of `dir` to `f`, in the order they came; the
    /// overflow's capacity stays for the next crowd.
    fn drain(&mut self, dir: Direction, mut f: impl FnMut(Unparker)) {
        let i = dir as usize;
        if let Some(who) = self.first[i].take() {
            f(who);
            if self.crowded & dir.bit() != 0 {
                self.crowded &= !dir.bit();
                self.more[i].drain(..).for_each(f);
            }
        }
    }

    /// Drops the waiters of `dir` that are the coroutine `task` (all of them:
    /// `poll` may list one fd twice), the next in line moving up to `first`.
    fn remove(&mut self, dir: Direction, task: *const Task) {
        let i = dir as usize;
        let theirs = |w: &Unparker| w.task.as_ref().is_some_and(|t| Arc::as_ptr(t) == task);
        if self.crowded & dir.bit() != 0 {
            self.more[i].retain(|w| !theirs(w));
        }
        if self.first[i].as_ref().is_some_and(theirs) {
            self.first[i] = None;
        }
        if self.more[i].is_empty() {
            self.crowded &= !dir.bit();
        } else if self.first[i].is_none() {
            self.first[i] = Some(self.more[i].remove(0));
            if self.more[i].is_empty() {
                self.crowded &= !dir.bit();
            }
        }
    }
}

pub(crate) struct Reactor {
    epoll: Arc<Epoll>,
    events: Vec<libc::epoll_event>,
    slots: Vec<Option<Box<Slot>>>,
    bit: u64,
    /// With `PATCHALL_IO=uring`: where the scheduler waits, the epoll
    /// instance one of the things it watches.
    ring: Option<Ring>,
    /// The last harvest of the epoll instance filled `events`: more may be
    /// ready, which the ring's watch would not report again.
    epoll_more: bool,
}

/// What a coroutine that wants to wait should do next.
pub(crate) enum Prepared {
    /// An edge arrived since its last attempt: retry the call at once.
    Retry,
    /// It is queued as a waiter: park.
    Queued,
}

fn token(fd: RawFd, generation: u32) -> u64 {
    u64::from(fd as u32) | (u64::from(generation) << 32)
}

impl Reactor {
    pub(crate) fn new(id: usize) -> io::Result<Reactor> {
        let epoll = Arc::new(Epoll::new()?);
        let ring = crate::config::config()
            .io_uring
            .then(Ring::new)
            .and_then(|r| {
                r.map_err(|e| {
                    static ONCE: std::sync::Once = std::sync::Once::new();
                    ONCE.call_once(|| {
                        crate::sys::diag(&[
                            b"patchall: PATCHALL_IO=uring: no io_uring here (",
                            e.to_string().as_bytes(),
                            b"); using epoll\n",
                        ]);
                    });
                })
                .ok()
            });
        let mut reactor = Reactor {
            epoll,
            events: Vec::with_capacity(EVENTS),
            slots: Vec::new(),
            bit: reactor_bit(id),
            ring,
            epoll_more: false,
        };
        if let Some(ring) = reactor.ring.as_mut() {
            ring.watch(reactor.epoll.0.raw());
        }
        Ok(reactor)
    }

    /// This reactor's ring, if it has one (`PATCHALL_IO=uring`).
    pub(crate) fn ring(&mut self) -> Option<&mut Ring> {
        self.ring.as_mut()
    }

    /// The epoll instance, for the waker and for other threads' deregistering.
    pub(crate) fn epoll(&self) -> &Arc<Epoll> {
        &self.epoll
    }

    fn slot_mut(&mut self, fd: RawFd) -> Option<&mut Slot> {
        self.slots.get_mut(fd as usize)?.as_deref_mut()
    }

    /// Registers `fd` (if this generation is not registered yet) and either queues
    /// `who` as a waiter for `dir` or tells it to retry. Fails when the fd cannot
    /// be polled (a regular file gives EPERM): the caller then makes the call as is.
    ///
    /// Called by every fd park, at its deepest point on the coroutine's
    /// stack: the first registration, which builds a cache-line-aligned
    /// `Slot` (a 64-byte-aligned frame of 300 bytes), is out of line, and
    /// the rest inlines into the park.
    pub(crate) fn prepare_wait(
        &mut self,
        fd: RawFd,
        dir: Direction,
        who: Unparker,
    ) -> io::Result<Prepared> {
        let Some(reg) = FD_REGS.get(fd) else {
            return self.prepare_first_wait(fd, dir, who);
        };
        let generation = reg.generation.load(Ordering::Acquire);
        let Some(slot) = self
            .slots
            .get_mut(fd as usize)
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.generation == generation)
        else {
            return self.prepare_first_wait(fd, dir, who);
        };
        Ok(slot.prepare(dir, who))
    }

    /// `prepare_wait` for an fd this reactor has not registered under its
    /// current generation.
    #[cold]
    #[inline(never)]
    fn prepare_first_wait(
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
        if let Some(stale) = self.slots[index].take() {
            wake_all(*stale, Wake::Closed);
        }
        self.register(fd, generation)?;
        reg.reactors.fetch_or(self.bit, Ordering::AcqRel);
        let slot = self.slots[index].insert(Box::new(Slot {
            generation,
            ..Slot::default()
        }));
        Ok(slot.prepare(dir, who))
    }

    fn register(&self, fd: RawFd, generation: u32) -> io::Result<()> {
        let data = token(fd, generation);
        match self.epoll.ctl(libc::EPOLL_CTL_ADD, fd, INTEREST, data) {
            // The same open file under the same number from an unseen close and reopen.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.epoll.ctl(libc::EPOLL_CTL_MOD, fd, INTEREST, data)
            }
            other => other,
        }
    }

    /// Drops the coroutine `task` from the waiters of `fd` (after it woke for
    /// another reason).
    pub(crate) fn cancel_wait(&mut self, fd: RawFd, dir: Direction, task: *const Task) {
        if let Some(slot) = self.slot_mut(fd) {
            slot.remove(dir, task);
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
            self.epoll.deregister(fd);
            wake_all(*slot, Wake::Closed);
        }
    }

    /// Wakes every waiter of `fd` (generation `generation`) to retry its call, and
    /// makes the next waiter retry before it parks: for changes the kernel
    /// raises no event for (`shutdown`).
    pub(crate) fn wake_waiters(&mut self, fd: RawFd, generation: u32) {
        if let Some(slot) = self.slot_mut(fd).filter(|s| s.generation == generation) {
            slot.ready = Direction::Read.bit() | Direction::Write.bit();
            for dir in [Direction::Read, Direction::Write] {
                slot.drain(dir, |who| who.unpark(Wake::Ready));
            }
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
        let harvest = match self.ring.as_mut() {
            None => Some((timeout, sigmask)),
            Some(ring) => {
                // Events already waiting in the epoll instance: do not sleep.
                let timeout = if self.epoll_more {
                    Some(Duration::ZERO)
                } else {
                    timeout
                };
                let min = u32::from(timeout != Some(Duration::ZERO));
                match ring.enter(min, Some(timeout), sigmask) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => polled.interrupted = true,
                    Err(e) => return Err(e),
                }
                let (readable, rewatch) = ring.reap(&mut wake);
                if rewatch {
                    ring.watch(self.epoll.0.raw());
                }
                (readable || self.epoll_more).then_some((Some(Duration::ZERO), None))
            }
        };
        let Some((timeout, sigmask)) = harvest else {
            return Ok(polled);
        };
        match self.epoll.wait(&mut self.events, timeout, sigmask) {
            Ok(n) => self.epoll_more = self.ring.is_some() && n == self.events.capacity(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                polled.interrupted = true;
                return Ok(polled);
            }
            Err(e) => return Err(e),
        }
        for event in &self.events {
            let (bits, data) = (event.events, event.u64);
            if data == WAKER_TOKEN {
                polled.woken = true;
                continue;
            }
            if data == SIGNAL_TOKEN {
                polled.signalled = true;
                continue;
            }
            let fd = (data & 0xffff_ffff) as RawFd;
            let generation = (data >> 32) as u32;
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
            let has = |b: i32| bits & b as u32 != 0;
            let failed = has(libc::EPOLLERR | libc::EPOLLHUP)
                || (has(libc::EPOLLIN) && has(libc::EPOLLRDHUP));
            if let Some(reg) = FD_REGS.get(fd) {
                reg.mark_ready(
                    has(libc::EPOLLIN | libc::EPOLLPRI) || failed,
                    has(libc::EPOLLOUT) || failed,
                    failed || has(libc::EPOLLRDHUP),
                    has(libc::EPOLLERR | libc::EPOLLHUP),
                    has(libc::EPOLLPRI),
                );
            }
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
                if !slot.has_waiters(dir) {
                    slot.ready |= dir.bit();
                }
                slot.drain(dir, &mut wake);
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

fn wake_all(mut slot: Slot, why: Wake) {
    for dir in [Direction::Read, Direction::Write] {
        slot.drain(dir, |who| who.unpark(why));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// Fd numbers no test opens, one per test (they run in parallel): the
    /// cache is plain memory keyed by number.
    fn reg(fd: RawFd) -> &'static FdReg {
        FD_REGS.get_or_create(fd).expect("an entry")
    }

    /// A non-blocking pipe: (read end, write end).
    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: a two-int array for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
        assert_eq!(rc, 0);
        (fds[0], fds[1])
    }

    fn close_both(rd: RawFd, wr: RawFd) {
        // SAFETY: the test's own pipe fds, closed once.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
    }

    /// Four coroutines wait on one pipe: the first (the slot's inline waiter)
    /// times out and leaves, the others (the overflow) stay; one byte wakes
    /// all three, in the order they came.
    #[test]
    fn waiters_past_the_first_are_kept_removed_and_woken_in_order() {
        use std::sync::Mutex;
        use std::time::{Duration, Instant};

        let (rd, wr) = pipe();
        let order = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let order = Arc::clone(&order);
                crate::spawn(move || {
                    let deadline = (i == 0).then(|| Instant::now() + Duration::from_millis(20));
                    let wake = crate::runtime::wait_fd(rd, Direction::Read, deadline).unwrap();
                    order.lock().unwrap().push((i, wake));
                })
                .unwrap()
            })
            .collect();
        let writer = crate::spawn(move || {
            crate::sleep(Duration::from_millis(100));
            // SAFETY: one byte from a live buffer to our pipe.
            assert_eq!(unsafe { libc::write(wr, b"x".as_ptr().cast(), 1) }, 1);
        })
        .unwrap();
        for r in crate::join_all(handles.into_iter().chain([writer])) {
            r.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(
            order,
            [
                (0, Wake::TimedOut),
                (1, Wake::Ready),
                (2, Wake::Ready),
                (3, Wake::Ready)
            ]
        );
        close_both(rd, wr);
    }

    /// `poll` may list one fd twice: the coroutine is then both waiters of
    /// the slot's direction, and a timeout removes both.
    #[test]
    fn a_wait_on_one_fd_listed_twice_times_out_and_leaves_nothing_queued() {
        use std::time::{Duration, Instant};

        let (rd, wr) = pipe();
        let twice = crate::spawn(move || {
            let deadline = Instant::now() + Duration::from_millis(10);
            let both = [(rd, Direction::Read), (rd, Direction::Read)];
            crate::runtime::wait_any_as(&both, Some(deadline), crate::runtime::Breaks::Syscall)
                .unwrap()
        })
        .unwrap();
        assert_eq!(twice.join().unwrap(), Wake::TimedOut);
        // Nothing stale stayed queued: the next waiter is woken by the next byte.
        let next =
            crate::spawn(move || crate::runtime::wait_fd(rd, Direction::Read, None).unwrap())
                .unwrap();
        let writer = crate::spawn(move || {
            crate::sleep(Duration::from_millis(20));
            // SAFETY: one byte from a live buffer to our pipe.
            assert_eq!(unsafe { libc::write(wr, b"x".as_ptr().cast(), 1) }, 1);
        })
        .unwrap();
        writer.join().unwrap();
        assert_eq!(next.join().unwrap(), Wake::Ready);
        close_both(rd, wr);
    }

    #[test]
    fn an_attempt_that_found_nothing_marks_idle_until_the_next_event() {
        const FD: RawFd = 1000001;
        reg(FD).reset_readiness();
        let seen = Readiness::of(FD);
        assert!(!seen.idle(Direction::Read), "unknown means try");
        clear_readiness(FD, Direction::Read, seen, true);
        assert!(Readiness::of(FD).idle(Direction::Read));
        assert!(!Readiness::of(FD).idle(Direction::Write), "per direction");
        reg(FD).mark_ready(true, false, false, false, false);
        assert!(!Readiness::of(FD).idle(Direction::Read));
    }

    #[test]
    fn closed_and_urgent_states_stay_until_the_fd_is_reused() {
        const FD: RawFd = 1000002;
        reg(FD).reset_readiness();
        reg(FD).mark_ready(true, false, true, false, false);
        let seen = Readiness::of(FD);
        assert!(
            !seen.short_read_drains(),
            "end of file queued: a short read leaves it"
        );
        clear_readiness(FD, Direction::Read, seen, true);
        assert!(
            !Readiness::of(FD).idle(Direction::Read),
            "a closed side is always tried"
        );
        reg(FD).reset_readiness();
        reg(FD).mark_ready(true, false, false, false, true);
        let seen = Readiness::of(FD);
        assert!(!seen.short_read_drains(), "a read stops at the urgent mark");
        clear_readiness(FD, Direction::Read, seen, true);
        assert!(
            Readiness::of(FD).short_read_drains(),
            "EAGAIN: the mark is behind"
        );
    }

    /// Two threads: one begins a read (takes its snapshot) and then clears,
    /// the other delivers an event after the read began, at a random moment
    /// before or after the clear. Whichever comes first, the event must
    /// survive: the next read has to try, or its data waits for an edge that
    /// already came. With the tick comparison removed from `clear_readiness`
    /// about half of the rounds fail.
    #[test]
    fn an_event_after_a_read_began_survives_its_clear() {
        const FD: RawFd = 1000003;
        const ROUNDS: u64 = 20_000;
        let barrier = Barrier::new(2);
        let lost = AtomicU64::new(0);
        let spin = |seed: u64| {
            for _ in 0..(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) {
                std::hint::spin_loop();
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 0..ROUNDS {
                    barrier.wait(); // the read has begun
                    spin(round);
                    reg(FD).mark_ready(true, false, false, false, false);
                    barrier.wait(); // both done
                    barrier.wait(); // checked
                }
            });
            for round in 0..ROUNDS {
                reg(FD).reset_readiness();
                let seen = Readiness::of(FD);
                barrier.wait();
                spin(round ^ 0x55);
                clear_readiness(FD, Direction::Read, seen, false);
                barrier.wait();
                if Readiness::of(FD).idle(Direction::Read) {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
                barrier.wait();
            }
        });
        assert_eq!(lost.load(Ordering::Relaxed), 0, "events erased by a clear");
    }
}
