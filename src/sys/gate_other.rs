//! No gate on this architecture: Syscall User Dispatch is not used, and our
//! own system calls go through libc's `syscall`, the real one (never our hook:
//! dlsym finds the next definition).

pub(crate) const SUPPORTED: bool = false;

pub(crate) fn range() -> (usize, usize) {
    (0, 0)
}

pub(crate) fn restorer() -> usize {
    0
}

/// # Safety
/// The system call's own contract for these arguments.
pub(crate) unsafe fn syscall6(nr: libc::c_long, a: [libc::c_long; 6]) -> libc::c_long {
    type Syscall = unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long;
    // SAFETY: `syscall` is a NUL-terminated name; dlsym has no other preconditions.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) };
    if f.is_null() {
        return -libc::c_long::from(libc::ENOSYS);
    }
    // SAFETY: libc's `syscall` has this signature; the caller keeps the call's contract.
    let r = unsafe {
        std::mem::transmute::<*mut libc::c_void, Syscall>(f)(nr, a[0], a[1], a[2], a[3], a[4], a[5])
    };
    if r == -1 {
        -libc::c_long::from(super::errno())
    } else {
        r
    }
}
