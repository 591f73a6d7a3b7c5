//! The one loop every blocking hook shares: decide how to make the call without
//! blocking the thread, try it, park on EAGAIN, retry.
//!
//! Preference order inside a coroutine, after contracts 3 and 4 of docs/DESIGN.md:
//! 1. the user asked for non-blocking (O_NONBLOCK, MSG_DONTWAIT…): forward as is;
//! 2. a socket call that takes flags: add MSG_DONTWAIT for this call only;
//! 3. an fd we created: set O_NONBLOCK once (we hide it from F_GETFL);
//! 4. an inherited fd (shared with other processes): wait for readiness first,
//!    then make the blocking call, writing at most PIPE_BUF bytes at a time.

use std::time::Instant;

use super::real::Guard;
use crate::fdtable::{self, Kind, Timeout};
use crate::runtime::{self, Direction, Family, Label, Wake, control};
use crate::sys::{errno, set_errno};

/// Names a park of a call on any fd (`read`, `write`…), for dumps and stats.
pub(crate) const fn io(call: &'static str) -> Label {
    Label::new(call, Family::Io)
}

/// Names a park of a socket call (`recv`, `accept`, `connect`…).
pub(crate) const fn net(call: &'static str) -> Label {
    Label::new(call, Family::Net)
}

/// How one attempt must be made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    /// Flags to add to a socket call's flags: `MSG_DONTWAIT` or 0.
    pub(crate) msg_flags: libc::c_int,
    /// Most bytes this attempt may move without risking a block.
    pub(crate) cap: usize,
}

const PLAIN: Attempt = Attempt {
    msg_flags: 0,
    cap: usize::MAX,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// The fd is non-blocking (we set it): call, park on EAGAIN.
    NonBlocking,
    /// Add MSG_DONTWAIT: call, park on EAGAIN.
    DontWait,
    /// Shared blocking fd: wait for readiness, then call.
    WaitFirst,
}

enum Plan {
    Forward,
    /// Outside a coroutine on an fd we made non-blocking: block the thread in poll.
    BlockThread,
    Park(Guard, How, Cache),
}

/// How a call uses the fd's readiness cache (`runtime::Readiness`).
#[derive(Clone, Copy)]
struct Cache {
    /// What the call finds says what the next call will: not a peek, nor a
    /// read of urgent data or of the error queue, whose EAGAIN says nothing
    /// of the data behind.
    on: bool,
    /// A read shorter than asked emptied the receive queue (TCP).
    short_drains: bool,
}

/// Flags whose calls leave the readiness cache alone.
const UNCACHED: libc::c_int = libc::MSG_PEEK | libc::MSG_OOB | libc::MSG_ERRQUEUE;

fn would_block(e: i32) -> bool {
    e == libc::EAGAIN || e == libc::EWOULDBLOCK
}

/// True when a call on `fd` needs nothing from us: outside a coroutine, on an fd
/// whose flags we never changed. The data hooks check this first (once the
/// process is `runtime::engaged`; before, nothing can need us): it is the
/// whole cost a program pays for the calls it makes outside coroutines.
///
/// In a coroutine it is also the data calls' `cancel::cancellation_point`, for the
/// price of one load: a cancelled green thread ends here.
#[inline(always)]
pub(crate) fn passthrough(fd: libc::c_int) -> bool {
    match control::running_cancelled() {
        None => !fdtable::we_set_nonblock(fd),
        Some(cancelled) => {
            if cancelled {
                super::cancel::act_at_entry();
            }
            false
        }
    }
}

fn plan(fd: libc::c_int, user_flags: Option<libc::c_int>) -> Plan {
    // Checked first: on an fd we made non-blocking, a plain thread's MSG_DONTWAIT
    // call must still give EAGAIN, not block in poll.
    if user_flags.is_some_and(|f| f & libc::MSG_DONTWAIT != 0) {
        return Plan::Forward;
    }
    if !runtime::in_coroutine() {
        return if fdtable::we_set_nonblock(fd) {
            Plan::BlockThread
        } else {
            Plan::Forward
        };
    }
    let Some(guard) = Guard::enter() else {
        return Plan::Forward;
    };
    let Some(facts) = fdtable::facts(fd) else {
        return Plan::Forward;
    };
    if facts.kind == Kind::File || facts.user_nonblock {
        return Plan::Forward;
    }
    let how = if facts.we_set_nonblock {
        How::NonBlocking
    } else if facts.kind == Kind::Socket && user_flags.is_some() {
        How::DontWait
    } else if fdtable::make_nonblocking(fd) {
        How::NonBlocking
    } else {
        How::WaitFirst
    };
    // Sockets only: a blocking socket call waits for readiness before it
    // looks at its arguments, so parking first answers as it would. An
    // eventfd's read too small for its record fails at once, ready or not.
    let on = how != How::WaitFirst
        && facts.kind == Kind::Socket
        && user_flags.is_none_or(|f| f & UNCACHED == 0);
    let cache = Cache {
        on,
        short_drains: on && facts.tcp,
    };
    Plan::Park(guard, how, cache)
}

pub(crate) fn deadline_for(fd: libc::c_int, dir: Direction) -> Option<Instant> {
    let which = match dir {
        Direction::Read => Timeout::Recv,
        Direction::Write => Timeout::Send,
    };
    fdtable::timeout(fd, which).map(|t| Instant::now() + t)
}

/// Parks until `fd` is ready; Err(errno) for SO_*TIMEO expiry (EAGAIN), close
/// (EBADF), a signal (EINTR), `kill` (ECANCELED) or the deadline of an enclosing
/// `patchall::timeout` (ETIMEDOUT).
pub(crate) fn wait(
    guard: &Guard,
    call: &'static Label,
    fd: libc::c_int,
    dir: Direction,
    deadline: Option<Instant>,
) -> Result<(), i32> {
    loop {
        runtime::label(call);
        return match guard.release_while(|| runtime::wait_fd(fd, dir, deadline)) {
            Ok(wake) => match settle(guard, fd, dir, wake) {
                Ok(()) => Ok(()),
                Err(None) => continue,
                Err(Some(e)) => Err(e),
            },
            // Not pollable (epoll refuses it): block this thread in poll instead.
            Err(_) => block_in_poll(fd, dir, deadline),
        };
    }
}

/// What the end of a call's park means: go on (Ok), park again (Err(None)),
/// or fail with an errno, as `wait` documents.
fn settle(guard: &Guard, fd: libc::c_int, dir: Direction, wake: Wake) -> Result<(), Option<i32>> {
    match wake {
        Wake::Ready => Ok(()),
        Wake::TimedOut => Err(Some(libc::EAGAIN)),
        Wake::Closed => Err(Some(libc::EBADF)),
        // signal(7): SA_RESTART restarts the call, unless the socket has a
        // timeout in this direction.
        Wake::Interrupted { restart } if restart && deadline_for(fd, dir).is_none() => Err(None),
        Wake::Interrupted { .. } => Err(Some(libc::EINTR)),
        // A green thread's cancellation ends it here (the frames below own
        // only the guard, already released) or, deferred, waits again.
        Wake::Cancelled
            if guard.release_while(|| {
                // SAFETY: the frames below own only the guard, released
                // while `act_on_cancel` runs.
                unsafe { super::cancel::act_on_cancel() }
            }) =>
        {
            Err(None)
        }
        Wake::Cancelled => Err(Some(libc::ECANCELED)),
        Wake::Expired => Err(Some(libc::ETIMEDOUT)),
    }
}

/// A call's one plain buffer, which the scheduler's ring (`PATCHALL_IO=uring`)
/// can take instead of the call: `recv`, `send`, and `read`/`write` on a
/// socket. `flags` are the socket call's own.
#[derive(Clone, Copy)]
pub(crate) struct Buffer {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    pub(crate) flags: libc::c_int,
}

impl Buffer {
    /// The part of the buffer past its first `done` bytes.
    fn past(self, done: usize) -> Buffer {
        Buffer {
            // `done <= len`: still inside (or one past) the caller's buffer.
            ptr: self.ptr.wrapping_add(done),
            len: self.len - done,
            ..self
        }
    }
}

/// Makes the call as an operation of the scheduler's ring, parked until it
/// completes. None: no ring here, or the kernel answered EAGAIN (the caller
/// then makes the call itself).
fn drive_ring(
    guard: &Guard,
    call: &'static Label,
    fd: libc::c_int,
    dir: Direction,
    buffer: Buffer,
    deadline: Option<Instant>,
) -> Option<isize> {
    // `all` completes a partial transfer itself. A send goes to the ring
    // with MSG_DONTWAIT: one the socket has no room for is made by the
    // caller, parked on readiness, as the kernel's blocked send reports a
    // closed peer (ECONNRESET, `woken_send_error`), not as a fresh one.
    let (io, flags) = match dir {
        Direction::Read => (runtime::uring::Io::Recv, buffer.flags & !libc::MSG_WAITALL),
        Direction::Write => (runtime::uring::Io::Send, buffer.flags | libc::MSG_DONTWAIT),
    };
    loop {
        let op = runtime::uring::Op::new();
        runtime::label(call);
        // SAFETY: the buffer is the caller's for the length of its call, and
        // `ring_io` returns only after the operation completed.
        let wake = guard.release_while(|| unsafe {
            runtime::ring_io(&op, io, fd, dir, buffer.ptr, buffer.len, flags, deadline)
        })?;
        match op.res.get() {
            Some(r) if r >= 0 => return Some(r as isize),
            Some(r) if r == -libc::EAGAIN => return None,
            // Completed on its own: its error is the call's.
            Some(r) if r != -libc::ECANCELED => {
                set_errno(-r);
                return Some(-1);
            }
            // Cancelled, or never started: the park's end says why.
            _ => match settle(guard, fd, dir, wake) {
                Ok(()) | Err(None) => continue,
                Err(Some(e)) => {
                    set_errno(e);
                    return Some(-1);
                }
            },
        }
    }
}

/// Blocks the thread until `fd` is ready or `deadline` passes (raw ppoll).
pub(crate) fn block_in_poll(
    fd: libc::c_int,
    dir: Direction,
    deadline: Option<Instant>,
) -> Result<(), i32> {
    let events = match dir {
        Direction::Read => libc::POLLIN,
        Direction::Write => libc::POLLOUT,
    };
    loop {
        let signals = runtime::signal_counts();
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ts = left.map(crate::sys::to_timespec);
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: one valid pollfd, an optional valid timespec, no signal mask.
        let n = unsafe {
            crate::sys::raw_syscall!(
                libc::SYS_ppoll,
                &mut pfd,
                1,
                ts_ptr,
                std::ptr::null::<libc::sigset_t>(),
                8,
            )
        };
        match n {
            0 => return Err(libc::EAGAIN),
            n if n > 0 => return Ok(()),
            // As the blocking call: restarted after an SA_RESTART handler, unless a
            // timeout is set; EINTR otherwise (signal(7)).
            _ if errno() == libc::EINTR => {
                if deadline.is_some() || runtime::signal_counts().1 != signals.1 {
                    return Err(libc::EINTR);
                }
            }
            _ => return Err(errno()),
        }
    }
}

/// Makes `call` on the offload pool while the coroutine parks, with the hook
/// guard released so that the other coroutines' hooks work meanwhile. For
/// calls that no readiness event can announce (DNS, disk, any child).
///
/// # Safety
/// As `runtime::offload::run`: `call` runs on another thread; it may use the
/// caller's memory but no thread-local of the caller's except errno.
pub(crate) unsafe fn offloaded<R>(
    guard: &Guard,
    label: &'static Label,
    call: impl FnOnce() -> R,
) -> R {
    let mut call = Some(call);
    runtime::label(label);
    // SAFETY: the caller's promise.
    let done = guard.release_while(|| unsafe {
        runtime::offload::run(|| call.take().expect("an offloaded call runs once")())
    });
    // `run` declines only outside a coroutine: then the call is made here.
    done.unwrap_or_else(|| call.take().expect("not run yet")())
}

/// Makes one attempt after another until one does not report EAGAIN. `asked`:
/// the bytes a read asks for (a shorter result may say the queue is empty).
#[allow(clippy::too_many_arguments)]
fn drive(
    guard: &Guard,
    call: &'static Label,
    fd: libc::c_int,
    dir: Direction,
    how: How,
    cache: Cache,
    asked: Option<usize>,
    deadline: Option<Instant>,
    buffer: Option<Buffer>,
    op: &mut dyn FnMut(Attempt) -> isize,
) -> isize {
    if let Some(b) = buffer.filter(|_| cache.on && runtime::uring::any())
        && let Some(r) = drive_ring(guard, call, fd, dir, b, deadline)
    {
        return r;
    }
    let attempt = match how {
        How::DontWait => Attempt {
            msg_flags: libc::MSG_DONTWAIT,
            cap: usize::MAX,
        },
        How::NonBlocking => PLAIN,
        How::WaitFirst => Attempt {
            msg_flags: 0,
            cap: if dir == Direction::Write {
                libc::PIPE_BUF
            } else {
                usize::MAX
            },
        },
    };
    // Reads only: a socket's write readiness has hysteresis (EPOLLOUT comes
    // back at a third of the buffer free), and a send fills any room left,
    // so a send after EAGAIN may progress where no edge will say so.
    let cache = Cache {
        on: cache.on && dir == Direction::Read,
        ..cache
    };
    let mut parked = false;
    loop {
        // Edge-triggered epoll reports changes, not states: an fd that is ready
        // already (a pipe with room, unread input) may never report again. Park
        // only after the kernel says "not ready" now; then an edge must follow.
        while how == How::WaitFirst
            && block_in_poll(fd, dir, Some(Instant::now())) == Err(libc::EAGAIN)
        {
            if let Err(e) = wait(guard, call, fd, dir, deadline) {
                set_errno(e);
                return -1;
            }
            parked = true;
        }
        let seen = runtime::Readiness::of(fd);
        // The last call found nothing and no event came since: park without
        // a call that would fail. Once woken, a call always tries.
        // A zero-length call never waits.
        if cache.on && !parked && seen.idle(dir) && asked != Some(0) {
            if let Err(e) = wait(guard, call, fd, dir, deadline) {
                set_errno(e);
                return -1;
            }
            parked = true;
            continue;
        }
        let r = op(attempt);
        if cache.on {
            note_result(fd, dir, cache, asked, seen, r);
        }
        if r < 0 && parked && dir == Direction::Write && errno() == libc::EPIPE {
            woken_send_error(fd);
        }
        if r >= 0 || !would_block(errno()) || how == How::WaitFirst {
            return r;
        }
        if let Err(e) = wait(guard, call, fd, dir, deadline) {
            set_errno(e);
            return -1;
        }
        parked = true;
    }
}

/// Marks a read of `fd` idle when an attempt begun at `seen` found nothing:
/// EAGAIN, or a TCP read shorter than `asked` (tokio does the same, `poll_read`).
#[inline]
fn note_result(
    fd: libc::c_int,
    dir: Direction,
    cache: Cache,
    asked: Option<usize>,
    seen: runtime::Readiness,
    r: isize,
) {
    let empty = if r < 0 {
        would_block(errno())
    } else {
        dir == Direction::Read
            && r > 0
            && cache.short_drains
            && seen.short_read_drains()
            && asked.is_some_and(|a| (r as usize) < a)
    };
    if empty {
        let saved = errno();
        runtime::clear_readiness(fd, dir, seen, r < 0);
        set_errno(saved);
    }
}

/// A send the kernel woke after it had blocked reports the socket's pending
/// error (ECONNRESET: the peer closed with data unread) before EPIPE
/// (`sock_alloc_send_pskb`, `sk_stream_error`); a fresh send, as our retry,
/// may report EPIPE and leave the error for a later call. Takes the error as
/// the blocked send would.
fn woken_send_error(fd: libc::c_int) {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int-sized buffer and its length; any fd is acceptable (a
    // non-socket fails with ENOTSOCK and leaves EPIPE).
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        )
    };
    set_errno(if r == 0 && err != 0 { err } else { libc::EPIPE });
}

/// The outside-coroutine face for fds we made non-blocking: as the blocking call.
fn drive_blocking(fd: libc::c_int, dir: Direction, op: &mut dyn FnMut(Attempt) -> isize) -> isize {
    let deadline = deadline_for(fd, dir);
    loop {
        let r = op(PLAIN);
        if r >= 0 || !would_block(errno()) {
            return r;
        }
        if let Err(e) = block_in_poll(fd, dir, deadline) {
            set_errno(e);
            return -1;
        }
    }
}

/// Called as a hooked call returns, its hook guard dropped: a coroutine whose
/// calls keep completing at once yields here once its time slice is over
/// (contract 12).
#[inline(always)]
pub(crate) fn end_of_call() {
    if runtime::slice_over() {
        yield_for_slice();
    }
}

#[cold]
#[inline(never)]
fn yield_for_slice() {
    // Not under another hook's guard (a hook that calls a hooked function):
    // the other coroutines' calls would block the thread meanwhile. The
    // clock is read again in a few calls.
    if let Some(guard) = Guard::enter() {
        drop(guard);
        runtime::yield_for_slice();
    }
}

/// A call that completes as soon as it moves anything (read, recv, accept…).
/// `user_flags` are the socket call's own flags, `None` for calls that take none;
/// `asked` the bytes a read asks for, `None` where a count says nothing of what
/// is left (accept, several messages).
pub(crate) fn once(
    call: &'static Label,
    fd: libc::c_int,
    dir: Direction,
    user_flags: Option<libc::c_int>,
    asked: Option<usize>,
    op: impl FnMut(Attempt) -> isize,
) -> isize {
    once_in(call, fd, dir, user_flags, asked, None, op)
}

/// `once` for a call on one plain buffer (`buffer`, for a socket call),
/// which the ring may make instead.
pub(crate) fn once_in(
    call: &'static Label,
    fd: libc::c_int,
    dir: Direction,
    user_flags: Option<libc::c_int>,
    asked: Option<usize>,
    buffer: Option<Buffer>,
    mut op: impl FnMut(Attempt) -> isize,
) -> isize {
    let r = match plan(fd, user_flags) {
        Plan::Forward => op(PLAIN),
        Plan::BlockThread => drive_blocking(fd, dir, &mut op),
        Plan::Park(guard, how, cache) => {
            let deadline = deadline_for(fd, dir);
            drive(
                &guard, call, fd, dir, how, cache, asked, deadline, buffer, &mut op,
            )
        }
    };
    end_of_call();
    r
}

/// A call that, blocking, moves all `len` bytes before it returns (write, send,
/// `recv(MSG_WAITALL)`). `op(done, attempt)` moves bytes from offset `done`. Stops
/// early, as the kernel does, at end of file or on an error after some progress.
pub(crate) fn all(
    call: &'static Label,
    fd: libc::c_int,
    dir: Direction,
    user_flags: Option<libc::c_int>,
    len: usize,
    op: impl FnMut(usize, Attempt) -> isize,
) -> isize {
    all_in(call, fd, dir, user_flags, len, None, op)
}

/// `all` for a call on one plain buffer (`buffer`, for a socket call), which
/// the ring may make instead.
pub(crate) fn all_in(
    call: &'static Label,
    fd: libc::c_int,
    dir: Direction,
    user_flags: Option<libc::c_int>,
    len: usize,
    buffer: Option<Buffer>,
    op: impl FnMut(usize, Attempt) -> isize,
) -> isize {
    let r = all_of(call, fd, dir, user_flags, len, buffer, op);
    // Rust's `print!` and `eprint!` hold stdout's or stderr's lock across
    // this write; it is reentrant per OS thread, so a yield here would let
    // another coroutine of the thread into the same RefCell (a panic:
    // "already borrowed"). Such a write yields only where it would block.
    if !(dir == Direction::Write && (fd == libc::STDOUT_FILENO || fd == libc::STDERR_FILENO)) {
        end_of_call();
    }
    r
}

fn all_of(
    call: &'static Label,
    fd: libc::c_int,
    dir: Direction,
    user_flags: Option<libc::c_int>,
    len: usize,
    buffer: Option<Buffer>,
    mut op: impl FnMut(usize, Attempt) -> isize,
) -> isize {
    let plan = plan(fd, user_flags);
    let deadline = deadline_for(fd, dir);
    let mut done = 0usize;
    loop {
        let r = match &plan {
            Plan::Forward => return op(0, PLAIN),
            Plan::BlockThread => drive_blocking(fd, dir, &mut |a| op(done, a)),
            Plan::Park(guard, how, cache) => {
                let asked = Some(len - done);
                drive(
                    guard,
                    call,
                    fd,
                    dir,
                    *how,
                    *cache,
                    asked,
                    deadline,
                    buffer.map(|b| b.past(done)),
                    &mut |a| op(done, a),
                )
            }
        };
        if r < 0 {
            return if done > 0 { done as isize } else { r };
        }
        done += r as usize;
        if r == 0 || done >= len {
            return done as isize;
        }
    }
}
