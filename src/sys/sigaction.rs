//! The kernel's own `rt_sigaction`, without glibc's wrapper: glibc refuses its
//! internal signals (SIGSETXID) to `sigaction`, and a handler installed through
//! it gets glibc's restorer, not the one the syscall gate provides.

use libc::c_int;

/// The kernel's `struct sigaction` (x86_64 and aarch64): what `rt_sigaction`
/// takes and gives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelSigaction {
    pub handler: usize,
    pub flags: u64,
    pub restorer: usize,
    /// The kernel's signal set: 64 bits.
    pub mask: u64,
}

/// Sets `sig`'s action to `new` (None: only reads it) and returns the action
/// before, or the errno.
pub(crate) fn rt_sigaction(
    sig: c_int,
    new: Option<&KernelSigaction>,
) -> Result<KernelSigaction, i32> {
    let mut old = KernelSigaction::default();
    let new_ptr = new.map_or(std::ptr::null(), |n| n as *const KernelSigaction);
    // SAFETY: both structs are ours, of the kernel's layout and size (the
    // last argument is the kernel's sigset size, 8 bytes); the kernel checks
    // `sig`.
    let r = unsafe {
        super::raw_syscall!(
            libc::SYS_rt_sigaction,
            sig,
            new_ptr,
            &raw mut old,
            size_of::<u64>()
        )
    };
    if r == 0 { Ok(old) } else { Err(super::errno()) }
}
