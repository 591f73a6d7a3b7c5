//! `dlopen`: once coroutines have TLS blocks of their own (`runtime::tls`), a
//! library loaded with initial-exec TLS gets its TLS image copied into them
//! (glibc copies it into the threads on its lists only).
//!
//! glibc resolves a relative `dlopen` with the caller's RUNPATH and `$ORIGIN`,
//! found from the return address: until a block exists, `dlopen` is a jump
//! to glibc's with the caller's frame untouched. After that it is a call, and
//! glibc sees libpatchall as the caller.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_char, c_int};

use crate::runtime::tls;

/// glibc's `dlopen`, found by the constructor below (0 until then).
static PATCHALL_REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);

fn real() -> Option<unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void> {
    let mut a = PATCHALL_REAL_DLOPEN.load(Ordering::Relaxed);
    if a == 0 {
        // SAFETY: a NUL-terminated name; dlsym has no other preconditions.
        a = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlopen".as_ptr()) } as usize;
        PATCHALL_REAL_DLOPEN.store(a, Ordering::Relaxed);
    }
    // SAFETY: dlsym found glibc's dlopen, whose signature this is.
    (a != 0).then(|| unsafe { std::mem::transmute(a) })
}

/// Finds glibc's `dlopen` when the library is loaded, before any code calls it.
#[used]
#[unsafe(link_section = ".init_array")]
static FIND_REAL: extern "C" fn() = {
    extern "C" fn find() {
        let _ = real();
    }
    find
};

/// The call made once blocks exist (or before the constructor ran).
unsafe extern "C" fn patchall_dlopen_slow(file: *const c_char, mode: c_int) -> *mut c_void {
    let Some(real) = real() else {
        return std::ptr::null_mut();
    };
    // SAFETY: the caller's arguments.
    let handle = unsafe { real(file, mode) };
    if !handle.is_null() && tls::BLOCKS_EXIST.load(Ordering::Acquire) {
        tls::after_dlopen();
    }
    handle
}

/// `dlopen(3)`: a tail jump to glibc's while no block exists, so that glibc
/// sees the caller's return address; else `patchall_dlopen_slow`.
///
/// # Safety
/// As glibc's `dlopen`.
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
    std::arch::naked_asm!(
        "cmp byte ptr [rip + {exist}], 0",
        "jne {slow}",
        "mov rax, qword ptr [rip + {real}]",
        "test rax, rax",
        "jz {slow}",
        "jmp rax",
        exist = sym tls::BLOCKS_EXIST,
        real = sym PATCHALL_REAL_DLOPEN,
        slow = sym patchall_dlopen_slow,
    )
}
