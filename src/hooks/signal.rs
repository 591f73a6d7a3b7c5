//! Signal handlers, wrapped so that the scheduler learns a handler ran on its
//! thread: a call parked in a coroutine is then interrupted as the kernel would
//! interrupt a blocked thread — restarted after an SA_RESTART handler, EINTR
//! otherwise (signal(7)).
//!
//! The user's handler and flags are kept in a table; the kernel sees our
//! trampoline with the same flags plus SA_SIGINFO. `sigaction`'s old action always
//! shows the user's own handler and flags. Synchronous fault signals (SIGSEGV,
//! SIGBUS, SIGILL, SIGFPE, SIGTRAP) are left alone: they never interrupt a call,
//! and our stack-overflow report chains to whoever handled them before.
//!
//! Signal masks: in a green thread `pthread_sigmask`, `sigprocmask` and the BSD
//! and System V calls made of it (`sigblock`, `sigsetmask`, `siggetmask`,
//! `sighold`, `sigrelse`) read and write the green thread's own mask (see
//! `runtime::signals`); anywhere else they are libc's.

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, sigaction as SigAction, sighandler_t, siginfo_t, sigset_t};

use crate::runtime::signals::{FAULTS, kernel_set, own_mask, own_mask_seen, set_own_mask};
use crate::runtime::{self, dispatch};
use crate::sys::set_errno;

const NSIG: usize = 65;

/// glibc's own signals (SIGCANCEL, SIGSETXID): its `sigaction` refuses them.
const GLIBC_OWN: [c_int; 2] = [32, 33];

struct UserAction {
    handler: AtomicUsize,
    flags: AtomicI32,
}

static USER: [UserAction; NSIG] = [const {
    UserAction {
        handler: AtomicUsize::new(0),
        flags: AtomicI32::new(0),
    }
}; NSIG];

/// Signals `siginterrupt(sig, 1)` was called for: `signal()` installs them
/// without SA_RESTART, as glibc does.
static SIGINTR: AtomicU64 = AtomicU64::new(0);

fn wrappable(sig: c_int, handler: sighandler_t) -> bool {
    (1..NSIG as c_int).contains(&sig)
        && !FAULTS.contains(&sig)
        && handler != libc::SIG_DFL
        && handler != libc::SIG_IGN
}

fn trampoline_addr() -> sighandler_t {
    trampoline as *const () as sighandler_t
}

extern "C" fn trampoline(sig: c_int, info: *mut siginfo_t, ctx: *mut libc::c_void) {
    let Some(user) = USER.get(sig as usize) else {
        return;
    };
    let handler = user.handler.load(Ordering::Acquire);
    let flags = user.flags.load(Ordering::Acquire);
    runtime::note_signal(sig, flags & libc::SA_RESTART != 0);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    // The program's handler is plain code: its system calls are not caught
    // (it may have blocked SIGSYS), and it returns through our restorer.
    let selector = dispatch::allow();
    runtime::signals::in_handler(|| {
        if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the user installed this handler with SA_SIGINFO, so it
            // takes (int, siginfo_t *, void *), which the kernel handed us.
            let f: extern "C" fn(c_int, *mut siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(handler) };
            f(sig, info, ctx);
        } else {
            // SAFETY: a handler installed without SA_SIGINFO takes just the
            // signal.
            let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
            f(sig);
        }
    });
    dispatch::restore(selector);
}

hook! {
    /// `sigaction(2)`: installs our trampoline in front of the user's handler.
    fn sigaction(sig: c_int, act: *const SigAction, old: *mut SigAction) -> c_int as real {
        if sig == libc::SIGSYS && dispatch::handler_installed() {
            // SAFETY: the caller's valid (or null) pointers.
            return unsafe { program_sigsys(act, old) };
        }
        // Copy first: `act` and `old` may be the same struct.
        // SAFETY: a non-null `act` points at the caller's sigaction.
        let wanted = (!act.is_null()).then(|| unsafe { *act });
        let user = USER.get(sig as usize).filter(|_| sig > 0);
        // What the user had installed, before this call replaces it.
        let before = user.map(|u| (u.handler.load(Ordering::Acquire), u.flags.load(Ordering::Acquire)));
        let r = match (wanted, user) {
            (Some(mut a), Some(user)) if wrappable(sig, a.sa_sigaction) => {
                user.handler.store(a.sa_sigaction, Ordering::Release);
                user.flags.store(a.sa_flags, Ordering::Release);
                a.sa_sigaction = trampoline_addr();
                a.sa_flags |= libc::SA_SIGINFO;
                if crate::config::config().syscall_dispatch_on() && !GLIBC_OWN.contains(&sig) {
                    // SAFETY: our request, the caller's `old`.
                    unsafe { dispatch::sigaction_with_restorer(sig, &a, old) }
                } else {
                    // SAFETY: forwarding the caller's request with our handler in it.
                    unsafe { real(sig, &a, old) }
                }
            }
            (Some(_), Some(user)) => {
                // SAFETY: forwarding the caller's arguments.
                let r = unsafe { real(sig, act, old) };
                if r == 0 {
                    user.handler.store(0, Ordering::Release);
                }
                r
            }
            // SAFETY: forwarding the caller's arguments.
            _ => unsafe { real(sig, act, old) },
        };
        if let (0, false, Some((handler, flags))) = (r, old.is_null(), before) {
            // SAFETY: on success the kernel filled `old`.
            let prev = unsafe { &mut *old };
            let ours = libc::SA_SIGINFO | libc::SA_RESTART;
            if prev.sa_sigaction == trampoline_addr() {
                prev.sa_sigaction = handler;
                prev.sa_flags = flags | (prev.sa_flags & !ours);
            } else if handler != 0 && prev.sa_sigaction == libc::SIG_DFL && prev.sa_flags & libc::SA_RESETHAND != 0 {
                // A one-shot handler of ours was reset by its delivery: the kernel
                // kept the flags we installed, SA_SIGINFO included.
                prev.sa_flags = flags | (prev.sa_flags & !ours);
            }
        }
        r
    }
}

/// `sigaction(SIGSYS)` while our dispatch handler holds SIGSYS: the
/// program's handler is kept aside and receives the SIGSYS that are not
/// dispatch's; the program sees its own handler.
///
/// # Safety
/// `act` and `old` null or valid, as for `sigaction`.
unsafe fn program_sigsys(act: *const SigAction, old: *mut SigAction) -> c_int {
    let program = &dispatch::PROGRAM_SIGSYS;
    // SAFETY: a non-null `act` points at the caller's sigaction.
    let wanted = unsafe { act.as_ref() }.map(|a| a.sa_sigaction);
    let before = match wanted {
        Some(h) => program.swap(h, Ordering::AcqRel),
        None => program.load(Ordering::Acquire),
    };
    // SAFETY: a non-null `old` is the caller's writable sigaction.
    if let Some(old) = unsafe { old.as_mut() } {
        // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask).
        *old = unsafe { std::mem::zeroed() };
        old.sa_sigaction = before;
        if before != libc::SIG_DFL && before != libc::SIG_IGN {
            old.sa_flags = libc::SA_SIGINFO;
        }
    }
    0
}

alias! {
    /// glibc's exported alias of `sigaction`.
    fn __sigaction(sig: c_int, act: *const SigAction, old: *mut SigAction) -> c_int = sigaction
}

/// `signal`-style installation with glibc's semantics, through our `sigaction`.
fn install(sig: c_int, handler: sighandler_t, flags: c_int) -> sighandler_t {
    // SAFETY: a zeroed sigaction is valid; the mask is set up below.
    let mut act: SigAction = unsafe { std::mem::zeroed() };
    // SAFETY: as `act`; `sigaction` fills it.
    let mut old: SigAction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    // SAFETY: sigemptyset/sigaddset initialise the mask we own.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        if flags & libc::SA_NODEFER == 0 {
            libc::sigaddset(&mut act.sa_mask, sig);
        }
    }
    // SAFETY: both pointers name our locals.
    if unsafe { sigaction(sig, &act, &mut old) } < 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// `signal(2)`: glibc's BSD semantics (SA_RESTART unless `siginterrupt` asked
/// otherwise), which glibc implements with an internal call our `sigaction` would
/// never see.
///
/// # Safety
/// As the C function: `handler` is SIG_DFL, SIG_IGN or a valid handler.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(sig: c_int, handler: sighandler_t) -> sighandler_t {
    let interrupting = (1..64).contains(&sig) && SIGINTR.load(Ordering::Acquire) & (1 << sig) != 0;
    install(
        sig,
        handler,
        if interrupting { 0 } else { libc::SA_RESTART },
    )
}

alias! {
    /// BSD's name for `signal`.
    fn bsd_signal(sig: c_int, handler: sighandler_t) -> sighandler_t = signal
}

/// `sysv_signal(3)`: one-shot, not deferred, not restarted.
///
/// # Safety
/// As the C function: `handler` is SIG_DFL, SIG_IGN or a valid handler.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysv_signal(sig: c_int, handler: sighandler_t) -> sighandler_t {
    install(sig, handler, libc::SA_RESETHAND | libc::SA_NODEFER)
}

alias! {
    /// glibc's exported alias of `sysv_signal`.
    fn __sysv_signal(sig: c_int, handler: sighandler_t) -> sighandler_t = sysv_signal
}

hook! {
    /// `siginterrupt(3)`: glibc flips SA_RESTART on the installed action with an
    /// internal call; keep our copy of the user's flags in step.
    fn siginterrupt(sig: c_int, flag: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { real(sig, flag) };
        if r == 0 {
            // glibc remembers the choice for later `signal()` calls.
            if (1..64).contains(&sig) {
                if flag != 0 {
                    SIGINTR.fetch_or(1 << sig, Ordering::AcqRel);
                } else {
                    SIGINTR.fetch_and(!(1 << sig), Ordering::AcqRel);
                }
            }
            if let Some(user) = USER.get(sig as usize) {
                if flag != 0 {
                    user.flags.fetch_and(!libc::SA_RESTART, Ordering::AcqRel);
                } else {
                    user.flags.fetch_or(libc::SA_RESTART, Ordering::AcqRel);
                }
            }
        }
        r
    }
}

/// `pthread_sigmask` on the running green thread's own mask: Some(0) or
/// Some(EINVAL) (a bad `how` with a set, as the kernel checks it), None
/// outside a green thread. Writes the kernel's part of `old` only, as glibc's.
/// A change made in a handler is to the green thread's own mask and outlasts
/// the handler (the kernel would restore the mask when the handler returns).
fn own_sigmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> Option<c_int> {
    let own = own_mask()?;
    let new = if set.is_null() {
        None
    } else {
        // SAFETY: non-null, readable as for libc's; read before `old` is
        // written (they may be the same set).
        let set = unsafe { kernel_set(set) };
        Some(match how {
            libc::SIG_BLOCK => own | set,
            libc::SIG_UNBLOCK => own & !set,
            libc::SIG_SETMASK => set,
            _ => return Some(libc::EINVAL),
        })
    };
    if !old.is_null() {
        // SAFETY: the caller's writable sigset_t, which starts with the
        // kernel's 64-bit set.
        unsafe {
            old.cast::<u64>()
                .write_unaligned(own_mask_seen().unwrap_or(own))
        };
    }
    if let Some(new) = new {
        set_own_mask(new);
    }
    Some(0)
}

hook! {
    /// `pthread_sigmask(3)`: a green thread's own mask.
    fn pthread_sigmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int as real {
        match own_sigmask(how, set, old) {
            Some(r) => r,
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(how, set, old) },
        }
    }
}

hook! {
    /// `sigprocmask(2)`: as `pthread_sigmask` (glibc's is the same call),
    /// failing with -1 and errno.
    fn sigprocmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int as real {
        match own_sigmask(how, set, old) {
            Some(0) => 0,
            Some(e) => {
                set_errno(e);
                -1
            }
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(how, set, old) },
        }
    }
}

/// BSD masks (the first 32 signals) through our `sigprocmask`, as glibc
/// makes them with its internal one: the previous mask's first 32 signals.
fn bsd_mask(how: c_int, mask: c_int) -> c_int {
    // SAFETY: sigset_t is plain data; zeroed is the empty set.
    let mut set: sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as `set`.
    let mut old: sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a sigset_t starts with the kernel's 64-bit set.
    unsafe { (&raw mut set).cast::<u64>().write(u64::from(mask as u32)) };
    // SAFETY: both sets are ours.
    if unsafe { sigprocmask(how, &set, &mut old) } < 0 {
        return -1;
    }
    // SAFETY: as above.
    (unsafe { kernel_set(&old) }) as u32 as c_int
}

/// `sigblock(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn sigblock(mask: c_int) -> c_int {
    bsd_mask(libc::SIG_BLOCK, mask)
}

/// `sigsetmask(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn sigsetmask(mask: c_int) -> c_int {
    bsd_mask(libc::SIG_SETMASK, mask)
}

/// `siggetmask(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn siggetmask() -> c_int {
    bsd_mask(libc::SIG_BLOCK, 0)
}

/// System V's one-signal changes: -1/EINVAL for a signal `sigaddset` refuses.
fn one_signal(how: c_int, sig: c_int) -> c_int {
    // SAFETY: sigset_t is plain data; zeroed is the empty set.
    let mut set: sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: our set; sigaddset validates `sig` (errno EINVAL).
    if unsafe { libc::sigaddset(&mut set, sig) } < 0 {
        return -1;
    }
    // SAFETY: our set, no old one.
    unsafe { sigprocmask(how, &set, std::ptr::null_mut()) }
}

/// `sighold(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn sighold(sig: c_int) -> c_int {
    one_signal(libc::SIG_BLOCK, sig)
}

/// `sigrelse(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn sigrelse(sig: c_int) -> c_int {
    one_signal(libc::SIG_UNBLOCK, sig)
}
