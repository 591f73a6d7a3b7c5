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

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, sigaction as SigAction, sighandler_t, siginfo_t};

use crate::runtime;

const NSIG: usize = 65;

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
    let faults = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
    ];
    (1..NSIG as c_int).contains(&sig)
        && !faults.contains(&sig)
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
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the user installed this handler with SA_SIGINFO, so it takes
        // (int, siginfo_t *, void *), which the kernel handed us.
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes just the signal.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

hook! {
    /// `sigaction(2)`: installs our trampoline in front of the user's handler.
    fn sigaction(sig: c_int, act: *const SigAction, old: *mut SigAction) -> c_int as real {
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
                // SAFETY: forwarding the caller's request with our handler in it.
                unsafe { real(sig, &a, old) }
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

alias! {
    /// glibc's exported alias of `sigaction`.
    fn __sigaction(sig: c_int, act: *const SigAction, old: *mut SigAction) -> c_int = sigaction
}

/// `signal`-style installation with glibc's semantics, through our `sigaction`.
fn install(sig: c_int, handler: sighandler_t, flags: c_int) -> sighandler_t {
    // SAFETY: a zeroed sigaction is valid; the mask is set up below.
    let mut act: SigAction = unsafe { std::mem::zeroed() };
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
