//! Uncontended pthread_mutex lock+unlock: glibc's, ours forwarding (green off),
//! ours (green on) on a plain thread and in a coroutine.
//!
//! `cargo bench --bench green_sync`; prints ns per lock+unlock pair.

use std::hint::black_box;
use std::time::Instant;

use libc::{c_int, pthread_mutex_t};

type LockFn = unsafe extern "C" fn(*mut pthread_mutex_t) -> c_int;

const ITERS: u32 = 5_000_000;

/// glibc's own function, past our hook.
fn glibc(name: &std::ffi::CStr) -> LockFn {
    // SAFETY: a NUL-terminated name; RTLD_NEXT from this binary finds libc's.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    assert!(!p.is_null(), "{name:?} not found");
    // SAFETY: libc's pthread_mutex_lock/unlock have this signature.
    unsafe { std::mem::transmute::<*mut libc::c_void, LockFn>(p) }
}

fn ns_per_pair(lock: LockFn, unlock: LockFn, mut m: pthread_mutex_t) -> f64 {
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ITERS {
                // SAFETY: a valid mutex, locked then unlocked by this thread.
                unsafe {
                    black_box(lock(black_box(&mut m)));
                    black_box(unlock(black_box(&mut m)));
                }
            }
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    best * 1e9 / f64::from(ITERS)
}

fn main() {
    let glibc_lock = glibc(c"pthread_mutex_lock");
    let glibc_unlock = glibc(c"pthread_mutex_unlock");
    let ours_lock: LockFn = libc::pthread_mutex_lock;
    let ours_unlock: LockFn = libc::pthread_mutex_unlock;
    let kinds = [
        ("normal", libc::PTHREAD_MUTEX_INITIALIZER),
        ("recursive", libc::PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP),
        ("errorcheck", libc::PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP),
    ];
    println!("uncontended pthread_mutex lock+unlock, ns per pair (best of 5 x {ITERS})");
    for (kind, init) in kinds {
        patchall::hooks::green_threads::set_enabled(false);
        let g = ns_per_pair(glibc_lock, glibc_unlock, init);
        let fwd = ns_per_pair(ours_lock, ours_unlock, init);
        patchall::hooks::green_threads::set_enabled(true);
        let plain = ns_per_pair(ours_lock, ours_unlock, init);
        let co = patchall::spawn(move || ns_per_pair(ours_lock, ours_unlock, init))
            .unwrap()
            .join()
            .unwrap();
        println!(
            "{kind:>10}: glibc {g:5.1}   green off (forwarded) {fwd:5.1}   green on: thread {plain:5.1}, coroutine {co:5.1}"
        );
    }
}
