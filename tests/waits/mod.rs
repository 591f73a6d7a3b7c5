//! Shared by the sleep and poll hook tests: libc's own definitions past the hooks,
//! errno, a ticker coroutine that proves a wait parked instead of blocking, and a
//! counting SA_RESTART signal handler.
#![allow(dead_code)] // each test crate uses part of it

use std::ffi::CStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use libc::c_int;

/// Signals handled so far by `count`.
pub static HANDLED: AtomicUsize = AtomicUsize::new(0);

/// libc's own definition of `name`, past the hooks linked into this binary.
pub fn real<F: Copy>(name: &CStr) -> F {
    assert_eq!(size_of::<F>(), size_of::<*mut libc::c_void>());
    // SAFETY: dlsym takes a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    assert!(!p.is_null(), "libc defines {name:?}");
    // SAFETY: F is the C signature of `name`, a function pointer of this size.
    unsafe { std::mem::transmute_copy(&p) }
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn clear_errno() {
    // SAFETY: writing this thread's errno.
    unsafe { *libc::__errno_location() = 0 };
}

/// Counts every millisecond, on this thread's scheduler, until `stop`.
pub fn ticker(count: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> patchall::JoinHandle<()> {
    patchall::spawn(move || {
        for _ in 0..20_000 {
            if stop.load(SeqCst) {
                return;
            }
            count.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(1));
        }
    })
    .unwrap()
}

pub extern "C" fn count(_sig: c_int) {
    HANDLED.fetch_add(1, SeqCst);
}

/// A real-time signal whose handler only counts, installed with SA_RESTART: sleeps
/// and the poll family are never restarted all the same (signal(7)).
pub fn restarting_signal() -> c_int {
    let sig = libc::SIGRTMIN();
    // SAFETY: a zeroed sigaction with an empty mask and our handler.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
    }
    sig
}

/// Signals `thread` every 20 ms until `done` reaches `calls` (a signal that falls
/// between two calls interrupts nothing, the next one will), or 10 s pass.
pub fn keep_signalling(thread: libc::pthread_t, sig: c_int, done: &AtomicUsize, calls: usize) {
    for _ in 0..500 {
        if done.load(SeqCst) >= calls {
            return;
        }
        // SAFETY: the target thread lives until `done` reaches `calls`.
        assert_eq!(unsafe { libc::pthread_kill(thread, sig) }, 0);
        patchall::sleep(Duration::from_millis(20));
    }
}
