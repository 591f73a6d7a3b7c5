//! poll, ppoll, select, pselect, epoll_wait, epoll_pwait, epoll_pwait2 (and
//! glibc's `__poll`, `__select`, fortified `__poll_chk`, `__ppoll_chk`).
//!
//! Inside a coroutine each call is made with a zero timeout, so the kernel keeps
//! judging readiness, errors (EBADF, EINVAL, EFAULT) and POLLNVAL exactly; while
//! nothing is ready the coroutine parks on the watched fds (an epoll fd is itself
//! readable when it has events) until one is ready, one is closed, or the
//! caller's timeout passes, then the zero-timeout call is made again.
//!
//! A signal handler that runs on the thread while the coroutine is parked makes
//! the call fail with EINTR, SA_RESTART or not (signal(7)), unless an fd is
//! ready by then, if the call's mask lets that signal in: the thread's, or the
//! one ppoll, pselect, epoll_pwait and epoll_pwait2 were given, which stays in
//! force while the coroutine is parked (the scheduler waits with it, see
//! `runtime::signals`: pselect's classic SIGCHLD pattern works). A cancelled
//! coroutine's call fails with ECANCELED. select takes sets of any size.
//!
//! Known differences from the blocking call, inside a coroutine only:
//! - POLLPRI and select's `exceptfds` are waited for as readability: urgent
//!   data that arrives without a readable edge is seen at the next edge or at
//!   the timeout;
//! - an fd the reactor cannot watch makes the rest of the wait a real blocking call.

use std::os::fd::RawFd;
use std::ptr;
use std::time::{Duration, Instant};

use libc::{c_int, epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

use super::coroutine_guard;
use super::real::Guard;
use super::sleep::{deadline_after, timespec_duration, to_timespec};
use crate::runtime::signals::kernel_set;
use crate::runtime::{self, Breaks, Direction, Wake};
use crate::sys::{self, set_errno};

/// The time left until `deadline`, None for "no deadline".
fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Makes a readiness call from a coroutine. `attempt(t)` makes the real call with
/// timeout `t` (None: infinite); `watched()` names the fds to park on.
fn cooperate(
    call: &'static runtime::Label,
    guard: &Guard,
    deadline: Option<Instant>,
    breaks: Breaks,
    watched: impl FnOnce() -> Vec<(RawFd, Direction)>,
    mut attempt: impl FnMut(Option<Duration>) -> c_int,
) -> c_int {
    // A cancellation point even when an fd is ready at once.
    guard.release_while(super::cancel::cancellation_point);
    let done = |n: c_int| n != 0 || left(deadline) == Some(Duration::ZERO);
    let n = attempt(Some(Duration::ZERO));
    if done(n) {
        // Found ready at once: a busy event loop's call, which must not hold
        // the thread past its time slice (contract 12).
        guard.release_while(super::blocking::end_of_call);
        return n;
    }
    let fds = watched();
    loop {
        runtime::label(call);
        let wake = match guard.release_while(|| runtime::wait_any_as(&fds, deadline, breaks)) {
            Ok(wake) => wake,
            // An fd the reactor refuses: block the thread for the time left.
            Err(_) => return attempt(left(deadline)),
        };
        if wake == Wake::Expired {
            // The coroutine's `timeout()` passed: plain code unwinds by its `?`.
            set_errno(libc::ETIMEDOUT);
            return -1;
        }
        if wake == Wake::Cancelled {
            // A green thread's cancellation ends it here (`fds` leaks) or,
            // deferred, the wait goes on.
            // SAFETY: nothing in these frames needs dropping but `fds`' memory.
            if guard.release_while(|| unsafe { super::cancel::act_on_cancel() }) {
                continue;
            }
            set_errno(libc::ECANCELED);
            return -1;
        }
        // Whatever the wake, the kernel's answer is the next zero-timeout call (a
        // closed fd shows as POLLNVAL or EBADF); as in the kernel, fds found
        // ready win over a signal.
        let n = attempt(Some(Duration::ZERO));
        if done(n) {
            return n;
        }
        if let Wake::Interrupted { .. } = wake {
            // Never restarted, SA_RESTART or not (signal(7)).
            set_errno(libc::EINTR);
            return -1;
        }
    }
}

/// How signals end a wait made with `sigmask`: the caller's mask, or the
/// thread's when it gave none.
fn breaks_for(sigmask: *const sigset_t) -> Breaks {
    if sigmask.is_null() {
        Breaks::Syscall
    } else {
        // SAFETY: non-null: the caller's readable sigset, as the real call
        // requires (the zero-timeout call already read it).
        Breaks::Masked(unsafe { kernel_set(sigmask) })
    }
}

/// poll's timeout in milliseconds (negative: infinite) as a deadline.
fn ms_deadline(timeout: c_int) -> Option<Instant> {
    u64::try_from(timeout)
        .ok()
        .map(|ms| deadline_after(Duration::from_millis(ms)))
}

/// A timeout as poll's milliseconds, rounded up so the real call never returns
/// before the deadline.
fn to_ms(t: Option<Duration>) -> c_int {
    t.map_or(-1, |d| {
        c_int::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX)
    })
}

fn to_timeval(d: Duration) -> timeval {
    timeval {
        tv_sec: to_timespec(d).tv_sec,
        tv_usec: d.subsec_micros().into(),
    }
}

/// Calls `f` with a pointer to `t` as a timespec, or null for "infinite".
fn with_timespec<R>(t: Option<Duration>, f: impl FnOnce(*const timespec) -> R) -> R {
    let ts = t.map(to_timespec);
    f(ts.as_ref().map_or(ptr::null(), ptr::from_ref))
}

/// A caller's optional timespec timeout: Some(deadline or None for infinite), or
/// None when the kernel would reject it (the real call then reports EINVAL).
fn timespec_deadline(timeout: *const timespec) -> Option<Option<Instant>> {
    // SAFETY: the caller passes null or a readable timespec, as the real call
    // requires (a wild pointer faults here instead of giving EFAULT).
    match unsafe { timeout.as_ref() } {
        None => Some(None),
        Some(ts) => timespec_duration(ts).map(|d| Some(deadline_after(d))),
    }
}

/// poll's events as reactor directions. Readability covers POLLIN, POLLPRI,
/// POLLRDHUP and an empty mask, since the reactor wakes readers on errors and
/// hang-ups, which poll always reports.
fn poll_watched(fds: *const pollfd, nfds: nfds_t) -> Vec<(RawFd, Direction)> {
    const WRITE: libc::c_short = libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND;
    // The system calls take `unsigned int nfds`: the kernel reads this many.
    let n = nfds as libc::c_uint as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: the zero-timeout call just succeeded, so the kernel could read
        // these `n` entries; it does not require them aligned, neither do we.
        let p = unsafe { fds.add(i).read_unaligned() };
        if p.fd < 0 {
            continue;
        }
        if p.events & !WRITE != 0 || p.events & WRITE == 0 {
            out.push((p.fd, Direction::Read));
        }
        if p.events & WRITE != 0 {
            out.push((p.fd, Direction::Write));
        }
    }
    out
}

hook! {
    /// `poll(2)`.
    ///
    /// # Safety
    /// `fds` must point at `nfds` pollfd entries, as for libc's.
    fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int as real {
        let Some(guard) = coroutine_guard() else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(fds, nfds, timeout) };
        };
        cooperate(&const { runtime::Label::new("poll", runtime::Family::Poll) }, &guard, ms_deadline(timeout), Breaks::Syscall, || poll_watched(fds, nfds), |t| {
            // SAFETY: the caller's arguments, another timeout.
            unsafe { real(fds, nfds, to_ms(t)) }
        })
    }
}

alias! {
    /// glibc's exported `__poll`.
    ///
    /// # Safety
    /// As `poll`.
    fn __poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int = poll
}

hook! {
    /// glibc's fortified `poll` (`_FORTIFY_SOURCE`).
    ///
    /// # Safety
    /// As `poll`; `fdslen` is the size of the caller's array.
    fn __poll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: c_int, fdslen: size_t) -> c_int as real {
        if fdslen / size_of::<pollfd>() < nfds as usize {
            // SAFETY: the real check reports the overflow and aborts.
            return unsafe { real(fds, nfds, timeout, fdslen) };
        }
        // SAFETY: same contract as `poll` once the size check passed.
        unsafe { poll(fds, nfds, timeout) }
    }
}

hook! {
    /// `ppoll(2)`: the timeout is not written back (glibc copies it).
    ///
    /// # Safety
    /// As `poll`; `timeout` and `sigmask` null or readable.
    fn ppoll(fds: *mut pollfd, nfds: nfds_t, timeout: *const timespec, sigmask: *const sigset_t) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(fds, nfds, timeout, sigmask) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        let Some(deadline) = timespec_deadline(timeout) else { return forward() };
        cooperate(&const { runtime::Label::new("ppoll", runtime::Family::Poll) }, &guard, deadline, breaks_for(sigmask), || poll_watched(fds, nfds), |t| {
            // SAFETY: the caller's arguments, another timeout.
            with_timespec(t, |ts| unsafe { real(fds, nfds, ts, sigmask) })
        })
    }
}

hook! {
    /// glibc's fortified `ppoll`.
    ///
    /// # Safety
    /// As `ppoll`; `fdslen` is the size of the caller's array.
    fn __ppoll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: *const timespec, sigmask: *const sigset_t, fdslen: size_t) -> c_int as real {
        if fdslen / size_of::<pollfd>() < nfds as usize {
            // SAFETY: the real check reports the overflow and aborts.
            return unsafe { real(fds, nfds, timeout, sigmask, fdslen) };
        }
        // SAFETY: same contract as `ppoll` once the size check passed.
        unsafe { ppoll(fds, nfds, timeout, sigmask) }
    }
}

/// Bits per long: `fd_set` is an array of longs, in the kernel's layout.
const BITS: usize = libc::c_ulong::BITS as usize;
/// Longs in an `fd_set`.
const SET_WORDS: usize = libc::FD_SETSIZE / BITS;
/// The size of this process's fd table (`FDSize` in /proc/self/status), read
/// with raw system calls: the kernel reads no more than this many bits of a
/// select set, so neither may we. None if it cannot be read.
fn fd_table_size() -> Option<usize> {
    sys::proc_number(c"/proc/self/status", Some(b"FDSize:"))
}

/// select's three in/out sets: the caller's input, kept to be restored before
/// every attempt, since each call overwrites them with its result. Only the
/// longs covering `nfds` bits are touched, as the kernel does: a caller may pass
/// sets smaller than `fd_set`, or larger ones for fds past `FD_SETSIZE`.
struct FdSets {
    nfds: usize,
    words: usize,
    sets: [*mut libc::c_ulong; 3],
    /// The input of sets that fit an `fd_set`, without allocating.
    input: [[libc::c_ulong; SET_WORDS]; 3],
    /// The input of larger sets, `words` longs each.
    large: Vec<libc::c_ulong>,
}

impl FdSets {
    /// None when `nfds` is negative (the real call then reports EINVAL) or,
    /// past `FD_SETSIZE`, when the fd table's size cannot be read.
    fn save(nfds: c_int, sets: [*mut fd_set; 3]) -> Option<FdSets> {
        let mut nfds = usize::try_from(nfds).ok()?;
        if nfds > libc::FD_SETSIZE {
            // As the kernel: bits past the fd table are not read.
            nfds = nfds.min(fd_table_size()?);
        }
        let words = nfds.div_ceil(BITS);
        let sets = sets.map(<*mut fd_set>::cast::<libc::c_ulong>);
        let mut saved = FdSets {
            nfds,
            words,
            sets,
            input: [[0; SET_WORDS]; 3],
            large: if words > SET_WORDS {
                vec![0; 3 * words]
            } else {
                Vec::new()
            },
        };
        for (i, set) in sets.into_iter().enumerate() {
            if !set.is_null() {
                // SAFETY: the caller's set holds `nfds` bits, as the real call
                // requires (a wild pointer faults here instead of giving EFAULT).
                unsafe { ptr::copy_nonoverlapping(set, saved.input_mut(i).as_mut_ptr(), words) };
            }
        }
        Some(saved)
    }

    /// The saved input of set `i`.
    fn input(&self, i: usize) -> &[libc::c_ulong] {
        if self.large.is_empty() {
            &self.input[i][..self.words]
        } else {
            &self.large[i * self.words..(i + 1) * self.words]
        }
    }

    fn input_mut(&mut self, i: usize) -> &mut [libc::c_ulong] {
        if self.large.is_empty() {
            &mut self.input[i][..self.words]
        } else {
            &mut self.large[i * self.words..(i + 1) * self.words]
        }
    }

    fn restore(&self) {
        for (i, &set) in self.sets.iter().enumerate() {
            if !set.is_null() {
                // SAFETY: the caller's set, read in `save`, writable as select needs.
                unsafe { ptr::copy_nonoverlapping(self.input(i).as_ptr(), set, self.words) };
            }
        }
    }

    /// Readability for `readfds` and `exceptfds`, writability for `writefds`.
    fn watched(&self) -> Vec<(RawFd, Direction)> {
        let dirs = [Direction::Read, Direction::Write, Direction::Read];
        let mut out = Vec::new();
        for (i, (set, dir)) in self.sets.iter().zip(dirs).enumerate() {
            if set.is_null() {
                continue;
            }
            let words = self.input(i);
            for fd in (0..self.nfds).filter(|fd| words[fd / BITS] >> (fd % BITS) & 1 != 0) {
                out.push((fd as RawFd, dir));
            }
        }
        out
    }
}

/// select's timeval as glibc reads it (`tv_usec` may exceed a second): the
/// deadline (None: infinite), or None when glibc rejects it with EINVAL.
fn timeval_deadline(timeout: *const timeval) -> Option<Option<Instant>> {
    // SAFETY: the caller passes null or a readable timeval, as select requires.
    let Some(tv) = (unsafe { timeout.as_ref() }) else {
        return Some(None);
    };
    let secs = u64::try_from(tv.tv_sec).ok()?;
    let micros = u64::try_from(tv.tv_usec).ok()?;
    let d = Duration::from_secs(secs).saturating_add(Duration::from_micros(micros));
    Some(Some(deadline_after(d)))
}

hook! {
    /// `select(2)`: as Linux, writes the time left into `timeout` on return.
    ///
    /// # Safety
    /// The sets null or valid for `nfds` bits, `timeout` null or writable, as for
    /// libc's.
    fn select(nfds: c_int, readfds: *mut fd_set, writefds: *mut fd_set, exceptfds: *mut fd_set, timeout: *mut timeval) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(nfds, readfds, writefds, exceptfds, timeout) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        let Some(deadline) = timeval_deadline(timeout) else { return forward() };
        let Some(sets) = FdSets::save(nfds, [readfds, writefds, exceptfds]) else { return forward() };
        let n = cooperate(&const { runtime::Label::new("select", runtime::Family::Poll) }, &guard, deadline, Breaks::Syscall, || sets.watched(), |t| {
            sets.restore();
            let mut tv = t.map(to_timeval);
            let tv = tv.as_mut().map_or(ptr::null_mut(), ptr::from_mut);
            // SAFETY: the caller's sets and our own timeout.
            unsafe { real(nfds, readfds, writefds, exceptfds, tv) }
        });
        // SAFETY: non-null: the caller's timeval, writable as select requires.
        if let (Some(tv), Some(rest)) = (unsafe { timeout.as_mut() }, left(deadline)) {
            *tv = to_timeval(rest);
        }
        n
    }
}

alias! {
    /// glibc's exported `__select`.
    ///
    /// # Safety
    /// As `select`.
    fn __select(nfds: c_int, readfds: *mut fd_set, writefds: *mut fd_set, exceptfds: *mut fd_set, timeout: *mut timeval) -> c_int = select
}

hook! {
    /// `pselect(2)`: the timeout is not written back.
    ///
    /// # Safety
    /// As `select`; `timeout` and `sigmask` null or readable.
    fn pselect(nfds: c_int, readfds: *mut fd_set, writefds: *mut fd_set, exceptfds: *mut fd_set, timeout: *const timespec, sigmask: *const sigset_t) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(nfds, readfds, writefds, exceptfds, timeout, sigmask) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        let Some(deadline) = timespec_deadline(timeout) else { return forward() };
        let Some(sets) = FdSets::save(nfds, [readfds, writefds, exceptfds]) else { return forward() };
        cooperate(&const { runtime::Label::new("pselect", runtime::Family::Poll) }, &guard, deadline, breaks_for(sigmask), || sets.watched(), |t| {
            sets.restore();
            // SAFETY: the caller's sets and mask, our own timeout.
            with_timespec(t, |ts| unsafe { real(nfds, readfds, writefds, exceptfds, ts, sigmask) })
        })
    }
}

hook! {
    /// `epoll_wait(2)`: parks on the epoll fd itself.
    ///
    /// # Safety
    /// `events` must hold `maxevents` entries, as for libc's.
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int) -> c_int as real {
        let Some(guard) = coroutine_guard() else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(epfd, events, maxevents, timeout) };
        };
        cooperate(&const { runtime::Label::new("epoll_wait", runtime::Family::Poll) }, &guard, ms_deadline(timeout), Breaks::Syscall, || vec![(epfd, Direction::Read)], |t| {
            // SAFETY: the caller's arguments, another timeout.
            unsafe { real(epfd, events, maxevents, to_ms(t)) }
        })
    }
}

hook! {
    /// `epoll_pwait(2)`.
    ///
    /// # Safety
    /// As `epoll_wait`; `sigmask` null or readable.
    fn epoll_pwait(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int, sigmask: *const sigset_t) -> c_int as real {
        let Some(guard) = coroutine_guard() else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(epfd, events, maxevents, timeout, sigmask) };
        };
        cooperate(&const { runtime::Label::new("epoll_pwait", runtime::Family::Poll) }, &guard, ms_deadline(timeout), breaks_for(sigmask), || vec![(epfd, Direction::Read)], |t| {
            // SAFETY: the caller's arguments, another timeout.
            unsafe { real(epfd, events, maxevents, to_ms(t), sigmask) }
        })
    }
}

hook! {
    /// `epoll_pwait2(2)`: a timespec timeout (null: infinite).
    ///
    /// # Safety
    /// As `epoll_pwait`; `timeout` null or readable.
    fn epoll_pwait2(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: *const timespec, sigmask: *const sigset_t) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(epfd, events, maxevents, timeout, sigmask) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        let Some(deadline) = timespec_deadline(timeout) else { return forward() };
        cooperate(&const { runtime::Label::new("epoll_pwait2", runtime::Family::Poll) }, &guard, deadline, breaks_for(sigmask), || vec![(epfd, Direction::Read)], |t| {
            // SAFETY: the caller's arguments, another timeout.
            with_timespec(t, |ts| unsafe { real(epfd, events, maxevents, ts, sigmask) })
        })
    }
}
