//! read, write, readv, writev (and glibc's `__read`, `__write`, `__read_chk`).
//!
//! On a socket these become `recv`/`send`/`recvmsg`/`sendmsg` with MSG_DONTWAIT
//! inside a coroutine: the kernel implements `read` on a socket as `recvmsg` with
//! no flags, so results, errors and SIGPIPE are the same. Regular files and block
//! devices go to file.rs, which may hand the call to the offload pool.

use libc::{c_int, c_void, iovec, msghdr, size_t, ssize_t};

use super::blocking::{self, Attempt};
use super::file;
use super::iov::{IovCursor, iov_total, msghdr_for};
use crate::fdtable::{self, Kind};
use crate::runtime::Direction;
use crate::sys;

fn is_socket_attempt(a: Attempt) -> bool {
    a.msg_flags != 0
}

// The socket attempts (MSG_DONTWAIT, in a coroutine) are system calls made
// here, through the gate (`sys::raw_syscall!`): libc's `recv` and `send`
// would enter our own hooks again and plan, guard and look up the fd a second
// time (~500 instructions a round trip in a green C echo server), and under
// Syscall User Dispatch the kernel lets a call from the gate through by its
// address, without reading the selector (`__get_user` and the vDSO check: 0.8 %
// of that server's CPU in `perf record`). They never block, so they need
// none of libc's cancellation handling.

/// # Safety
/// recv(2)'s contract.
unsafe fn socket_recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the caller's.
    unsafe { sys::raw_syscall!(libc::SYS_recvfrom, fd, buf, n, flags, 0usize, 0usize) as ssize_t }
}

/// # Safety
/// send(2)'s contract.
unsafe fn socket_send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: the caller's.
    unsafe { sys::raw_syscall!(libc::SYS_sendto, fd, buf, n, flags, 0usize, 0usize) as ssize_t }
}

/// # Safety
/// recvmsg(2)'s contract.
unsafe fn socket_recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    // SAFETY: the caller's.
    unsafe { sys::raw_syscall!(libc::SYS_recvmsg, fd, msg, flags) as ssize_t }
}

/// # Safety
/// sendmsg(2)'s contract.
unsafe fn socket_sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: the caller's.
    unsafe { sys::raw_syscall!(libc::SYS_sendmsg, fd, msg, flags) as ssize_t }
}

hook! {
    /// `read(2)`: parks the coroutine until data, EOF or an error.
    fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t as real passthrough(fd) {
        let flags = match socket_or_file(fd) {
            Some(flags) => flags,
            None => match file::read_at_position(fd, buf, count, real) {
                Some(r) => return r,
                None => socket_flags(fd),
            },
        };
        let label = &const { blocking::io("read") };
        let op = |a: Attempt| {
            if is_socket_attempt(a) {
                // SAFETY: same buffer and length the caller gave `read`.
                unsafe { socket_recv(fd, buf, count, a.msg_flags) }
            } else {
                // SAFETY: forwarding the caller's arguments.
                unsafe { real(fd, buf, count) }
            }
        };
        // A socket (flags given) is one the ring can read.
        let buffer = flags.map(|f| blocking::Buffer { ptr: buf.cast(), len: count, flags: f });
        blocking::once_in(label, fd, Direction::Read, flags, Some(count), buffer, op)
    }
}

hook! {
    /// `write(2)`: parks as often as needed until every byte is written.
    fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t as real passthrough(fd) {
        let flags = match socket_or_file(fd) {
            Some(flags) => flags,
            // SAFETY: forwarding the caller's arguments.
            None => match file::write(fd, count, &mut || unsafe { real(fd, buf, count) }) {
                Some(r) => return r,
                None => socket_flags(fd),
            },
        };
        let label = &const { blocking::io("write") };
        let op = |done: usize, a: Attempt| {
            let n = (count - done).min(a.cap);
            // SAFETY: `done < count`, so the pointer and length stay inside the
            // caller's buffer.
            let p = unsafe { buf.cast::<u8>().add(done) }.cast::<c_void>();
            if is_socket_attempt(a) {
                // SAFETY: as above.
                unsafe { socket_send(fd, p, n, a.msg_flags) }
            } else {
                // SAFETY: as above.
                unsafe { real(fd, p, n) }
            }
        };
        let buffer = flags.map(|f| blocking::Buffer { ptr: buf.cast_mut().cast(), len: count, flags: f });
        blocking::all_in(label, fd, Direction::Write, flags, count, buffer, op)
    }
}

hook! {
    /// `readv(2)`.
    fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t as real passthrough(fd) {
        let flags = match socket_or_file(fd) {
            Some(flags) => flags,
            None => match file::readv_at_position(fd, iov, iovcnt, real) {
                Some(r) => return r,
                None => socket_flags(fd),
            },
        };
        blocking::once(&const { blocking::io("readv") }, fd, Direction::Read, flags, iov_total(iov, iovcnt), |a| {
            if is_socket_attempt(a) {
                let mut msg = msghdr_for(iov, iovcnt);
                // SAFETY: `msg` points at the caller's iovec array, unchanged.
                unsafe { socket_recvmsg(fd, &mut msg, a.msg_flags) }
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
        let flags = match socket_or_file(fd) {
            Some(flags) => flags,
            // SAFETY: forwarding the caller's arguments.
            None => match file::write(fd, total, &mut || unsafe { real(fd, iov, iovcnt) }) {
                Some(r) => return r,
                None => socket_flags(fd),
            },
        };
        let mut rest = IovCursor::new(iov, iovcnt);
        blocking::all(&const { blocking::io("writev") }, fd, Direction::Write, flags, total, |done, a| {
            let (ptr, cnt) = rest.tail_at(done, a.cap);
            if is_socket_attempt(a) {
                let mut msg = msghdr_for(ptr, cnt);
                msg.msg_iov = ptr.cast_mut();
                // SAFETY: `msg` points at live iovecs covering the caller's buffers.
                unsafe { socket_sendmsg(fd, &msg, a.msg_flags) }
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

/// The socket flags (`socket_flags`) of an fd already known not to be a file,
/// from one load of its fd-table entry; None: ask file.rs first (a file, or
/// an fd not seen yet). Sockets and pipes skip file.rs's checks this way,
/// and the socket ones the second look at the fd table.
#[inline]
fn socket_or_file(fd: c_int) -> Option<Option<c_int>> {
    match fdtable::known(fd)?.kind {
        Kind::Socket => Some(Some(0)),
        Kind::Stream => Some(None),
        Kind::File => None,
    }
}

/// `Some(0)` for a socket in a coroutine (its calls can take MSG_DONTWAIT), None
/// otherwise. Examines the fd only in a coroutine: outside, the flags are unused.
fn socket_flags(fd: c_int) -> Option<c_int> {
    if !crate::runtime::in_coroutine() {
        return None;
    }
    fdtable::facts(fd)
        .filter(|f| f.kind == Kind::Socket)
        .map(|_| 0)
}
