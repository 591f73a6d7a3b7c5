//! sendfile, splice and tee: calls that move data between two fds in the
//! kernel, and can wait on either side (a full socket or pipe to write to, an
//! empty pipe or socket to read from).
//!
//! In a coroutine each side that can wait is made not to block the thread, the
//! way blocking.rs makes one: a pipe side by adding `SPLICE_F_NONBLOCK` to this
//! call only (splice, tee), an fd we created by setting O_NONBLOCK on it once,
//! an inherited socket or stream by waiting for its readiness before the call.
//! On EAGAIN the coroutine parks on the side that is not ready, and the call is
//! made again. What the user asked for wins: a side the user made non-blocking
//! (O_NONBLOCK, or `SPLICE_F_NONBLOCK` for a pipe) gives EAGAIN as the kernel
//! would. Regular files never wait for readiness (their disk waits stay inline).
//!
//! Results follow the blocking calls: `splice` and `tee` return once anything
//! moved; `sendfile` goes on until `count` bytes moved, the input ended, or an
//! error came after some progress (then the progress is returned).
//!
//! Outside a coroutine every call is libc's, except on an fd we made
//! non-blocking: then the thread blocks in poll as the blocking call would.

use std::time::Instant;

use libc::{c_int, c_uint, loff_t, off_t, size_t, ssize_t};

use super::blocking::{block_in_poll, deadline_for, io, wait};
use super::coroutine_guard;
use super::real::Guard;
use crate::fdtable::{self, Kind};
use crate::runtime::{self, Direction, Label};
use crate::sys::{errno, set_errno};

/// How one side of a call may wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waits {
    /// Never for readiness: a regular file.
    Never,
    /// The user asked for non-blocking on this side: EAGAIN is the answer.
    Users,
    /// Gives EAGAIN instead of blocking (our O_NONBLOCK, SPLICE_F_NONBLOCK):
    /// park after EAGAIN.
    Park,
    /// Blocking and shared with other processes: wait for readiness first.
    PollFirst,
}

#[derive(Clone, Copy)]
struct Side {
    fd: c_int,
    dir: Direction,
    waits: Waits,
    deadline: Option<Instant>,
}

/// What the call must achieve before it returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Anything moved (splice, tee).
    Any,
    /// `len` bytes moved, or the input ended (sendfile).
    All(usize),
}

/// `pipe_flag`: the call takes `SPLICE_F_NONBLOCK`, and whether the user gave it.
fn classify(fd: c_int, dir: Direction, pipe_flag: Option<bool>) -> Option<Side> {
    let facts = fdtable::facts(fd)?;
    // Only a stream can be a pipe; an fstat tells, when it matters.
    let pipe = || facts.kind == Kind::Stream && is_fifo(fd);
    let waits = if facts.kind == Kind::File {
        Waits::Never
    } else if facts.user_nonblock || (pipe_flag == Some(true) && pipe()) {
        Waits::Users
    } else if fdtable::make_nonblocking(fd) || (pipe_flag.is_some() && pipe()) {
        Waits::Park
    } else {
        Waits::PollFirst
    };
    Some(Side {
        fd,
        dir,
        waits,
        deadline: deadline_for(fd, dir),
    })
}

fn is_fifo(fd: c_int) -> bool {
    // SAFETY: stat is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let saved = errno();
    // SAFETY: fstat writes only into `st`.
    let ok = unsafe { crate::sys::raw_syscall!(libc::SYS_fstat, fd, &mut st) } == 0;
    set_errno(saved);
    ok && st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

fn not_ready(s: &Side) -> bool {
    block_in_poll(s.fd, s.dir, Some(Instant::now())) == Err(libc::EAGAIN)
}

/// The result so far, or `-1` with errno `e` if nothing moved.
/// What one call's result `r` means for a transfer that has moved `done`
/// bytes so far and stops at `until`.
enum Step {
    /// More to move: call again at once.
    Again,
    /// The transfer's result (bytes moved, or -1 with errno).
    Return(isize),
    /// EAGAIN with nothing more moved: wait for a side, then call again.
    Blocked,
}

fn step(r: isize, done: &mut usize, until: Until) -> Step {
    if r > 0 {
        *done += r as usize;
        return match until {
            Until::All(len) if *done < len => Step::Again,
            _ => Step::Return(*done as isize),
        };
    }
    if r == 0 {
        return Step::Return(*done as isize);
    }
    match errno() {
        libc::EAGAIN => Step::Blocked,
        e => Step::Return(fail(*done, e)),
    }
}

fn fail(done: usize, e: c_int) -> isize {
    if done > 0 {
        return done as isize;
    }
    set_errno(e);
    -1
}

/// Makes `op(done, cap, extra_flags)` until `until` holds. `pipe_flag` as in
/// `classify`.
fn transfer(
    call: &'static Label,
    sides: [(c_int, Direction); 2],
    pipe_flag: Option<bool>,
    until: Until,
    op: &mut dyn FnMut(usize, usize, c_uint) -> isize,
) -> isize {
    let Some(guard) = coroutine_guard() else {
        return outside(sides, pipe_flag, until, op);
    };
    let (Some(a), Some(b)) = (
        classify(sides[0].0, sides[0].1, pipe_flag),
        classify(sides[1].0, sides[1].1, pipe_flag),
    ) else {
        // A bad fd: the kernel says which error.
        return op(0, usize::MAX, 0);
    };
    let sides = [a, b];
    let extra = if pipe_flag == Some(false) {
        libc::SPLICE_F_NONBLOCK
    } else {
        0
    };
    // A blocking call on a side that only polled ready may still block for
    // what does not fit: write at most what a ready pipe always takes.
    let cap = if sides
        .iter()
        .any(|s| s.waits == Waits::PollFirst && s.dir == Direction::Write)
    {
        libc::PIPE_BUF
    } else {
        usize::MAX
    };
    let mut done = 0usize;
    loop {
        for s in sides.iter().filter(|s| s.waits == Waits::PollFirst) {
            while not_ready(s) {
                if let Err(e) = wait(&guard, call, s.fd, s.dir, s.deadline) {
                    return fail(done, e);
                }
            }
        }
        match step(op(done, cap, extra), &mut done, until) {
            Step::Again => continue,
            Step::Return(r) => return r,
            Step::Blocked => {}
        }
        if let Some(s) = sides
            .iter()
            .find(|s| s.waits == Waits::Park && not_ready(s))
        {
            if let Err(e) = wait(&guard, call, s.fd, s.dir, s.deadline) {
                return fail(done, e);
            }
        } else if sides.iter().any(|s| s.waits == Waits::Users) {
            return fail(done, libc::EAGAIN);
        } else {
            // Ready on both sides yet refused: let the others run, try again.
            yield_with(&guard);
        }
    }
}

fn yield_with(guard: &Guard) {
    guard.release_while(runtime::yield_now);
}

/// Outside a coroutine: libc's call, unless we made a side non-blocking
/// that the call would block on (a pipe side of a call given
/// `SPLICE_F_NONBLOCK` would not).
fn outside(
    sides: [(c_int, Direction); 2],
    pipe_flag: Option<bool>,
    until: Until,
    op: &mut dyn FnMut(usize, usize, c_uint) -> isize,
) -> isize {
    let ours =
        |fd: c_int| fdtable::we_set_nonblock(fd) && !(pipe_flag == Some(true) && is_fifo(fd));
    if !sides.iter().any(|&(fd, _)| ours(fd)) {
        return op(0, usize::MAX, 0);
    }
    let mut done = 0usize;
    loop {
        match step(op(done, usize::MAX, 0), &mut done, until) {
            Step::Again => continue,
            Step::Return(r) => return r,
            Step::Blocked => {}
        }
        // The side we made non-blocking that is not ready; if both look ready,
        // the first of ours (as the blocking call waits in the kernel).
        let mut on = None;
        for &(fd, dir) in sides.iter().filter(|&&(fd, _)| ours(fd)) {
            if block_in_poll(fd, dir, Some(Instant::now())) == Err(libc::EAGAIN) {
                on = Some((fd, dir));
                break;
            }
            on.get_or_insert((fd, dir));
        }
        let Some((fd, dir)) = on else {
            return fail(done, libc::EAGAIN);
        };
        if let Err(e) = block_in_poll(fd, dir, deadline_for(fd, dir)) {
            return fail(done, e);
        }
    }
}

hook! {
    /// `sendfile(2)`: as the blocking call, moves all `count` bytes unless the
    /// input ends or an error comes after some progress.
    fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t as real {
        let sides = [(out_fd, Direction::Write), (in_fd, Direction::Read)];
        transfer(&const { io("sendfile") }, sides, None, Until::All(count), &mut |done, cap, _| {
            // SAFETY: the caller's fds and offset pointer; `done < count`.
            unsafe { real(out_fd, in_fd, offset, (count - done).min(cap)) }
        })
    }
}

alias! {
    /// `sendfile64`: the same call on 64-bit Linux.
    fn sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t = sendfile
}

hook! {
    /// `splice(2)`: returns once anything moved, as the blocking call.
    fn splice(fd_in: c_int, off_in: *mut loff_t, fd_out: c_int, off_out: *mut loff_t, len: size_t, flags: c_uint) -> ssize_t as real {
        let sides = [(fd_in, Direction::Read), (fd_out, Direction::Write)];
        let users = flags & libc::SPLICE_F_NONBLOCK != 0;
        transfer(&const { io("splice") }, sides, Some(users), Until::Any, &mut |_, cap, extra| {
            // SAFETY: the caller's arguments, with SPLICE_F_NONBLOCK maybe added.
            unsafe { real(fd_in, off_in, fd_out, off_out, len.min(cap), flags | extra) }
        })
    }
}

hook! {
    /// `tee(2)`: returns once anything was duplicated, as the blocking call.
    fn tee(fd_in: c_int, fd_out: c_int, len: size_t, flags: c_uint) -> ssize_t as real {
        let sides = [(fd_in, Direction::Read), (fd_out, Direction::Write)];
        let users = flags & libc::SPLICE_F_NONBLOCK != 0;
        transfer(&const { io("tee") }, sides, Some(users), Until::Any, &mut |_, cap, extra| {
            // SAFETY: the caller's arguments, with SPLICE_F_NONBLOCK maybe added.
            unsafe { real(fd_in, fd_out, len.min(cap), flags | extra) }
        })
    }
}
