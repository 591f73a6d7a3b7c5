//! C11 `<threads.h>` mutexes and condition variables.
//!
//! glibc's `mtx_*` and `cnd_*` call its pthread functions directly, past any
//! interposer: they are defined here as glibc defines them, on our pthread
//! hooks (which forward when green threads are off). `mtx_t` and `cnd_t` are
//! `pthread_mutex_t` and `pthread_cond_t` underneath; `mtx_init`, `mtx_destroy`
//! and `cnd_init` only write glibc's layout and stay glibc's.

use libc::{EBUSY, ETIMEDOUT, c_int, pthread_cond_t, pthread_mutex_t, timespec};

use super::cond::{
    pthread_cond_broadcast, pthread_cond_destroy, pthread_cond_signal, pthread_cond_timedwait,
    pthread_cond_wait,
};
use super::mutex::{
    pthread_mutex_lock, pthread_mutex_timedlock, pthread_mutex_trylock, pthread_mutex_unlock,
};

/// glibc's `thrd_err_map`.
fn thrd(r: c_int) -> c_int {
    const THRD_SUCCESS: c_int = 0;
    const THRD_BUSY: c_int = 1;
    const THRD_ERROR: c_int = 2;
    const THRD_NOMEM: c_int = 3;
    const THRD_TIMEDOUT: c_int = 4;
    match r {
        0 => THRD_SUCCESS,
        libc::ENOMEM => THRD_NOMEM,
        ETIMEDOUT => THRD_TIMEDOUT,
        EBUSY => THRD_BUSY,
        _ => THRD_ERROR,
    }
}

macro_rules! c11 {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*) = $pthread:ident) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// The C function's contract: valid, initialised objects.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            // SAFETY: same arguments and contract as the pthread function.
            thrd(unsafe { $pthread($($arg),*) })
        }
    };
}

c11! {
    /// `mtx_lock(3)`.
    fn mtx_lock(m: *mut pthread_mutex_t) = pthread_mutex_lock
}

c11! {
    /// `mtx_trylock(3)`.
    fn mtx_trylock(m: *mut pthread_mutex_t) = pthread_mutex_trylock
}

c11! {
    /// `mtx_timedlock(3)`: `abstime` on TIME_UTC (CLOCK_REALTIME).
    fn mtx_timedlock(m: *mut pthread_mutex_t, abstime: *const timespec) = pthread_mutex_timedlock
}

c11! {
    /// `mtx_unlock(3)`.
    fn mtx_unlock(m: *mut pthread_mutex_t) = pthread_mutex_unlock
}

c11! {
    /// `cnd_wait(3)`.
    fn cnd_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) = pthread_cond_wait
}

c11! {
    /// `cnd_timedwait(3)`.
    fn cnd_timedwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, abstime: *const timespec) = pthread_cond_timedwait
}

c11! {
    /// `cnd_signal(3)`.
    fn cnd_signal(c: *mut pthread_cond_t) = pthread_cond_signal
}

c11! {
    /// `cnd_broadcast(3)`.
    fn cnd_broadcast(c: *mut pthread_cond_t) = pthread_cond_broadcast
}

/// `cnd_destroy(3)`: as `pthread_cond_destroy`, waits for woken waiters to leave.
///
/// # Safety
/// A valid, initialised condvar nobody waits on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cnd_destroy(c: *mut pthread_cond_t) {
    // SAFETY: same contract.
    unsafe { pthread_cond_destroy(c) };
}
