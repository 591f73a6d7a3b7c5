//! The real libc functions, found by `dlsym(RTLD_NEXT)`: what our own code
//! calls when it must not reach one of our hooks (the hooks' real calls, the
//! offload pool's `pthread_create`, the monitor's `sigaction`).

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A libc function looked up lazily with `dlsym(RTLD_NEXT, name)`.
///
/// Hooks run before any constructor (the dynamic loader and libc call them early),
/// so there is no init step: the first call resolves, an atomic caches.
pub struct Original {
    name: &'static CStr,
    addr: AtomicUsize,
}

impl Original {
    #[doc(hidden)]
    pub const fn new(name: &'static CStr) -> Original {
        Original {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// The real function's address, or None if no later object defines it.
    #[inline]
    pub fn addr(&self) -> Option<usize> {
        match self.addr.load(Ordering::Relaxed) {
            0 => self.resolve(),
            a => Some(a),
        }
    }

    /// The address if already resolved, else 0: for a fast path that leaves
    /// resolving (a call) to its slow path.
    #[inline(always)]
    pub(crate) fn cached(&self) -> usize {
        self.addr.load(Ordering::Relaxed)
    }

    #[cold]
    fn resolve(&self) -> Option<usize> {
        // SAFETY: `name` is NUL-terminated; dlsym has no other preconditions.
        let a = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
        if a == 0 {
            return None;
        }
        self.addr.store(a, Ordering::Relaxed);
        Some(a)
    }
}
