//! The narrow seam to the OS that every layer may use: errno, raw diagnostics.
//!
//! Everything here is safe to call from a hook, from a signal handler and before
//! any constructor has run: no allocation, no locks, no std I/O.

/// The calling thread's errno.
#[inline]
pub(crate) fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

#[inline]
pub(crate) fn set_errno(value: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value }
}

/// Writes `parts` to fd 2 with the raw system call: never reaches our own `write`
/// hook, never allocates, usable in a signal handler.
pub(crate) fn diag(parts: &[&[u8]]) {
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            // SAFETY: the pointer and length describe the live slice `rest`.
            let n = unsafe { libc::syscall(libc::SYS_write, 2, rest.as_ptr(), rest.len()) };
            if n <= 0 {
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                return;
            }
            rest = &rest[n as usize..];
        }
    }
}

/// Formats `n` in decimal into `buf`, returning the digits (no allocation).
pub(crate) fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// close(2) by system call. Raw because the fds closed this way are the
/// runtime's own (or probes it just opened): through libc they would reach our
/// `close` hook, which refuses the runtime's fds and would forget table facts.
pub(crate) fn raw_close(fd: libc::c_int) {
    // SAFETY: close takes only a number; the callers close fds they own.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// fcntl(2) by system call, for the integer-argument commands (F_GETFD,
/// F_GETFL, F_SETFL, F_DUPFD_CLOEXEC…). Raw because our own fds and the fd
/// table's probes must not pass through our `fcntl` hook.
pub(crate) fn raw_fcntl(fd: libc::c_int, cmd: libc::c_int, arg: libc::c_long) -> libc::c_long {
    // SAFETY: with an integer argument, fcntl never touches our memory.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, cmd, arg) }
}
