//! `main` as a coroutine: glibc's `__libc_start_main` (what `_start` calls) is
//! wrapped so that glibc calls our `green_main`, which runs the program's `main`
//! as the first green thread on the main OS thread's scheduler, drives that
//! scheduler until `main` is done, and hands `main`'s status back to glibc,
//! which calls `exit` with it as usual.
//!
//! Order at startup (measured, glibc 2.36): the dynamic loader runs the
//! constructors of preloaded and needed libraries, `_start` calls
//! `__libc_start_main`, which runs the program's own constructors, then `main`.
//! The wrapper reads `PATCHALL_GREEN_THREADS` itself rather than trust that
//! some constructor did: the program's constructors already see the decision.
//! It acts only when it lives in a preloaded library: linked into a Rust
//! program as an rlib it forwards untouched (green threads are a preload
//! feature).

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize};
use std::time::{Duration, Instant};

use libc::{c_char, c_int, c_void};

use super::{FALLBACK_STACK, GreenThread, default_stack_size, spread};
use crate::config::config;
use crate::hooks::green_threads;
use crate::runtime;
use crate::sys::diag;

type Main = unsafe extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) -> c_int;

/// The program's `main`, for `green_main`.
static USER_MAIN: AtomicUsize = AtomicUsize::new(0);
/// Set when `main` returned (rather than ended with `pthread_exit`).
static RETURNED: AtomicBool = AtomicBool::new(false);
static STATUS: AtomicI32 = AtomicI32::new(0);

hook! {
    /// glibc's program start (glibc 2.34+ signature on x86_64: main, argc, argv,
    /// init, fini, rtld_fini, stack_end; init and fini are unused since 2.34).
    fn __libc_start_main(
        main: Option<Main>,
        argc: c_int,
        argv: *mut *mut c_char,
        init: *mut c_void,
        fini: *mut c_void,
        rtld_fini: *mut c_void,
        stack_end: *mut c_void,
    ) -> c_int as real {
        let mut entry = main;
        if let Some(user) = main.filter(|&m| preloaded(m)) {
            green_threads::set_enabled(config().green_threads);
            if green_threads::enabled() {
                USER_MAIN.store(user as usize, Relaxed);
                entry = Some(green_main);
            }
        }
        // SAFETY: glibc's start with the caller's arguments, `main` perhaps ours.
        unsafe { real(entry, argc, argv, init, fini, rtld_fini, stack_end) }
    }
}

/// True when this wrapper and `main` live in different objects: we are a
/// preloaded library, not code linked into the program.
fn preloaded(main: Main) -> bool {
    let base = |addr: usize| {
        let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
        // SAFETY: dladdr only fills `info` for an address in a loaded object.
        let found = unsafe { libc::dladdr(addr as *const c_void, info.as_mut_ptr()) };
        // SAFETY: filled on success.
        (found != 0).then(|| unsafe { info.assume_init() }.dli_fbase as usize)
    };
    let ours = base(__libc_start_main as *const () as usize);
    ours.is_some() && ours != base(main as usize)
}

/// What glibc calls instead of `main` when green threads are on.
extern "C" fn green_main(argc: c_int, argv: *mut *mut c_char, envp: *mut *mut c_char) -> c_int {
    // SAFETY: stored from the program's `main` pointer just before glibc called us.
    let main = unsafe { std::mem::transmute::<usize, Main>(USER_MAIN.load(Relaxed)) };
    match run_as_coroutine(main, argc, argv as usize, envp as usize) {
        Some(status) => status,
        None => {
            diag(&[b"patchall: cannot run main as a coroutine; green threads are off\n"]);
            green_threads::set_enabled(false);
            // SAFETY: the program's main with glibc's arguments.
            unsafe { main(argc, argv, envp) }
        }
    }
}

/// Runs `main` as a coroutine and drives the scheduler until it is done; the
/// status for `exit`, or None if no coroutine could be made (nothing ran).
fn run_as_coroutine(main: Main, argc: c_int, argv: usize, envp: usize) -> Option<c_int> {
    let stack = main_stack_size();
    let rec = GreenThread::alloc(true, false, stack).ok()?;
    let addr = rec.addr();
    let spawned = runtime::with_scheduler(|s| {
        // `main` keeps the OS thread's own TLS, which the program's
        // constructors set up.
        s.spawn_tls(Some("main".into()), Some(stack), Some(false), move || {
            body(addr, main, argc, argv, envp)
        })
    });
    if !matches!(spawned, Ok(Ok(_))) {
        return None;
    }
    // Exit handlers run on this thread after `main` and may join green threads.
    runtime::keep_scheduler();
    let _ = runtime::with_scheduler(|s| s.run_until(None, &mut || rec.finished()));
    if RETURNED.load(Acquire) {
        return Some(STATUS.load(Relaxed));
    }
    // `main` called pthread_exit: as in glibc, the process lives on while any
    // thread does (green ones on any worker, native ones other than the
    // workers), then exits with status 0. Green threads may still be placed
    // on this thread meanwhile: keep running its scheduler.
    let _ = runtime::with_scheduler(|s| {
        s.run_until(None, &mut || s.live() == 0);
        let ours = 1 + spread::threads() + runtime::dump::threads();
        while s.live() > 0 || spread::live() > 0 || os_threads() > ours {
            s.run_until(
                Some(Instant::now() + Duration::from_millis(10)),
                &mut || false,
            );
        }
    });
    Some(0)
}

fn body(addr: usize, main: Main, argc: c_int, argv: usize, envp: usize) {
    // SAFETY: `main`'s record is never freed.
    let rec = unsafe { &*(addr as *const GreenThread) };
    rec.bind();
    // `main` keeps the mask the process started with, as its own.
    runtime::signals::adopt_mask(runtime::signals::thread_mask());
    // SAFETY: the program's main with glibc's arguments.
    let status = unsafe { main(argc, argv as *mut *mut c_char, envp as *mut *mut c_char) };
    if !runtime::in_coroutine() {
        // In the child of a fork made by main, the scheduler that ran main is
        // the parent's and never runs again: exit here, as returning does.
        // SAFETY: exit has no preconditions.
        unsafe { libc::exit(status) }
    }
    STATUS.store(status, Relaxed);
    RETURNED.store(true, Release);
    // Returning from main leads to exit(), which runs no key destructors.
    let _ = rec.complete(std::ptr::null_mut());
}

/// The main thread's stack: RLIMIT_STACK, as the kernel gives it; address
/// space, committed only as touched. `PATCHALL_STACK_SIZE` sizes the threads
/// `main` starts, not `main`, as glibc's default thread attribute does.
fn main_stack_size() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return default_stack_size();
    }
    usize::try_from(lim.rlim_cur).unwrap_or(FALLBACK_STACK)
}

/// The process's OS threads (`Threads:` in /proc/self/status).
fn os_threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}
