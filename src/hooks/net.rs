//! Sockets: creation, accept, connect, and the recv/send families.

use std::time::Instant;

use libc::{
    c_int, c_uint, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t, timespec,
};

use super::blocking::{self, block_in_poll, deadline_for};
use super::iov::{IovCursor, iov_total};
use super::real::Guard;
use crate::fdtable::{self, Kind, Timeout};
use crate::runtime::{self, Direction};
use crate::sys::{errno, set_errno};

hook! {
    /// `socket(2)`: records the new fd as ours (no other process shares it yet).
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let fd = unsafe { real(domain, ty, protocol) };
        if fd >= 0 {
            fdtable::created(fd, Kind::Socket, ty & libc::SOCK_NONBLOCK != 0);
        }
        fd
    }
}

hook! {
    /// `socketpair(2)`.
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(domain, ty, protocol, sv) };
        if r == 0 {
            // SAFETY: on success the kernel wrote two fds to `sv`.
            let fds = unsafe { [*sv, *sv.add(1)] };
            for fd in fds {
                fdtable::created(fd, Kind::Socket, ty & libc::SOCK_NONBLOCK != 0);
            }
        }
        r
    }
}

hook! {
    /// `accept4(2)`: parks until a connection arrives (or SO_RCVTIMEO expires).
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int as real {
        let r = blocking::once(fd, Direction::Read, None, |_| {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(fd, addr, len, flags) as isize }
        }) as c_int;
        if r >= 0 {
            // Linux does not pass the listener's O_NONBLOCK on to the new socket.
            fdtable::created(r, Kind::Socket, flags & libc::SOCK_NONBLOCK != 0);
        }
        r
    }
}

hook! {
    /// `accept(2)`.
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int as real {
        let r = blocking::once(fd, Direction::Read, None, |_| {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(fd, addr, len) as isize }
        }) as c_int;
        if r >= 0 {
            fdtable::created(r, Kind::Socket, false);
        }
        r
    }
}

hook! {
    /// `connect(2)`: a blocking connect parks until the handshake ends, then reports
    /// `SO_ERROR` (ECONNREFUSED…); SO_SNDTIMEO expiry gives EINPROGRESS, as Linux
    /// does. A non-blocking socket still gets EINPROGRESS at once.
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int as real {
        // SAFETY: forwarding the caller's arguments (each call below likewise).
        let call = || unsafe { real(fd, addr, len) };
        if !runtime::in_coroutine() {
            if !fdtable::we_set_nonblock(fd) {
                return call();
            }
            return finish_connect(fd, call(), |deadline| block_in_poll(fd, Direction::Write, deadline));
        }
        let Some(guard) = Guard::enter() else { return call() };
        let eligible = fdtable::facts(fd).is_some_and(|f| f.kind == Kind::Socket && !f.user_nonblock);
        if !eligible || !fdtable::make_nonblocking(fd) {
            // Not a socket, the user's own non-blocking socket, or an inherited
            // one we may not change: the kernel's behaviour is the answer.
            return call();
        }
        let mut r = call();
        // AF_UNIX gives EAGAIN while the listener's backlog is full: wait, retry.
        while r < 0 && errno() == libc::EAGAIN {
            if let Err(e) = blocking::wait(&guard, fd, Direction::Write, deadline_for(fd, Direction::Write)) {
                set_errno(if e == libc::EAGAIN { libc::EINPROGRESS } else { e });
                return -1;
            }
            r = call();
        }
        finish_connect(fd, r, |deadline| blocking::wait(&guard, fd, Direction::Write, deadline))
    }
}

/// After a non-blocking connect: waits for the handshake and reports its result.
fn finish_connect(
    fd: c_int,
    r: c_int,
    wait: impl FnOnce(Option<Instant>) -> Result<(), i32>,
) -> c_int {
    if r == 0 || errno() != libc::EINPROGRESS {
        return r;
    }
    if let Err(e) = wait(deadline_for(fd, Direction::Write)) {
        set_errno(if e == libc::EAGAIN {
            libc::EINPROGRESS
        } else {
            e
        });
        return -1;
    }
    let mut err: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `err`.
    let ok = unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err,
            &mut len,
        )
    };
    if ok < 0 {
        return -1;
    }
    if err != 0 {
        set_errno(err);
        return -1;
    }
    0
}

hook! {
    /// `recv(2)`; with MSG_WAITALL it waits for the whole length, as blocking.
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t as real {
        let op = |done: usize, a: blocking::Attempt| {
            // SAFETY: `done < len`: the range stays inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), len - done, flags | a.msg_flags) }
        };
        if flags & libc::MSG_WAITALL != 0 {
            blocking::all(fd, Direction::Read, Some(flags), len, op)
        } else {
            blocking::once(fd, Direction::Read, Some(flags), |a| op(0, a))
        }
    }
}

hook! {
    /// `recvfrom(2)`.
    fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t as real {
        let op = |done: usize, a: blocking::Attempt| {
            // SAFETY: `done < len`: the range stays inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), len - done, flags | a.msg_flags, addr, alen) }
        };
        if flags & libc::MSG_WAITALL != 0 {
            blocking::all(fd, Direction::Read, Some(flags), len, op)
        } else {
            blocking::once(fd, Direction::Read, Some(flags), |a| op(0, a))
        }
    }
}

hook! {
    /// `recvmsg(2)`.
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t as real {
        blocking::once(fd, Direction::Read, Some(flags), |a| {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(fd, msg, flags | a.msg_flags) }
        })
    }
}

hook! {
    /// `recvmmsg(2)`: parks for the first message; then, as the blocking call,
    /// keeps receiving until `vlen` messages, unless MSG_WAITFORONE, or until the
    /// call's own `timeout` passes.
    fn recvmmsg(fd: c_int, msgvec: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut timespec) -> c_int as real {
        if !runtime::in_coroutine() || flags & libc::MSG_DONTWAIT != 0 {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(fd, msgvec, vlen, flags, timeout) };
        }
        let deadline = (!timeout.is_null()).then(|| {
            // SAFETY: a non-null timeout points at the caller's timespec.
            let t = unsafe { *timeout };
            Instant::now() + std::time::Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
        });
        let mut got: c_uint = 0;
        while got < vlen {
            let r = blocking::once(fd, Direction::Read, Some(flags), |a| {
                // SAFETY: `got < vlen`: the tail of the caller's array.
                unsafe { real(fd, msgvec.add(got as usize), vlen - got, flags | a.msg_flags | libc::MSG_WAITFORONE, std::ptr::null_mut()) as isize }
            });
            if r < 0 {
                return if got > 0 { got as c_int } else { -1 };
            }
            got += r as c_uint;
            if flags & libc::MSG_WAITFORONE != 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        got as c_int
    }
}

hook! {
    /// `send(2)`: parks as often as needed until every byte is sent.
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t as real {
        blocking::all(fd, Direction::Write, Some(flags), len, |done, a| {
            // SAFETY: `done < len`: the range stays inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), len - done, flags | a.msg_flags) }
        })
    }
}

hook! {
    /// `sendto(2)`.
    fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t as real {
        blocking::all(fd, Direction::Write, Some(flags), len, |done, a| {
            // SAFETY: `done < len`: the range stays inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), len - done, flags | a.msg_flags, addr, alen) }
        })
    }
}

hook! {
    /// `sendmsg(2)`: completes partial sends of a stream socket.
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t as real {
        // SAFETY: the caller passes a valid msghdr (or the kernel reports EFAULT).
        let Some(total) = (!msg.is_null()).then(|| unsafe { iov_total((*msg).msg_iov, (*msg).msg_iovlen as c_int) }).flatten() else {
            // SAFETY: forwarding the caller's (invalid) arguments for the kernel to judge.
            return unsafe { real(fd, msg, flags) };
        };
        // SAFETY: checked non-null above.
        let mut rest = unsafe { IovCursor::new((*msg).msg_iov, (*msg).msg_iovlen as c_int) };
        blocking::all(fd, Direction::Write, Some(flags), total, |done, a| {
            if done == 0 {
                // SAFETY: forwarding the caller's arguments.
                return unsafe { real(fd, msg, flags | a.msg_flags) };
            }
            // Ancillary data went with the first bytes; the rest is plain data.
            let (iov, cnt) = rest.tail_at(done, usize::MAX);
            // SAFETY: a zeroed msghdr is valid; we point it at the live tail.
            let mut tail: msghdr = unsafe { std::mem::zeroed() };
            tail.msg_iov = iov.cast_mut();
            tail.msg_iovlen = cnt as _;
            // SAFETY: `tail` describes live memory of the caller's buffers.
            unsafe { real(fd, &tail, flags | a.msg_flags) }
        })
    }
}

hook! {
    /// `sendmmsg(2)`: as blocking, returns once all `vlen` messages are sent.
    fn sendmmsg(fd: c_int, msgvec: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int as real {
        blocking::all(fd, Direction::Write, Some(flags), vlen as usize, |done, a| {
            // SAFETY: `done < vlen`: the tail of the caller's array.
            unsafe { real(fd, msgvec.add(done), vlen - done as c_uint, flags | a.msg_flags) as isize }
        }) as c_int
    }
}

hook! {
    /// `setsockopt(2)`: SO_RCVTIMEO / SO_SNDTIMEO are remembered for parked calls.
    fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(fd, level, name, val, len) };
        if r == 0 && level == libc::SOL_SOCKET {
            let which = match name {
                libc::SO_RCVTIMEO => Some(Timeout::Recv),
                libc::SO_SNDTIMEO => Some(Timeout::Send),
                _ => None,
            };
            if let Some(which) = which {
                // The kernel accepted it, so `val` held a timeval; zero means none.
                // SAFETY: as just said.
                let tv = unsafe { *val.cast::<libc::timeval>() };
                let timeout = if tv.tv_sec < 0 {
                    // Linux (sock_set_timeout) takes a negative timeout as "do not
                    // wait": the shortest timeout we can record.
                    Some(std::time::Duration::ZERO)
                } else {
                    let d = std::time::Duration::from_secs(tv.tv_sec as u64)
                        + std::time::Duration::from_micros(tv.tv_usec as u64);
                    (!d.is_zero()).then_some(d)
                };
                fdtable::set_timeout(fd, which, timeout);
            }
        }
        r
    }
}

hook! {
    /// glibc's fortified `recv`.
    fn __recv_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int) -> ssize_t as real {
        if len > buflen {
            // SAFETY: the real check reports the overflow and aborts.
            return unsafe { real(fd, buf, len, buflen, flags) };
        }
        // SAFETY: same contract as `recv` once the size check passed.
        unsafe { recv(fd, buf, len, flags) }
    }
}

hook! {
    /// glibc's fortified `recvfrom`.
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t as real {
        if len > buflen {
            // SAFETY: the real check reports the overflow and aborts.
            return unsafe { real(fd, buf, len, buflen, flags, addr, alen) };
        }
        // SAFETY: same contract as `recvfrom` once the size check passed.
        unsafe { recvfrom(fd, buf, len, flags, addr, alen) }
    }
}

alias! {
    /// glibc's exported alias of `send`.
    fn __send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t = send
}
alias! {
    /// glibc's exported alias of `connect`.
    fn __connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int = connect
}
