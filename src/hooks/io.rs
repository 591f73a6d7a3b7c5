//! read, write, readv, writev (and glibc's `__read`, `__write`, `__read_chk`).
//!
//! On a socket these become `recv`/`send`/`recvmsg`/`sendmsg` with MSG_DONTWAIT
//! inside a coroutine: the kernel implements `read` on a socket as `recvmsg` with
//! no flags, so results, errors and SIGPIPE are the same. Regular files and block
//! devices go to file.rs, which may hand the call to the offload pool.

use libc::{c_int, c_void, iovec, size_t, ssize_t};

use super::blocking::{self, Attempt};
use super::file;
use super::iov::{IovCursor, iov_total, msghdr_for};
use crate::runtime::Direction;

fn is_socket_attempt(a: Attempt) -> bool {
    a.msg_flags != 0
}

hook! {
    /// `read(2)`: parks the coroutine until data, EOF or an error.
    fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t as real passthrough(fd) {
        if let Some(r) = file::read_at_position(fd, buf, count, real) {
            return r;
        }
        blocking::once(&const { blocking::io("read") }, fd, Direction::Read, socket_flags(fd), Some(count), |a| {
            if is_socket_attempt(a) {
                // SAFETY: same buffer and length the caller gave `read`.
                unsafe { libc::recv(fd, buf, count, a.msg_flags) }
            } else {
                // SAFETY: forwarding the caller's arguments.
                unsafe { real(fd, buf, count) }
            }
        })
    }
}

hook! {
    /// `write(2)`: parks as often as needed until every byte is written.
    fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t as real passthrough(fd) {
        // SAFETY: forwarding the caller's arguments.
        if let Some(r) = file::write(fd, count, &mut || unsafe { real(fd, buf, count) }) {
            return r;
        }
        blocking::all(&const { blocking::io("write") }, fd, Direction::Write, socket_flags(fd), count, |done, a| {
            let n = (count - done).min(a.cap);
            // SAFETY: `done < count`, so the pointer and length stay inside the
            // caller's buffer.
            let p = unsafe { buf.cast::<u8>().add(done) }.cast::<c_void>();
            if is_socket_attempt(a) {
                // SAFETY: as above.
                unsafe { libc::send(fd, p, n, a.msg_flags) }
            } else {
                // SAFETY: as above.
                unsafe { real(fd, p, n) }
            }
        })
    }
}

hook! {
    /// `readv(2)`.
    fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t as real passthrough(fd) {
        if let Some(r) = file::readv_at_position(fd, iov, iovcnt, real) {
            return r;
        }
        blocking::once(&const { blocking::io("readv") }, fd, Direction::Read, socket_flags(fd), iov_total(iov, iovcnt), |a| {
            if is_socket_attempt(a) {
                let mut msg = msghdr_for(iov, iovcnt);
                // SAFETY: `msg` points at the caller's iovec array, unchanged.
                unsafe { libc::recvmsg(fd, &mut msg, a.msg_flags) }
            } else {
                // SAFETY: forwarding the caller's arguments.
                unsafe { real(fd, iov, iovcnt) }
            }
        })
    }
}

hook! {
    /// `writev(2)`: completes partial writes as the blocking call would.
    fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t as real passthrough(fd) {
        let Some(total) = iov_total(iov, iovcnt) else {
            // SAFETY: invalid arguments: let the kernel report them.
            return unsafe { real(fd, iov, iovcnt) };
        };
        // SAFETY: forwarding the caller's arguments.
        if let Some(r) = file::write(fd, total, &mut || unsafe { real(fd, iov, iovcnt) }) {
            return r;
        }
        let mut rest = IovCursor::new(iov, iovcnt);
        blocking::all(&const { blocking::io("writev") }, fd, Direction::Write, socket_flags(fd), total, |done, a| {
            let (ptr, cnt) = rest.tail_at(done, a.cap);
            if is_socket_attempt(a) {
                let mut msg = msghdr_for(ptr, cnt);
                msg.msg_iov = ptr.cast_mut();
                // SAFETY: `msg` points at live iovecs covering the caller's buffers.
                unsafe { libc::sendmsg(fd, &msg, a.msg_flags) }
            } else {
                // SAFETY: as above.
                unsafe { real(fd, ptr, cnt) }
            }
        })
    }
}

hook! {
    /// glibc's fortified `read` (`_FORTIFY_SOURCE`).
    fn __read_chk(fd: c_int, buf: *mut c_void, count: size_t, buflen: size_t) -> ssize_t as real {
        if count > buflen {
            // SAFETY: the real check reports the overflow and aborts, as it should.
            return unsafe { real(fd, buf, count, buflen) };
        }
        // SAFETY: same contract as `read` once the size check passed.
        unsafe { read(fd, buf, count) }
    }
}

alias! {
    /// glibc's internal-but-exported `read`.
    fn __read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t = read
}
alias! {
    /// glibc's internal-but-exported `write`.
    fn __write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t = write
}

/// `Some(0)` for a socket in a coroutine (its calls can take MSG_DONTWAIT), None
/// otherwise. Examines the fd only in a coroutine: outside, the flags are unused.
fn socket_flags(fd: c_int) -> Option<c_int> {
    if !crate::runtime::in_coroutine() {
        return None;
    }
    crate::fdtable::facts(fd)
        .filter(|f| f.kind == crate::fdtable::Kind::Socket)
        .map(|_| 0)
}
