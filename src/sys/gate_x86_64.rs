//! The gate: the only code from which a system call is always allowed while
//! Syscall User Dispatch blocks (the range handed to the kernel is exactly
//! this section). Two entry points, laid out back to back:
//!
//! - `patchall_gate_syscall(nr, a1..a6)`: System V arguments shifted into the
//!   kernel's registers (`rcx` becomes `r10`; the sixth argument is on the
//!   stack), `syscall`, `ret`. Returns the raw result (-errno on failure).
//! - `patchall_gate_restorer`: `rt_sigreturn` for handlers we install with
//!   `SA_RESTORER`, and the place a trapped `rt_sigreturn` is sent to finish.

std::arch::global_asm!(
    ".pushsection .text.patchall_gate,\"ax\",@progbits",
    ".p2align 4",
    ".globl patchall_gate_start",
    ".hidden patchall_gate_start",
    "patchall_gate_start:",
    ".globl patchall_gate_syscall",
    ".hidden patchall_gate_syscall",
    ".type patchall_gate_syscall,@function",
    "patchall_gate_syscall:",
    // Unwind information (it moves no stack pointer: the default rule), so
    // that a stack taken while a call waits here (the blocking monitor's)
    // unwinds through it to the program's frames.
    ".cfi_startproc",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov r10, r8",
    "mov r8, r9",
    "mov r9, [rsp + 8]",
    "syscall",
    "ret",
    ".cfi_endproc",
    ".size patchall_gate_syscall, . - patchall_gate_syscall",
    // An unwinder looks up the frame of a return address at the byte before
    // it: a handler's return address is the restorer, so that byte must
    // belong to no function (glibc's `__restore_rt` has the same `nop`).
    "nop",
    ".globl patchall_gate_restorer",
    ".hidden patchall_gate_restorer",
    ".type patchall_gate_restorer,@function",
    "patchall_gate_restorer:",
    // `mov rax, 15; syscall`, spelled as glibc's `__restore_rt` is: libgcc's
    // unwinder knows a signal frame by these very bytes.
    ".byte 0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00",
    "syscall",
    "ud2",
    ".size patchall_gate_restorer, . - patchall_gate_restorer",
    ".globl patchall_gate_end",
    ".hidden patchall_gate_end",
    "patchall_gate_end:",
    ".popsection",
);

pub(crate) const SUPPORTED: bool = true;

unsafe extern "C" {
    fn patchall_gate_start();
    fn patchall_gate_end();
    fn patchall_gate_restorer();
    /// # Safety
    /// The system call's own contract for these arguments.
    pub(crate) fn patchall_gate_syscall(
        nr: libc::c_long,
        a1: libc::c_long,
        a2: libc::c_long,
        a3: libc::c_long,
        a4: libc::c_long,
        a5: libc::c_long,
        a6: libc::c_long,
    ) -> libc::c_long;
}

/// The gate's addresses: (start, length).
pub(crate) fn range() -> (usize, usize) {
    let start = patchall_gate_start as *const () as usize;
    (start, patchall_gate_end as *const () as usize - start)
}

/// The `rt_sigreturn` stub inside the gate.
pub(crate) fn restorer() -> usize {
    patchall_gate_restorer as *const () as usize
}

/// The system call `nr` made from the gate: never trapped, never hooked.
/// Returns the kernel's raw result (-errno on failure).
///
/// # Safety
/// The system call's own contract for these arguments.
#[inline]
pub(crate) unsafe fn syscall6(nr: libc::c_long, a: [libc::c_long; 6]) -> libc::c_long {
    // SAFETY: the caller keeps the call's contract; the stub follows the C ABI.
    unsafe { patchall_gate_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}
