//! Sockets: creation, accept, connect, shutdown, and the recv/send families.

use std::time::{Duration, Instant};

use libc::{
    c_int, c_uint, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t, timespec,
};

use super::blocking::{self, block_in_poll, deadline_for};
use super::cancel;
use super::iov::{IovCursor, iov_total, msghdr_for};
use super::real::Guard;
use crate::fdtable::{self, Kind, Timeout};
use crate::runtime::{self, Direction, Wake};
use crate::sys::{errno, set_errno};

hook! {
    /// `socket(2)`: records the new fd as ours (no other process shares it yet).
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let fd = unsafe { real(domain, ty, protocol) };
        if fd >= 0 {
            let tcp = fdtable::makes_tcp(domain, ty, protocol);
            fdtable::created_as(fd, Kind::Socket, ty & libc::SOCK_NONBLOCK != 0, tcp);
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
    /// `shutdown(2)`: the kernel raises no epoll event when a call can no longer
    /// block (`SHUT_WR` of a full socket: the blocked send fails with EPIPE), so
    /// the coroutines parked on `fd`, on any thread, retry their calls.
    fn shutdown(fd: c_int, how: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(fd, how) };
        if r == 0 && runtime::engaged() {
            runtime::fd_shut_down(fd);
        }
        r
    }
}

/// A listening unix socket shut down for reading fails a blocking `accept`
/// with EINVAL but a non-blocking one with EAGAIN (`unix_accept`): where the
/// caller asked for the blocking call, report the former rather than park
/// for a connection that can no longer come. (A TCP listener leaves the
/// listening state on shutdown: its accept fails with EINVAL either way.)
fn accept_result(fd: c_int, r: isize) -> isize {
    if r >= 0 || errno() != libc::EAGAIN || fdtable::facts(fd).is_some_and(|f| f.user_nonblock) {
        return r;
    }
    if read_hung_up(fd) {
        set_errno(libc::EINVAL);
    } else {
        set_errno(libc::EAGAIN);
    }
    r
}

/// True when `fd` reports a read hang-up (POLLRDHUP or POLLHUP) now.
fn read_hung_up(fd: c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one valid pollfd, a valid zero timeout, no signal mask.
    let n = unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_ppoll,
            &mut pfd,
            1,
            &zero,
            std::ptr::null::<libc::sigset_t>(),
            8,
        )
    };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

hook! {
    /// `accept4(2)`: parks until a connection arrives (or SO_RCVTIMEO expires).
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int as real {
        cancel::cancellation_point();
        let r = blocking::once(&const { blocking::net("accept4") }, fd, Direction::Read, None, None, |_| {
            // SAFETY: forwarding the caller's arguments.
            accept_result(fd, unsafe { real(fd, addr, len, flags) as isize })
        }) as c_int;
        if r >= 0 {
            accepted(fd, r, flags & libc::SOCK_NONBLOCK != 0);
        }
        r
    }
}

hook! {
    /// `accept(2)`.
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int as real {
        cancel::cancellation_point();
        let r = blocking::once(&const { blocking::net("accept") }, fd, Direction::Read, None, None, |_| {
            // SAFETY: forwarding the caller's arguments.
            accept_result(fd, unsafe { real(fd, addr, len) as isize })
        }) as c_int;
        if r >= 0 {
            accepted(fd, r, false);
        }
        r
    }
}

/// Records a socket `accept` returned. Linux copies the listener's SO_RCVTIMEO
/// and SO_SNDTIMEO to it, but not its O_NONBLOCK.
fn accepted(listener: c_int, fd: c_int, user_nonblock: bool) {
    // Examines a listener we never saw, so that its timeouts are known.
    let tcp = fdtable::facts(listener).is_some_and(|f| f.tcp);
    fdtable::created_as(fd, Kind::Socket, user_nonblock, tcp);
    for which in [Timeout::Recv, Timeout::Send] {
        fdtable::set_timeout(fd, which, fdtable::timeout(listener, which));
    }
}

hook! {
    /// `connect(2)`: a blocking connect parks until the handshake ends, then
    /// reports its result (ECONNREFUSED…); SO_SNDTIMEO expiry gives EINPROGRESS,
    /// as Linux does. The user's non-blocking socket gets the kernel's answers.
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int as real {
        cancel::cancellation_point();
        // SAFETY: forwarding the caller's arguments (each call below likewise).
        let call = || unsafe { real(fd, addr, len) };
        if !runtime::in_coroutine() {
            if !fdtable::we_set_nonblock(fd) {
                return call();
            }
            return finish_connect(fd, call(), call, |deadline| block_in_poll(fd, Direction::Write, deadline));
        }
        let Some(guard) = Guard::enter() else { return call() };
        let eligible = fdtable::facts(fd).is_some_and(|f| f.kind == Kind::Socket && !f.user_nonblock);
        if !eligible || !fdtable::make_nonblocking(fd) {
            // Not a socket, the user's own non-blocking socket, or an inherited
            // one we may not change: the kernel's behaviour is the answer.
            return call();
        }
        let mut r = call();
        // AF_UNIX gives EAGAIN while the listener's backlog is full. No readiness
        // event says when it drains (the kernel's own wait ends at an accept), so
        // retry after a growing pause; SO_SNDTIMEO expiry gives EAGAIN, as Linux.
        let deadline = deadline_for(fd, Direction::Write);
        let mut pause = Duration::from_millis(1);
        while r < 0 && errno() == libc::EAGAIN {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                set_errno(libc::EAGAIN);
                return -1;
            }
            let until = deadline.map_or(now + pause, |d| d.min(now + pause));
            runtime::label(&const { blocking::net("connect") });
            match guard.release_while(|| runtime::sleep_until(until)) {
                // As the kernel's wait (signal(7)): restarted after SA_RESTART
                // handlers unless a timeout is set, EINTR otherwise.
                Wake::Interrupted { restart } if !restart || deadline.is_some() => {
                    set_errno(libc::EINTR);
                    return -1;
                }
                // SAFETY: nothing in these frames needs dropping but the guard,
                // released while `act_on_cancel` runs.
                Wake::Cancelled if guard.release_while(|| unsafe { super::cancel::act_on_cancel() }) => {}
                Wake::Cancelled => {
                    set_errno(libc::ECANCELED);
                    return -1;
                }
                _ => {}
            }
            pause = (pause * 2).min(Duration::from_millis(20));
            r = call();
        }
        finish_connect(fd, r, call, |deadline| blocking::wait(&guard, &const { blocking::net("connect") }, fd, Direction::Write, deadline))
    }
}

/// After a non-blocking attempt left the handshake pending (EINPROGRESS, or
/// EALREADY when an earlier call's timeout left it so): waits, then connects
/// again, as the kernel's blocking connect does after its own wait. Asking
/// connect again rather than reading SO_ERROR leaves the socket in the state the
/// blocking call leaves: connected (a later connect gives EISCONN), or
/// unconnected after a failure (a retry connects afresh; SO_ERROR read here
/// would make it ECONNABORTED). SO_SNDTIMEO expiry reports the pending state as
/// the kernel's call does: EINPROGRESS, or EALREADY for an already pending one.
fn finish_connect(
    fd: c_int,
    r: c_int,
    call: impl Fn() -> c_int,
    mut wait: impl FnMut(Option<Instant>) -> Result<(), i32>,
) -> c_int {
    let pending = errno();
    if r == 0 || (pending != libc::EINPROGRESS && pending != libc::EALREADY) {
        return r;
    }
    let deadline = deadline_for(fd, Direction::Write);
    loop {
        if let Err(e) = wait(deadline) {
            set_errno(if e == libc::EAGAIN { pending } else { e });
            return -1;
        }
        let r = call();
        // EALREADY: woken before the handshake ended (a stale readiness).
        if r == 0 || errno() != libc::EALREADY {
            return r;
        }
    }
}

hook! {
    /// `recv(2)`; with MSG_WAITALL it waits for the whole length, as blocking.
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t as real passthrough(fd) {
        let op = |done: usize, a: blocking::Attempt| {
            // SAFETY: `done < len`: the range stays inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), len - done, flags | a.msg_flags) }
        };
        let buffer = Some(blocking::Buffer { ptr: buf.cast(), len, flags });
        if waits_for_all(fd, flags) {
            blocking::all_in(&const { blocking::net("recv") }, fd, Direction::Read, Some(flags), len, buffer, op)
        } else {
            blocking::once_in(&const { blocking::net("recv") }, fd, Direction::Read, Some(flags), Some(len), buffer, |a| op(0, a))
        }
    }
}

hook! {
    /// `recvfrom(2)`.
    fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t as real passthrough(fd) {
        let op = |done: usize, a: blocking::Attempt| {
            // SAFETY: `done < len`: the range stays inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), len - done, flags | a.msg_flags, addr, alen) }
        };
        let label = &const { blocking::net("recvfrom") };
        // The ring's receive has no room for the sender's address.
        let buffer = addr.is_null().then_some(blocking::Buffer { ptr: buf.cast(), len, flags });
        if waits_for_all(fd, flags) {
            blocking::all_in(label, fd, Direction::Read, Some(flags), len, buffer, op)
        } else {
            blocking::once_in(label, fd, Direction::Read, Some(flags), Some(len), buffer, |a| op(0, a))
        }
    }
}

hook! {
    /// `recvmsg(2)`; with MSG_WAITALL on a stream it fills every iovec, as
    /// blocking, unless control data is asked for (which must not be split).
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t as real passthrough(fd) {
        // SAFETY: a non-null msghdr is the caller's, readable as the kernel reads
        // it (a bad one gives EFAULT below); only its iovec fields are copied out.
        let iov = unsafe { msg.as_ref() }
            .filter(|h| h.msg_controllen == 0)
            .map(|h| (h.msg_iov, h.msg_iovlen as c_int));
        let Some((iov, iovcnt, total)) = iov
            .filter(|_| waits_for_all(fd, flags))
            .and_then(|(v, n)| Some((v, n, iov_total(v, n)?)))
        else {
            let asked = iov.and_then(|(v, n)| iov_total(v, n));
            return blocking::once(&const { blocking::net("recvmsg") }, fd, Direction::Read, Some(flags), asked, |a| {
                // SAFETY: forwarding the caller's arguments.
                unsafe { real(fd, msg, flags | a.msg_flags) }
            });
        };
        let mut rest = IovCursor::new(iov, iovcnt);
        blocking::all(&const { blocking::net("recvmsg") }, fd, Direction::Read, Some(flags), total, |done, a| {
            if done == 0 {
                // SAFETY: forwarding the caller's arguments.
                return unsafe { real(fd, msg, flags | a.msg_flags) };
            }
            // The sender's address came with the first bytes; the rest is data.
            let (iov, cnt) = rest.tail_at(done, usize::MAX);
            let mut tail = msghdr_for(iov, cnt);
            // SAFETY: `tail` describes live memory of the caller's buffers.
            unsafe { real(fd, &mut tail, flags | a.msg_flags) }
        })
    }
}

/// MSG_WAITALL joins data from several sends only on a stream socket; on a
/// datagram socket the call still returns one datagram.
fn waits_for_all(fd: c_int, flags: c_int) -> bool {
    flags & libc::MSG_WAITALL != 0 && is_stream(fd)
}

/// True for a SOCK_STREAM socket, the only kind that sends a message in part.
fn is_stream(fd: c_int) -> bool {
    let mut ty: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`.
    let r = unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_getsockopt,
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            &mut ty,
            &mut len,
        )
    };
    r == 0 && ty == libc::SOCK_STREAM
}

hook! {
    /// `recvmmsg(2)`: parks for the first message; then, as the blocking call,
    /// keeps receiving until `vlen` messages, unless MSG_WAITFORONE, or until the
    /// call's own `timeout` passes.
    fn recvmmsg(fd: c_int, msgvec: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut timespec) -> c_int as real {
        cancel::cancellation_point();
        // A plain thread on an fd we made non-blocking takes the loop below,
        // which blocks it as the call would.
        if flags & libc::MSG_DONTWAIT != 0 || (!runtime::in_coroutine() && !fdtable::we_set_nonblock(fd)) {
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
            let r = blocking::once(&const { blocking::net("recvmmsg") }, fd, Direction::Read, Some(flags), None, |a| {
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
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t as real passthrough(fd) {
        let buffer = Some(blocking::Buffer { ptr: buf.cast_mut().cast(), len, flags });
        blocking::all_in(&const { blocking::net("send") }, fd, Direction::Write, Some(flags), len, buffer, |done, a| {
            // SAFETY: `done < len`: the range stays inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), len - done, flags | a.msg_flags) }
        })
    }
}

hook! {
    /// `sendto(2)`.
    fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t as real passthrough(fd) {
        let label = &const { blocking::net("sendto") };
        let op = |done: usize, a: blocking::Attempt| {
            // SAFETY: `done < len`: the range stays inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), len - done, flags | a.msg_flags, addr, alen) }
        };
        // The ring's send takes no address: only a connected socket's sendto.
        let buffer = addr.is_null().then_some(blocking::Buffer { ptr: buf.cast_mut().cast(), len, flags });
        blocking::all_in(label, fd, Direction::Write, Some(flags), len, buffer, op)
    }
}

hook! {
    /// `sendmsg(2)`: completes partial sends of a stream socket.
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t as real passthrough(fd) {
        // SAFETY: the caller passes a valid msghdr (or the kernel reports EFAULT).
        let Some(total) = (!msg.is_null()).then(|| unsafe { iov_total((*msg).msg_iov, (*msg).msg_iovlen as c_int) }).flatten() else {
            // SAFETY: forwarding the caller's (invalid) arguments for the kernel to judge.
            return unsafe { real(fd, msg, flags) };
        };
        // SAFETY: checked non-null above.
        let mut rest = unsafe { IovCursor::new((*msg).msg_iov, (*msg).msg_iovlen as c_int) };
        blocking::all(&const { blocking::net("sendmsg") }, fd, Direction::Write, Some(flags), total, |done, a| {
            if done == 0 {
                // SAFETY: forwarding the caller's arguments.
                return unsafe { real(fd, msg, flags | a.msg_flags) };
            }
            // Ancillary data went with the first bytes; the rest is plain data.
            let (iov, cnt) = rest.tail_at(done, usize::MAX);
            let tail = msghdr_for(iov, cnt);
            // SAFETY: `tail` describes live memory of the caller's buffers.
            unsafe { real(fd, &tail, flags | a.msg_flags) }
        })
    }
}

hook! {
    /// `sendmmsg(2)`: as blocking, returns once all `vlen` messages are sent. A
    /// non-blocking attempt may send a stream's message in part, which the
    /// blocking call never leaves so: there each message goes whole through
    /// `sendmsg`, as the kernel's own loop does.
    fn sendmmsg(fd: c_int, msgvec: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int as real {
        cancel::cancellation_point();
        let cooperative = flags & libc::MSG_DONTWAIT == 0 && (runtime::in_coroutine() || fdtable::we_set_nonblock(fd));
        if cooperative && is_stream(fd) {
            let mut sent: c_uint = 0;
            while sent < vlen {
                // SAFETY: `sent < vlen`: a message of the caller's array.
                let m = unsafe { &mut *msgvec.add(sent as usize) };
                // SAFETY: the caller's message header, read as sendmmsg reads it.
                let r = unsafe { sendmsg(fd, &m.msg_hdr, flags) };
                if r < 0 {
                    return if sent > 0 { sent as c_int } else { -1 };
                }
                m.msg_len = r as c_uint;
                sent += 1;
            }
            return sent as c_int;
        }
        blocking::all(&const { blocking::net("sendmmsg") }, fd, Direction::Write, Some(flags), vlen as usize, |done, a| {
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
                let d = if tv.tv_sec < 0 {
                    // Linux takes a negative time as zero: calls do not wait at all.
                    Some(Duration::from_micros(1))
                } else {
                    let d = Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64);
                    (!d.is_zero()).then_some(d)
                };
                fdtable::set_timeout(fd, which, d);
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
