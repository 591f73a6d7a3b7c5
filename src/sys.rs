//! The narrow seam to the OS that every layer may use: errno, raw system calls
//! and diagnostics, futex(2) (`futex`), time conversions (`time`).
//!
//! Everything here is safe to call from a hook, from a signal handler and before
//! any constructor has run: no allocation, no locks, no std I/O.

pub(crate) mod futex;
#[cfg(target_arch = "x86_64")]
#[path = "sys/gate_x86_64.rs"]
pub(crate) mod gate;
#[cfg(not(target_arch = "x86_64"))]
#[path = "sys/gate_other.rs"]
pub(crate) mod gate;
mod original;
pub(crate) mod sigaction;
mod target;
pub(crate) mod time;

pub use original::Original;
pub(crate) use time::{deadline_after, deadline_at, timespec_duration, to_timespec};

/// An argument of a raw system call: whatever libc's variadic `syscall`
/// accepted at our call sites (integers, pointers, references), as a register.
pub(crate) trait SysArg {
    fn reg(self) -> libc::c_long;
}

macro_rules! sys_arg_int {
    ($($t:ty),*) => {$(
        impl SysArg for $t {
            #[inline(always)]
            fn reg(self) -> libc::c_long {
                self as libc::c_long
            }
        }
    )*};
}
sys_arg_int!(i8, u8, i16, u16, i32, u32, i64, u64, isize, usize);

impl<T> SysArg for *const T {
    #[inline(always)]
    fn reg(self) -> libc::c_long {
        self as libc::c_long
    }
}
impl<T> SysArg for *mut T {
    #[inline(always)]
    fn reg(self) -> libc::c_long {
        self as libc::c_long
    }
}
impl<T> SysArg for &T {
    #[inline(always)]
    fn reg(self) -> libc::c_long {
        self as *const T as libc::c_long
    }
}
impl<T> SysArg for &mut T {
    #[inline(always)]
    fn reg(self) -> libc::c_long {
        self as *mut T as libc::c_long
    }
}

/// libc's `syscall(nr, args...)` made through the gate: -1 and errno on
/// failure, as libc's. Our own raw calls must never reach our `syscall` hook
/// (which parks coroutines) nor trap under Syscall User Dispatch.
///
/// # Safety
/// The system call's own contract for these arguments.
#[inline]
pub(crate) unsafe fn syscall(nr: libc::c_long, a: [libc::c_long; 6]) -> libc::c_long {
    // SAFETY: the caller keeps the call's contract.
    let r = unsafe { gate::syscall6(nr, a) };
    if (-4095..0).contains(&r) {
        set_errno(-r as i32);
        -1
    } else {
        r
    }
}

/// `raw_syscall!(libc::SYS_x, args...)`: `sys::syscall` with up to six
/// arguments of any `SysArg` type. Expands to an unsafe call, as libc's.
macro_rules! raw_syscall {
    ($nr:expr $(, $a:expr)* $(,)?) => {
        $crate::sys::syscall(
            $nr as libc::c_long,
            $crate::sys::args([$($crate::sys::SysArg::reg($a)),*]),
        )
    };
}
pub(crate) use raw_syscall;

/// Pads up to six registers to six.
#[inline(always)]
pub(crate) fn args<const N: usize>(given: [libc::c_long; N]) -> [libc::c_long; 6] {
    let mut a = [0; 6];
    a[..N].copy_from_slice(&given);
    a
}

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
            let n = unsafe { raw_syscall!(libc::SYS_write, 2, rest.as_ptr(), rest.len()) };
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
    unsafe { raw_syscall!(libc::SYS_close, fd) };
}

/// fcntl(2) by system call, for the integer-argument commands (F_GETFD,
/// F_GETFL, F_SETFL, F_DUPFD_CLOEXEC…). Raw because our own fds and the fd
/// table's probes must not pass through our `fcntl` hook.
pub(crate) fn raw_fcntl(fd: libc::c_int, cmd: libc::c_int, arg: libc::c_long) -> libc::c_long {
    // SAFETY: with an integer argument, fcntl never touches our memory.
    unsafe { raw_syscall!(libc::SYS_fcntl, fd, cmd, arg) }
}

/// The decimal number in the /proc file `path`: after `field` (e.g.
/// `b"FDSize:"`) if given, else the whole file (the number and white space
/// only). Read by system calls because callers run in hooks and in a spawn under
/// the stack lock, where libc's `open` and `read` would reach our hooks (which
/// may park, offload or act on a cancellation); no allocation. Only the file's
/// first 4 KiB are read. None if it cannot be read or parsed.
pub(crate) fn proc_number(path: &std::ffi::CStr, field: Option<&[u8]>) -> Option<usize> {
    // SAFETY: a NUL-terminated path; the flags ask for nothing but reading.
    let fd = unsafe {
        raw_syscall!(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    } as libc::c_int;
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reading into the unfilled rest of our buffer.
        let n =
            unsafe { raw_syscall!(libc::SYS_read, fd, buf[len..].as_mut_ptr(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    raw_close(fd);
    let mut text = &buf[..len];
    if let Some(field) = field {
        let at = text.windows(field.len()).position(|w| w == field)? + field.len();
        text = &text[at..];
    }
    let text = text.trim_ascii_start();
    let digits = text.iter().take_while(|c| c.is_ascii_digit()).count();
    // A whole file must be one number, as `str::parse` wants; after a field,
    // whatever follows the digits is the rest of the file.
    if field.is_none() && (digits == 0 || !text[digits..].trim_ascii().is_empty()) {
        return None;
    }
    text[..digits].iter().try_fold(0usize, |n, &c| {
        n.checked_mul(10)?.checked_add(usize::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::proc_number;

    #[test]
    fn proc_number_reads_a_field_or_a_whole_file() {
        let size = proc_number(c"/proc/self/status", Some(b"FDSize:"));
        assert!(size.is_some_and(|n| n >= 3), "{size:?}");
        let limit = proc_number(c"/proc/sys/vm/max_map_count", None);
        assert!(limit.is_some_and(|n| n > 0), "{limit:?}");
        // A whole file that is not one number, a missing field, a missing file.
        assert_eq!(proc_number(c"/proc/self/status", None), None);
        assert_eq!(
            proc_number(c"/proc/self/status", Some(b"NoSuchField:")),
            None
        );
        assert_eq!(proc_number(c"/proc/self/no-such-file", None), None);
    }
}
