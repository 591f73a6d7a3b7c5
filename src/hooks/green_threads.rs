//! Whether green threads are on: `pthread_create` starts a coroutine, `main`
//! runs as one, and pthread synchronisation parks coroutines. Decided once, at
//! startup, by the preload library's constructor (`PATCHALL_GREEN_THREADS`), so
//! every user of a mutex or a thread handle sees one implementation.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// True when green threads are on.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns green threads on or off. Called by `libpatchall.so`'s constructor before
/// `main`; switching later, with threads or locks in use, mixes implementations.
#[doc(hidden)]
pub fn set_enabled(on: bool) {
    if on {
        // `pthread_create` and `main` will start coroutines.
        super::register_with_runtime();
    }
    ENABLED.store(on, Ordering::Relaxed);
}
