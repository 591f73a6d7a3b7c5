//! `pthread_spin_lock` for coroutines.
//!
//! The lock word stays glibc's (its layout differs between architectures: on
//! x86_64 1 is free), so native threads and other processes share it, and
//! `pthread_spin_init`, `_trylock`, `_unlock` and `_destroy` stay glibc's. Only
//! a contended `pthread_spin_lock` in a coroutine differs: its holder may be a
//! coroutine of the same OS thread, which runs only if the spinner yields.

use libc::c_int;

use crate::runtime;

/// Tries a contended lock this many times between yields: a holder on
/// another CPU finishing a short section is still caught without a switch.
const SPINS_BEFORE_YIELD: u32 = 100;

hook! {
    /// `pthread_spin_lock(3)`: in a coroutine, a contended lock spins briefly
    /// (glibc's trylock), then lets the other coroutines of its thread run
    /// between tries.
    fn pthread_spin_lock(lock: *mut libc::pthread_spinlock_t) -> c_int as real {
        // SAFETY: the caller's spin lock (glibc's trylock, which we do not hook).
        let take = || unsafe { libc::pthread_spin_trylock(lock) } == 0;
        if take() {
            return 0;
        }
        let Some(guard) = crate::hooks::coroutine_guard() else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(lock) };
        };
        loop {
            for _ in 0..SPINS_BEFORE_YIELD {
                if take() {
                    return 0;
                }
                std::hint::spin_loop();
            }
            guard.release_while(runtime::yield_now);
        }
    }
}
