//! Syscall User Dispatch: system calls a coroutine makes without passing
//! through a hook (glibc's internal `__read`, inline `syscall` instructions)
//! trap into our SIGSYS handler, which gives them the hooks' treatment.
//!
//! Per OS thread that runs a scheduler, `prctl(PR_SET_SYSCALL_USER_DISPATCH)`
//! names a selector byte (in this thread's `GATE`) and an allowed range (the
//! gate, `sys::gate`). The kernel reads the byte at every system call made
//! outside the gate: ALLOW runs it, BLOCK raises SIGSYS instead. The byte is
//! BLOCK only while coroutine code runs: a coroutine's body starts with it
//! (`coroutine_start`), every switch saves the running coroutine's and puts
//! back the scheduler's ALLOW (`switch_in`/`switch_out`, as errno), and a
//! hook's body (`Allow`, and `Guard`) sets ALLOW. So the
//! scheduler, a hook and its real call, plain threads and the offload pool
//! never trap.
//!
//! Measured on this kernel: a new thread and a fork child do not inherit the
//! dispatch state (the kernel clears it), and `exec` ends it, so nothing is
//! needed across them; the child of a `fork` goes on as a plain thread anyway.
//!
//! The handler runs on the coroutine's own stack (no `SA_ONSTACK`: the
//! alternate stack is the thread's, and a coroutine may park inside the
//! handler while another traps) with `SA_NODEFER` (a coroutine parked inside
//! it must not leave SIGSYS blocked for the others: a trap while SIGSYS is
//! blocked kills the process). It returns through the gate's restorer; before
//! returning it writes the thread's current signal mask into the saved context,
//! so that `rt_sigreturn` does not undo a mask changed while it was parked.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

use libc::{c_int, c_long, c_void, siginfo_t};

use super::tp_local::tp_local;
use crate::sys::sigaction::{KernelSigaction, rt_sigaction};
use crate::sys::{self, diag, gate};

pub(crate) const ALLOW: u8 = 0;
pub(crate) const BLOCK: u8 = 1;

const PR_SET_SYSCALL_USER_DISPATCH: c_int = 59;
const PR_SYS_DISPATCH_OFF: c_long = 0;
const PR_SYS_DISPATCH_ON: c_long = 1;
/// `si_code` of a SIGSYS raised by dispatch (not seccomp, not `kill`).
const SYS_USER_DISPATCH: c_int = 2;
const SA_RESTORER: c_int = 0x0400_0000;

/// One thread's dispatch state, in one thread-local so that a hook's entry
/// pays a single thread-local access for its re-entrancy flag and the flip.
pub(crate) struct ThreadGate {
    /// The byte the kernel reads (ALLOW or BLOCK; any other value kills).
    selector: Cell<u8>,
    /// Hook logic runs on this thread (see `Guard`).
    in_hook: Cell<bool>,
    /// Dispatch is on for this thread.
    on: Cell<bool>,
    /// A trapped call was re-made in place with ALLOW (a `clone` that
    /// starts the child on a new stack): the next hook or switch out puts
    /// BLOCK back for when it returns to the coroutine.
    reblock: Cell<bool>,
    /// The SIGSYS handler is handing a trapped call to its hook: the hook's
    /// first `hook_enter` takes the mark into its guard (a frame of the
    /// coroutine's own, so the mark survives its parks and no other
    /// coroutine of the thread sees it).
    trapped: Cell<bool>,
}

tp_local! {
    /// Starts as zero bytes: ALLOW, and every flag false.
    static GATE: ThreadGate = zeroed;
}
const _: () = assert!(ALLOW == 0, "GATE starts with ALLOW");

/// Runs `f` on this OS thread's gate: the kernel reads the selector of the
/// OS thread's own block, also while a coroutine with a TLS block of its own
/// runs (`TpLocal::per_os_thread`).
#[inline(always)]
fn gate<R>(f: impl FnOnce(&ThreadGate) -> R) -> R {
    GATE.per_os_thread(f)
}

/// What this thread's selector goes back to when the caller returns to
/// coroutine code: the value now, or BLOCK owed after an in-place call.
#[inline(always)]
fn owed(g: &ThreadGate) -> u8 {
    if g.reblock.get() {
        g.reblock.set(false);
        BLOCK
    } else {
        g.selector.get()
    }
}

/// A hook's entry: None if this thread is already in hook logic; otherwise
/// marks it and sets ALLOW, returning the selector the guard puts back when it
/// drops, whether the call was trapped (the mark `on_sigsys` set, taken here),
/// and the gate itself.
#[inline(always)]
fn hook_enter() -> Option<(u8, bool, *const ThreadGate)> {
    gate(|g| {
        if g.in_hook.replace(true) {
            return None;
        }
        let saved = owed(g);
        g.selector.set(ALLOW);
        Some((saved, g.trapped.replace(false), ptr::from_ref(g)))
    })
}

/// Marks this thread as running hook logic; a hooked call made meanwhile (by our
/// own code, or a signal handler interrupting us) goes straight to libc. While
/// it is held, system calls are allowed under Syscall User Dispatch (the hook's
/// real call must not trap); dropping it puts back the selector it found.
/// The runtime's own threads and reads (the monitor, symbolizing) hold one too.
pub(crate) struct Guard {
    selector: u8,
    trapped: bool,
    /// The gate `enter` found, kept for the leave and the parks in between: a
    /// coroutine never leaves its OS thread, and each lookup of the
    /// thread-local is a few loads (`tp_local`). A raw pointer, which keeps
    /// the guard on its thread (not Send).
    gate: *const ThreadGate,
}

impl Guard {
    /// None if this thread is already inside a hook.
    #[inline]
    pub(crate) fn enter() -> Option<Guard> {
        hook_enter().map(|(selector, trapped, gate)| Guard {
            selector,
            trapped,
            gate,
        })
    }

    fn gate(&self) -> &ThreadGate {
        // SAFETY: this OS thread's gate (the guard is not Send), a const
        // thread-local without destructor, alive while the thread runs.
        unsafe { &*self.gate }
    }

    /// The call reached this hook through Syscall User Dispatch: glibc made it
    /// internally, perhaps holding one of its own locks (a malloc arena's
    /// while it reads /proc/sys/vm/overcommit_memory in `free`, the loader's
    /// while `dlopen` reads a library, a FILE's). Such a call may suspend the
    /// coroutine only to wait for another party (a peer, a child, a timer):
    /// a coroutine suspended for anything else would leave the lock held
    /// while the others of its OS thread, and its scheduler, which allocates,
    /// run into it.
    #[inline]
    pub(crate) fn trapped(&self) -> bool {
        self.trapped
    }

    /// Runs `f` (which parks) with the guard lifted, so other coroutines on this
    /// thread can use hooks while this one waits; the selector stays (ALLOW:
    /// the wait runs the runtime).
    pub(crate) fn release_while<R>(&self, f: impl FnOnce() -> R) -> R {
        self.gate().in_hook.set(false);
        let r = f();
        self.gate().in_hook.set(true);
        r
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        let g = self.gate();
        g.in_hook.set(false);
        g.selector.set(self.selector);
    }
}

/// ALLOW until `end`, then the selector it found: a hook's body.
pub(crate) struct Allow {
    gate: *const ThreadGate,
    saved: u8,
}

impl Allow {
    #[inline(always)]
    pub(crate) fn new() -> Allow {
        gate(|g| {
            let saved = owed(g);
            g.selector.set(ALLOW);
            Allow { gate: g, saved }
        })
    }
}

impl Allow {
    /// Puts back the selector it found. Not a destructor: see `hook_body!`.
    #[inline(always)]
    pub(crate) fn end(self) {
        // SAFETY: this thread's gate, which outlives the hook's frame (a
        // coroutine never changes threads; the thread-local has no destructor).
        unsafe { &*self.gate }.selector.set(self.saved);
    }
}

/// Hook logic runs on this thread.
#[inline(always)]
pub(crate) fn in_hook() -> bool {
    gate(|g| g.in_hook.get())
}

/// Sets ALLOW, returning what `restore` puts back: around a coroutine's
/// suspension, which runs the scheduler and other coroutines.
#[inline(always)]
pub(crate) fn allow() -> u8 {
    gate(|g| {
        let saved = owed(g);
        g.selector.set(ALLOW);
        saved
    })
}

#[inline(always)]
pub(crate) fn restore(saved: u8) {
    gate(|g| g.selector.set(saved));
}

/// A coroutine's body is about to run the program's code: BLOCK if dispatch
/// is on for this thread (the scheduler saves it at every switch out).
#[inline]
pub(crate) fn coroutine_start() {
    gate(|g| g.selector.set(if g.on.get() { BLOCK } else { ALLOW }));
}

/// This thread's gate, for its scheduler to reach without a thread-local
/// access per switch.
#[derive(Clone, Copy)]
pub(crate) struct GateRef(std::ptr::NonNull<ThreadGate>);

/// This thread's gate.
pub(crate) fn gate_ref() -> GateRef {
    gate(|g| GateRef(std::ptr::NonNull::from(g)))
}

impl GateRef {
    /// Switching to a coroutine whose selector is `task`. The scheduler's own
    /// is always ALLOW: it runs on a plain stack, where nothing traps.
    #[inline(always)]
    pub(crate) fn switch_in(self, task: u8) {
        // SAFETY: the scheduler's own thread's gate: a scheduler never
        // changes threads, and the thread-local has no destructor, so it
        // lives as long as the thread.
        unsafe { self.0.as_ref() }.selector.set(task);
    }

    /// Back from a coroutine: ALLOW again; returns the coroutine's selector.
    /// (A BLOCK owed after a call made in place stays owed until the
    /// coroutine's next hook, which is how a green thread parks.)
    #[inline(always)]
    pub(crate) fn switch_out(self) -> u8 {
        // SAFETY: as in `switch_in`.
        unsafe { self.0.as_ref() }.selector.replace(ALLOW)
    }
}

/// Dispatch is on for this thread.
pub(crate) fn on_here() -> bool {
    gate(|g| g.on.get())
}

/// Some thread of the process turned dispatch on: until then a hook's body
/// need not touch the selector (one load of a global instead of a
/// thread-local access).
static ANY_ON: AtomicBool = AtomicBool::new(false);

#[inline(always)]
pub(crate) fn any_on() -> bool {
    ANY_ON.load(Ordering::Relaxed)
}

/// 0: not decided, 1: handler installed, 2: unavailable (said once).
static STATE: AtomicU8 = AtomicU8::new(0);
const INSTALLED: u8 = 1;
const UNAVAILABLE: u8 = 2;

/// Turns dispatch on for the calling thread if the configuration asks for it
/// (`PATCHALL_SYSCALL_DISPATCH`; on by default with green threads). Called
/// when a thread gets its scheduler. Where the kernel refuses, one line says
/// so and calls made behind our hooks keep blocking the thread, as before.
pub(crate) fn enable_for_thread() {
    if !gate::SUPPORTED || !crate::config::config().syscall_dispatch_on() {
        return;
    }
    if STATE.load(Ordering::Acquire) == UNAVAILABLE {
        return;
    }
    if STATE.load(Ordering::Acquire) != INSTALLED && !install_handler() {
        unavailable(libc::ENOSYS);
        return;
    }
    let (start, len) = gate::range();
    let selector = gate(|g| g.selector.as_ptr() as c_long);
    // SAFETY: the selector lives as long as this thread (its thread-local),
    // and dispatch is turned off before the scheduler that asked goes away.
    let r = unsafe {
        sys::raw_syscall!(
            libc::SYS_prctl,
            PR_SET_SYSCALL_USER_DISPATCH,
            PR_SYS_DISPATCH_ON,
            start,
            len,
            selector
        )
    };
    if r != 0 {
        unavailable(sys::errno());
        return;
    }
    gate(|g| g.on.set(true));
    ANY_ON.store(true, Ordering::Relaxed);
}

/// Turns dispatch off for the calling thread (its scheduler is going away;
/// its thread-locals may be freed before the thread's last system calls).
pub(crate) fn disable_for_thread() {
    if gate(|g| g.on.replace(false)) {
        // SAFETY: turning dispatch off touches no memory.
        unsafe {
            sys::raw_syscall!(
                libc::SYS_prctl,
                PR_SET_SYSCALL_USER_DISPATCH,
                PR_SYS_DISPATCH_OFF,
                0,
                0,
                0
            )
        };
    }
}

#[cold]
fn unavailable(errno: c_int) {
    if STATE.swap(UNAVAILABLE, Ordering::AcqRel) != UNAVAILABLE {
        let mut buf = [0u8; 20];
        diag(&[
            b"patchall: syscall user dispatch unavailable (errno ",
            sys::fmt_u64(errno as u64, &mut buf),
            b", needs Linux 5.11+): calls glibc makes internally still block the thread\n",
        ]);
    }
}

/// `rt_sigaction` with our restorer, which lies in the gate: a handler the
/// kernel returns from through it never traps on `rt_sigreturn`, whatever the
/// selector. `act` and `old` in libc's layout; `old`'s restorer is ours.
///
/// # Safety
/// `act` and `old` null or valid, as for `sigaction`.
pub(crate) unsafe fn sigaction_with_restorer(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // SAFETY: a non-null `act` is the caller's valid sigaction.
    let new = unsafe { act.as_ref() }.map(|a| KernelSigaction {
        handler: a.sa_sigaction,
        flags: (a.sa_flags | SA_RESTORER) as u64,
        restorer: gate::restorer(),
        // SAFETY: sigset_t's first 8 bytes are the kernel's set on Linux.
        mask: unsafe { *(&a.sa_mask as *const libc::sigset_t as *const u64) },
    });
    let Ok(prev) = rt_sigaction(sig, new.as_ref()) else {
        return -1;
    };
    // SAFETY: a non-null `old` is the caller's writable sigaction.
    if let Some(old) = unsafe { old.as_mut() } {
        // SAFETY: a zeroed sigaction is valid; filled below.
        *old = unsafe { std::mem::zeroed() };
        old.sa_sigaction = prev.handler;
        old.sa_flags = prev.flags as c_int;
        old.sa_restorer = (prev.restorer != 0).then(|| {
            // SAFETY: the kernel's restorer is a function address.
            unsafe { std::mem::transmute::<usize, extern "C" fn()>(prev.restorer) }
        });
        // SAFETY: as above, the kernel's set is sigset_t's first 8 bytes.
        unsafe { *(&mut old.sa_mask as *mut libc::sigset_t as *mut u64) = prev.mask };
    }
    0
}

fn install_handler() -> bool {
    // SAFETY: a zeroed sigaction is valid; the fields we use are set below.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_sigsys as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_RESTART;
    // SAFETY: a zeroed sigaction is valid to be filled.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `act` and `old` are ours.
    let ok = unsafe { sigaction_with_restorer(libc::SIGSYS, &act, &mut old) } == 0;
    if ok {
        // What the program had installed goes on receiving the SIGSYS that
        // are not ours.
        PROGRAM_SIGSYS.store(old.sa_sigaction, Ordering::Release);
        STATE.store(INSTALLED, Ordering::Release);
    }
    ok
}

/// Our SIGSYS handler is in the kernel: `hooks::signal` keeps it there and
/// records what the program installs in `PROGRAM_SIGSYS`.
pub(crate) fn handler_installed() -> bool {
    STATE.load(Ordering::Acquire) == INSTALLED
}

/// The program's own SIGSYS handler (or SIG_DFL/SIG_IGN), called for a
/// SIGSYS that dispatch did not raise (seccomp, `kill`).
pub(crate) static PROGRAM_SIGSYS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// A trapped call's treatment, given by the layer above (the hooks), which
/// the runtime does not name: the result system call `nr` with arguments
/// `a` would have had, or None for a call to be re-made in place (`in_place`).
/// It must leave errno as it found it: a system call never sets it.
pub(crate) type Emulate = fn(nr: c_long, a: [c_long; 6]) -> Option<Emulated>;

/// What an `Emulate` did.
pub(crate) struct Emulated {
    /// The kernel's way: the value, or -errno.
    pub(crate) result: c_long,
    /// Made through the gate with no hook: the coroutine did not switch and
    /// the signal mask did not change.
    pub(crate) at_once: bool,
}

/// The registered `Emulate`, as an address (null: none yet). An atomic, so
/// that the SIGSYS handler reads it with one load.
static EMULATE: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

/// Sets what trapped calls get. Called by the hooks layer before any
/// coroutine runs (the selector is BLOCK only in coroutine code), again at
/// each spawn: the same function each time, so the store is idempotent.
pub(crate) fn set_emulator(f: Emulate) {
    if EMULATE.load(Ordering::Relaxed) != f as *mut () {
        EMULATE.store(f as *mut (), Ordering::Release);
    }
}

/// The registered `Emulate`, if any.
#[cfg(test)]
pub(crate) fn registered() -> Option<Emulate> {
    let f = EMULATE.load(Ordering::Acquire);
    // SAFETY: as in `emulate`.
    (!f.is_null()).then(|| unsafe { std::mem::transmute::<*mut (), Emulate>(f) })
}

/// The registered treatment of a trapped call; with none registered, the
/// call runs as made: through the gate, or in place where it must.
fn emulate(nr: c_long, a: [c_long; 6]) -> Option<Emulated> {
    let f = EMULATE.load(Ordering::Acquire);
    if f.is_null() {
        return through_gate(nr, a);
    }
    // SAFETY: only `set_emulator` stores here, and only an `Emulate`.
    let f = unsafe { std::mem::transmute::<*mut (), Emulate>(f) };
    f(nr, a)
}

/// Call `nr` made as the program made it, unhooked: through the gate, or
/// (None) in place where the gate cannot make it.
fn through_gate(nr: c_long, a: [c_long; 6]) -> Option<Emulated> {
    if in_place(nr, &a) {
        return None;
    }
    // SAFETY: the program's own call, with its own arguments.
    let result = unsafe { gate::syscall6(nr, a) };
    Some(Emulated {
        result,
        at_once: true,
    })
}

const CLONE_VM: c_long = libc::CLONE_VM as c_long;

/// A call that must be made in place (the program's own `syscall`
/// instruction, with system calls allowed) rather than through the gate,
/// whose stub would return into the wrong frame: one whose child starts on a
/// new stack or shares this one, and `rt_sigreturn`.
pub(crate) fn in_place(nr: c_long, a: &[c_long; 6]) -> bool {
    match nr {
        libc::SYS_rt_sigreturn | libc::SYS_vfork => true,
        libc::SYS_clone => a[0] & CLONE_VM != 0 || a[1] != 0,
        libc::SYS_clone3 => {
            // SAFETY: clone3's first argument is the caller's clone_args,
            // whose first word is the flags and sixth the stack.
            let (flags, stack) = unsafe {
                let args = a[0] as *const u64;
                if args.is_null() {
                    return false;
                }
                (*args, *args.add(5))
            };
            flags & CLONE_VM as u64 != 0 || stack != 0
        }
        _ => false,
    }
}

const REG_RAX: usize = libc::REG_RAX as usize;
const REG_RIP: usize = libc::REG_RIP as usize;
const ARG_REGS: [usize; 6] = [
    libc::REG_RDI as usize,
    libc::REG_RSI as usize,
    libc::REG_RDX as usize,
    libc::REG_R10 as usize,
    libc::REG_R8 as usize,
    libc::REG_R9 as usize,
];

extern "C" fn on_sigsys(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    // The handler is runtime code: nothing it does may trap.
    let saved = allow();
    // SAFETY: the kernel passes a valid siginfo.
    let code = unsafe { (*info).si_code };
    if code != SYS_USER_DISPATCH {
        restore(saved);
        not_ours(sig, info, ctx);
        return;
    }
    // SAFETY: with SA_SIGINFO the kernel passes its ucontext.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let gregs = &mut uc.uc_mcontext.gregs;
    // Rolled back by the kernel: RAX holds the number again.
    let nr = gregs[REG_RAX];
    let args = ARG_REGS.map(|r| gregs[r]);
    // The hook that takes the call learns it was trapped: glibc may be
    // holding one of its own locks around it (`Guard::trapped`).
    gate(|g| g.trapped.set(true));
    let emulated = emulate(nr, args);
    gate(|g| g.trapped.set(false));
    match emulated {
        Some(done) if done.at_once => {
            // No switch, no mask change: `rt_sigreturn` puts back the mask
            // the call was made with, which is still the thread's.
            gregs[REG_RAX] = done.result;
            restore(saved);
            return;
        }
        Some(done) => gregs[REG_RAX] = done.result,
        None => {
            // Re-made in place, as the program made it, with ALLOW: a
            // `clone` whose child starts on a new stack, or `rt_sigreturn`,
            // must run where it was made (the gate's stub would return
            // into the wrong frame). RIP goes back over the 2-byte
            // `syscall`; BLOCK comes back at this coroutine's next hook
            // or suspension.
            gregs[REG_RIP] -= 2;
            gate(|g| g.reblock.set(saved == BLOCK));
            thread_mask_into(uc);
            return;
        }
    }
    thread_mask_into(uc);
    restore(saved);
}

/// Makes `rt_sigreturn` keep the thread's signal mask as it is now (a call
/// emulated here may have changed it, other coroutines may have while this one
/// was parked), never with SIGSYS blocked.
fn thread_mask_into(uc: &mut libc::ucontext_t) {
    let now = super::signals::thread_mask() & !(1 << (libc::SIGSYS - 1));
    // SAFETY: sigset_t's first 8 bytes are the kernel's set.
    unsafe { *(&mut uc.uc_sigmask as *mut libc::sigset_t as *mut u64) = now };
}

/// A SIGSYS dispatch did not raise: the program's handler, or the default
/// action (the process ends, as it would have).
#[cold]
fn not_ours(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let handler = PROGRAM_SIGSYS.load(Ordering::Acquire);
    if handler == libc::SIG_IGN {
        return;
    }
    if handler != libc::SIG_DFL && handler != 0 {
        // SAFETY: the program installed this as its SIGSYS handler; one that
        // takes only the signal ignores the other two arguments (C ABI).
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
        return;
    }
    // SAFETY: a zeroed sigaction with SIG_DFL; then the signal again, which
    // the default action turns into the end the program would have had.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        sigaction_with_restorer(libc::SIGSYS, &dfl, std::ptr::null_mut());
        sys::raw_syscall!(
            libc::SYS_tgkill,
            sys::raw_syscall!(libc::SYS_getpid),
            sys::raw_syscall!(libc::SYS_gettid),
            libc::SIGSYS
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_with_a_new_stack_are_made_in_place() {
        assert!(in_place(libc::SYS_vfork, &[0; 6]));
        assert!(in_place(libc::SYS_clone, &[CLONE_VM, 0, 0, 0, 0, 0]));
        assert!(in_place(
            libc::SYS_clone,
            &[libc::SIGCHLD as c_long, 4096, 0, 0, 0, 0]
        ));
        assert!(!in_place(
            libc::SYS_clone,
            &[libc::SIGCHLD as c_long, 0, 0, 0, 0, 0]
        ));
        assert!(!in_place(libc::SYS_read, &[0; 6]));
    }

    #[test]
    fn unhooked_calls_run_through_the_gate_or_in_place() {
        let pid = through_gate(libc::SYS_getpid, [0; 6]).expect("through the gate");
        assert_eq!(pid.result, c_long::from(std::process::id()));
        assert!(pid.at_once);
        assert!(through_gate(libc::SYS_vfork, [0; 6]).is_none());
    }
}
