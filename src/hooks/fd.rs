//! fd lifetime and flags: pipe, close, the dup family, fcntl, ioctl(FIONBIO).
//!
//! `close` and `dup2` over a waited-on fd wake its waiters with EBADF before the
//! number can be reused; `fcntl(F_GETFL)` shows the flags the user set, never the
//! O_NONBLOCK we may have set on an fd we created.

use libc::{c_int, c_ulong, c_void};

use crate::fdtable::{self, Kind};
use crate::runtime;

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

hook! {
    /// `close(2)`: coroutines waiting on `fd` (on any thread) wake with EBADF first.
    fn close(fd: c_int) -> c_int as real {
        runtime::fd_closing(fd);
        fdtable::forget(fd);
        // SAFETY: forwarding the caller's argument.
        unsafe { real(fd) }
    }
}

alias! {
    /// glibc's exported alias of `close`.
    fn __close(fd: c_int) -> c_int = close
}

hook! {
    /// `dup(2)`: the copy shares the open file, hence its flags and timeouts.
    fn dup(old: c_int) -> c_int as real {
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
    // SAFETY: F_GETFD reads only the fd's flags.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD) >= 0 }
}

/// `dup2`/`dup3` replace `new` only if `old` is open: only then do its waiters go.
fn replacing(old: c_int, new: c_int, call: impl FnOnce() -> c_int) -> c_int {
    if old != new && is_open(old) {
        runtime::fd_closing(new);
        fdtable::forget(new);
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
        // SAFETY (all calls below): forwarding the caller's arguments, or the same
        // with O_NONBLOCK added to an F_SETFL value.
        match cmd {
            libc::F_GETFL => {
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
                let r = unsafe { real(fd, cmd, arg) };
                if r == 0 {
                    fdtable::set_user_nonblock(fd, wanted);
                }
                r
            }
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
                let new = unsafe { real(fd, cmd, arg) };
                if new >= 0 {
                    fdtable::duplicated(fd, new);
                }
                new
            }
            _ => unsafe { real(fd, cmd, arg) },
        }
    }
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
