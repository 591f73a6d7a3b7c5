//! fd lifetime and flags: pipe, the other fds a read can wait on (eventfd,
//! timerfd, signalfd, inotify), close, the dup family, fcntl, ioctl(FIONBIO).
//!
//! `close` and `dup2` over a waited-on fd wake its waiters with EBADF before the
//! number can be reused; `fcntl(F_GETFL)` shows the flags the user set, never the
//! O_NONBLOCK we may have set on an fd we created.
//!
//! The runtime's own fds (`runtime::ownfd`) look closed to the program:
//! `close`, `dup`, `fcntl` on one fail with EBADF, `close_range` and
//! `closefrom` pass over them, and `dup2`/`dup3` onto one succeed after the
//! runtime's fd has moved to another number. Until the process is engaged
//! the runtime has none, and the check is not made.

use libc::{c_int, c_uint, c_ulong, c_void};

use super::cancel;
use crate::fdtable::{self, Kind};
use crate::runtime::{self, ownfd};
use crate::sys::{self, set_errno};

/// True if `fd` is one of the runtime's own fds: the program sees it closed.
#[inline]
fn hidden(fd: c_int) -> bool {
    runtime::engaged() && ownfd::is_ours(fd)
}

/// -1 with EBADF, as a call on a closed fd.
fn ebadf() -> c_int {
    set_errno(libc::EBADF);
    -1
}

hook! {
    /// `pipe(2)`: both ends are ours until shared (fork, SCM_RIGHTS).
    fn pipe(fds: *mut c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(fds) };
        record_pair(r, fds, false);
        r
    }
}

hook! {
    /// `pipe2(2)`.
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(fds, flags) };
        record_pair(r, fds, flags & libc::O_NONBLOCK != 0);
        r
    }
}

fn record_pair(r: c_int, fds: *mut c_int, nonblock: bool) {
    if r == 0 {
        // SAFETY: on success the kernel wrote two fds to `fds`.
        let pair = unsafe { [*fds, *fds.add(1)] };
        for fd in pair {
            fdtable::created(fd, Kind::Stream, nonblock);
        }
    }
}

/// Records `fd`, just made by a hook's call, as ours: a coroutine's read
/// then tries first on the fd made non-blocking, and the kernel answers
/// what it answers at once (EINVAL for a buffer too small for an eventfd's,
/// timerfd's or signalfd's record) instead of after a wait for readiness.
fn record_one(fd: c_int, nonblock: bool) {
    if fd >= 0 {
        fdtable::created(fd, Kind::Stream, nonblock);
    }
}

hook! {
    /// `eventfd(2)`.
    fn eventfd(initval: c_uint, flags: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let fd = unsafe { real(initval, flags) };
        record_one(fd, flags & libc::EFD_NONBLOCK != 0);
        fd
    }
}

hook! {
    /// `eventfd_read(3)`: glibc's reads past our `read` hook; this one
    /// passes through it, so that it parks a coroutine (and, on an eventfd
    /// we made non-blocking, still waits as the blocking read).
    fn eventfd_read(fd: c_int, value: *mut u64) -> c_int as _real {
        let n = std::mem::size_of::<u64>();
        // SAFETY: the caller's eventfd_t, written as glibc's would.
        let r = unsafe { super::io::read(fd, value.cast(), n) };
        if r == n as isize { 0 } else { -1 }
    }
}

hook! {
    /// `eventfd_write(3)`: as `eventfd_read`, through our `write` hook.
    fn eventfd_write(fd: c_int, value: u64) -> c_int as _real {
        let n = std::mem::size_of::<u64>();
        // SAFETY: a local eventfd_t, read as glibc's would.
        let r = unsafe { super::io::write(fd, (&value as *const u64).cast(), n) };
        if r == n as isize { 0 } else { -1 }
    }
}

hook! {
    /// `timerfd_create(2)`.
    fn timerfd_create(clock: libc::clockid_t, flags: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let fd = unsafe { real(clock, flags) };
        record_one(fd, flags & libc::TFD_NONBLOCK != 0);
        fd
    }
}

hook! {
    /// `signalfd(2)`: with `fd` -1 it makes a new fd; given an existing
    /// signalfd it only replaces its mask (the kernel ignores `flags` then),
    /// and what we know of the fd stays.
    fn signalfd(fd: c_int, mask: *const libc::sigset_t, flags: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(fd, mask, flags) };
        if fd == -1 {
            record_one(r, flags & libc::SFD_NONBLOCK != 0);
        }
        r
    }
}

hook! {
    /// `inotify_init(2)`.
    fn inotify_init() -> c_int as real {
        // SAFETY: no arguments.
        let fd = unsafe { real() };
        record_one(fd, false);
        fd
    }
}

hook! {
    /// `inotify_init1(2)`.
    fn inotify_init1(flags: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's argument.
        let fd = unsafe { real(flags) };
        record_one(fd, flags & libc::IN_NONBLOCK != 0);
        fd
    }
}

hook! {
    /// `close(2)`: coroutines waiting on `fd` (on any thread) wake with EBADF
    /// first. A cancellation point: a cancelled green thread ends before the
    /// fd is closed, as with glibc.
    fn close(fd: c_int) -> c_int as real {
        cancel::cancellation_point();
        if hidden(fd) {
            return ebadf();
        }
        fdtable::closing(fd);
        // SAFETY: forwarding the caller's argument.
        unsafe { real(fd) }
    }
}

alias! {
    /// glibc's exported alias of `close`.
    fn __close(fd: c_int) -> c_int = close
}

/// `close_range` over `first..=last` made by `real`, passing over the
/// runtime's fds: the gaps between them are closed one range at a time.
/// Waiters on the fds it closes wake with EBADF first.
fn close_range_around(
    first: c_uint,
    last: c_uint,
    flags: c_int,
    real: impl Fn(c_uint, c_uint, c_int) -> c_int,
) -> c_int {
    if !runtime::engaged() || first > last {
        return real(first, last, flags);
    }
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0 {
        // Marks, closes nothing; the runtime's fds are close-on-exec already.
        return real(first, last, flags);
    }
    fdtable::closing_range(first, last, ownfd::is_ours);
    let mut from = first;
    let mut result = 0;
    let mut closed_any = false;
    loop {
        let mut ours = [0; 16];
        let n = ownfd::ours_in(from, last, &mut ours);
        let listed = &ours[..n.min(ours.len())];
        for &fd in listed {
            let fd = fd as c_uint;
            if fd > from {
                closed_any = true;
                let r = real(from, fd - 1, flags);
                if r != 0 && result == 0 {
                    result = r;
                }
            }
            from = fd.saturating_add(1);
            if fd == c_uint::MAX {
                return result;
            }
        }
        if n <= ours.len() {
            break;
        }
    }
    if from <= last {
        closed_any = true;
        let r = real(from, last, flags);
        if r != 0 && result == 0 {
            result = r;
        }
    }
    if !closed_any && flags & libc::CLOSE_RANGE_UNSHARE as c_int != 0 {
        // Every fd in the range was ours: the table is still to be unshared
        // (a range past any fd closes nothing).
        return real(c_uint::MAX, c_uint::MAX, flags);
    }
    result
}

hook! {
    /// `close_range(2)`: the runtime's own fds in the range stay open. With
    /// green threads CLOSE_RANGE_UNSHARE is not passed on: green threads share
    /// their OS threads (and the offload pool's) fd table, and one that starts
    /// later, on another worker, would not see the fds its creator opens next.
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int as real {
        let flags = if super::green_threads::enabled() {
            flags & !(libc::CLOSE_RANGE_UNSHARE as c_int)
        } else {
            flags
        };
        // SAFETY: forwarding the caller's arguments, or parts of its range.
        close_range_around(first, last, flags, |a, b, f| unsafe { real(a, b, f) })
    }
}

/// `closefrom(3)`: glibc calls its own `close_range` inside, out of our
/// reach, so the range is closed here around the runtime's fds.
///
/// # Safety
/// As libc's: the caller gives up every fd from `lowfd` on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    if !runtime::engaged() {
        if let Some(real) = original!("C" fn closefrom(c_int) -> ()) {
            // SAFETY: forwarding the caller's argument.
            unsafe { real(lowfd) };
        }
        return;
    }
    let raw = |a: c_uint, b: c_uint, f: c_int| {
        // SAFETY: close_range(2) takes two numbers and flags.
        unsafe { crate::sys::raw_syscall!(libc::SYS_close_range, a, b, f) as c_int }
    };
    if close_range_around(lowfd.max(0) as c_uint, c_uint::MAX, 0, raw) != 0 {
        // No close_range in this kernel: one close at a time, through our
        // hook, up to the fd limit.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let end = lim.rlim_cur.min(c_int::MAX as u64) as c_int;
        for fd in lowfd.max(0)..end {
            // SAFETY: closing the caller's fds, as it asked.
            unsafe { close(fd) };
        }
    }
}

hook! {
    /// `dup(2)`: the copy shares the open file, hence its flags and timeouts.
    fn dup(old: c_int) -> c_int as real {
        if hidden(old) {
            return ebadf();
        }
        // SAFETY: forwarding the caller's argument.
        let new = unsafe { real(old) };
        if new >= 0 {
            fdtable::duplicated(old, new);
        }
        new
    }
}

/// True if `fd` is open (F_GETFD by raw system call).
fn is_open(fd: c_int) -> bool {
    sys::raw_fcntl(fd, libc::F_GETFD, 0) >= 0
}

/// `dup2`/`dup3` replace `new` only if `old` is open: only then do its waiters go,
/// and does the runtime's fd at `new`, if there is one, move out of the way.
fn replacing(old: c_int, new: c_int, call: impl FnOnce() -> c_int) -> c_int {
    if old != new && hidden(old) {
        return ebadf();
    }
    if old != new && is_open(old) {
        fdtable::closing(new);
        if hidden(new) {
            if let Err(e) = ownfd::vacate(new) {
                set_errno(e);
                return -1;
            }
        }
    }
    let r = call();
    if r >= 0 && old != new {
        fdtable::duplicated(old, r);
    }
    r
}

hook! {
    /// `dup2(2)`: a coroutine waiting on `new` wakes with EBADF.
    fn dup2(old: c_int, new: c_int) -> c_int as real {
        if old == new && hidden(old) {
            return ebadf();
        }
        // SAFETY: forwarding the caller's arguments.
        replacing(old, new, || unsafe { real(old, new) })
    }
}

alias! {
    /// glibc's exported alias of `dup2`.
    fn __dup2(old: c_int, new: c_int) -> c_int = dup2
}

hook! {
    /// `dup3(2)`.
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        replacing(old, new, || unsafe { real(old, new, flags) })
    }
}

hook! {
    /// `fcntl(2)`, variadic in C: see `hook!` on why a fixed third argument is
    /// ABI-correct. F_GETFL hides our O_NONBLOCK; F_SETFL keeps it while recording
    /// what the user asked; F_DUPFD copies the fd's facts.
    fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int as real {
        // glibc's only cancellable commands: the waiting locks.
        if cmd == libc::F_SETLKW || cmd == libc::F_OFD_SETLKW {
            cancel::cancellation_point();
        }
        if hidden(fd) {
            return ebadf();
        }
        match cmd {
            libc::F_GETFL => {
                // SAFETY: forwarding the caller's arguments.
                let flags = unsafe { real(fd, cmd, arg) };
                if flags >= 0 && fdtable::we_set_nonblock(fd) {
                    return flags & !libc::O_NONBLOCK;
                }
                flags
            }
            libc::F_SETFL => {
                let wanted = arg as c_int & libc::O_NONBLOCK != 0;
                let ours = fdtable::known(fd).is_some_and(|f| f.we_set_nonblock);
                let arg = if ours { arg | libc::O_NONBLOCK as c_ulong } else { arg };
                // SAFETY: the caller's arguments, with O_NONBLOCK kept in an
                // F_SETFL value (an integer argument).
                let r = unsafe { real(fd, cmd, arg) };
                if r == 0 {
                    fdtable::set_user_nonblock(fd, wanted);
                }
                r
            }
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
                // SAFETY: forwarding the caller's arguments.
                let new = unsafe { real(fd, cmd, arg) };
                if new < 0 {
                    return new;
                }
                let new = lowest_free(new, arg, cmd == libc::F_DUPFD_CLOEXEC);
                fdtable::duplicated(fd, new);
                new
            }
            // SAFETY: forwarding the caller's arguments.
            _ => unsafe { real(fd, cmd, arg) },
        }
    }
}

/// F_DUPFD gave `new`, the lowest number from `min` free to the kernel: if
/// one of the runtime's fds sits in between, the program would have had that
/// one natively. It gets it: ours moves, the copy moves onto its number.
fn lowest_free(new: c_int, min: c_ulong, cloexec: bool) -> c_int {
    let min = min.min(c_int::MAX as c_ulong) as c_uint;
    if (new as c_uint) <= min || !runtime::engaged() || ownfd::lowest() >= new {
        return new;
    }
    let mut first = [0; 1];
    if ownfd::ours_in(min, new as c_uint - 1, &mut first) == 0 || ownfd::vacate(first[0]).is_err() {
        return new;
    }
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 onto the number just vacated, by system call.
    if unsafe { crate::sys::raw_syscall!(libc::SYS_dup3, new, first[0], flags) } < 0 {
        return new;
    }
    // The first copy goes by system call too (the copy is the program's; ours has moved).
    sys::raw_close(new as c_int);
    first[0]
}

alias! {
    /// `fcntl` as compiled with `_FILE_OFFSET_BITS=64`.
    fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int = fcntl
}
alias! {
    /// glibc's exported alias of `fcntl`.
    fn __fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int = fcntl
}

hook! {
    /// `ioctl(2)`, variadic in C (see `hook!`). FIONBIO records the user's wish;
    /// turning it off on an fd we made non-blocking only records it.
    fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int as real {
        if request != libc::FIONBIO as c_ulong || arg.is_null() {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(fd, request, arg) };
        }
        // SAFETY: FIONBIO takes a pointer to an int, checked non-null.
        let on = unsafe { *arg.cast::<c_int>() } != 0;
        if !on && fdtable::known(fd).is_some_and(|f| f.we_set_nonblock) {
            fdtable::set_user_nonblock(fd, false);
            return 0;
        }
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(fd, request, arg) };
        if r == 0 {
            fdtable::set_user_nonblock(fd, on);
        }
        r
    }
}
