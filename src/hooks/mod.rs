//! Interposed libc calls, one file per call family.
//!
//! Every hook is an `extern "C"` function with libc's name. It finds the real
//! function with `dlsym(RTLD_NEXT)`, and:
//! - outside a coroutine (or re-entered from our own code) forwards the call with
//!   the same arguments and returns its result and errno untouched, except where we
//!   set O_NONBLOCK on an fd ourselves: then it waits as the blocking call would;
//! - inside a coroutine makes the call without blocking and parks the coroutine on
//!   the reactor until it can complete.
//!
//! Linked as an rlib, these definitions replace libc's in the final binary; in
//! `libpatchall.so` they interpose through `LD_PRELOAD`.

#[macro_use]
mod real;
pub(crate) mod blocking;
pub(crate) mod cancel;
mod creds;
mod dl;
pub mod dns;
pub mod fd;
pub mod file;
pub mod green_threads;
pub mod io;
mod iov;
pub mod net;
pub mod poll;
pub mod process;
pub mod pthread_sync;
pub mod sched;
pub mod signal;
pub mod sigwait;
pub mod sleep;
pub mod syscall;
pub mod thread;
pub mod transfer;

pub(crate) use real::Guard;
pub use real::Original;

/// The hook guard, when the caller is a coroutine and not our own code: None
/// means "forward to the real call". The hooks that park (sleep, poll, DNS,
/// files, child waits...) start with it.
pub(crate) fn coroutine_guard() -> Option<Guard> {
    if crate::runtime::in_coroutine() {
        Guard::enter()
    } else {
        None
    }
}

/// For `libpatchall.so`'s constructor: what must be in place before the
/// program's first instruction (`PATCHALL_DUMP_SIGNAL`'s handler).
#[doc(hidden)]
pub fn preload_init() {
    register_with_runtime();
    crate::runtime::dump::listen();
}

/// Gives the runtime what it must not name: the hooks' treatment of system
/// calls that Syscall User Dispatch traps (`syscall::emulate`). A trap can
/// only come from coroutine code, so every path that starts coroutines calls
/// this first: `Builder::spawn`, `run_as_coroutine`, green threads being
/// turned on, the preload's constructor. One load when already done.
#[inline]
pub(crate) fn register_with_runtime() {
    crate::runtime::dispatch::set_emulator(syscall::emulate);
}
