//! Finding the real libc functions, and the per-thread re-entrancy guard.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::runtime::dispatch;

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

/// Marks this thread as running hook logic; a hooked call made meanwhile (by our
/// own code, or a signal handler interrupting us) goes straight to libc. While
/// it is held, system calls are allowed under Syscall User Dispatch (the hook's
/// real call must not trap); dropping it puts back the selector it found.
pub(crate) struct Guard {
    selector: u8,
    trapped: bool,
}

impl Guard {
    /// None if this thread is already inside a hook, or its thread-locals are gone.
    #[inline]
    pub(crate) fn enter() -> Option<Guard> {
        dispatch::hook_enter().map(|(selector, trapped)| Guard { selector, trapped })
    }

    /// The call reached this hook through Syscall User Dispatch: glibc made it
    /// internally, perhaps holding one of its own locks (a malloc arena's
    /// while it reads /proc/sys/vm/overcommit_memory in `free`, the loader's
    /// while `dlopen` reads a library, a FILE's). Such a call may suspend the
    /// coroutine only to wait for another party (a peer, a child, a timer):
    /// a coroutine suspended for anything else would leave the lock held
    /// while the others of its OS thread, and its scheduler, which allocates,
    /// run into it.
    #[inline]
    pub(crate) fn trapped(&self) -> bool {
        self.trapped
    }

    /// Runs `f` (which parks) with the guard lifted, so other coroutines on this
    /// thread can use hooks while this one waits.
    pub(crate) fn release_while<R>(&self, f: impl FnOnce() -> R) -> R {
        dispatch::set_in_hook(false);
        let r = f();
        dispatch::set_in_hook(true);
        r
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        dispatch::hook_leave(self.selector);
    }
}

/// The real libc function `$name` as a pointer of the given C signature, or
/// None if no later object defines it. For our own calls to a function we also
/// hook: a plain call would reach our hook.
macro_rules! original {
    ($abi:literal fn $name:ident($($ty:ty),* $(,)?) -> $ret:ty) => {{
        static ORIGINAL: $crate::hooks::Original = $crate::hooks::Original::new(
            // SAFETY: the literal ends in exactly one NUL.
            unsafe { ::std::ffi::CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes()) }
        );
        ORIGINAL.addr().map(|addr| {
            // SAFETY: dlsym found libc's definition of this very symbol, whose C
            // signature is the one named here.
            unsafe { ::std::mem::transmute::<usize, unsafe extern $abi fn($($ty),*) -> $ret>(addr) }
        })
    }};
}

/// Defines a hook: `#[no_mangle] extern "C"` with libc's name, the real function
/// bound to `$real` inside the body. When the real function cannot be found the
/// hook fails with ENOSYS rather than crash.
///
/// `unwind fn` defines it `extern "C-unwind"`: for cancellation points that
/// native threads reach, where glibc's `pthread_exit`/`pthread_cancel` unwind
/// through the hook's frame (a Rust `extern "C"` frame may abort the process
/// there). Such a hook keeps no value that needs dropping across the real call.
///
/// Variadic libc functions (`fcntl`, `ioctl`, `open`) are defined with fixed arity:
/// on x86_64 (System V) and aarch64 (AAPCS64, Linux) variadic arguments travel in
/// the same registers/stack slots as named ones, and our definition never uses
/// `va_arg`, so reading the optional argument as one more named parameter is
/// ABI-correct; callers that pass none leave a harmless garbage value.
macro_rules! hook {
    (@define $abi:tt $(#[$meta:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty as $real:ident $body:block) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// The C function's contract: pointers valid for the sizes given, fds the
        /// caller owns.
        #[unsafe(no_mangle)]
        pub unsafe extern $abi fn $name($($arg: $ty),*) -> $ret {
            let Some($real) = original!($abi fn $name($($ty),*) -> $ret) else {
                $crate::sys::set_errno(libc::ENOSYS);
                return (-1_i64) as $ret;
            };
            hook_body!($abi, $body)
        }
    };
    // The data calls. Until the process engages the hooks (`runtime::engaged`),
    // a call loads two globals and jumps to libc with the caller's arguments
    // still in place. No thread-local is read there: rustc compiles that as a
    // call (`__tls_get_addr`, which the linker turns into a load only in an
    // executable), so the frame would save and restore every argument. Once
    // engaged, `checked` makes the pass-through test (`blocking::passthrough`)
    // in a frame of its own, and only the calls that need us reach `slow`, the
    // hook proper.
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty as $real:ident passthrough($fd:ident) $body:block) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// The C function's contract: pointers valid for the sizes given, fds the
        /// caller owns.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            type Real = unsafe extern "C" fn($($ty),*) -> $ret;
            static ORIGINAL: $crate::hooks::Original = $crate::hooks::Original::new(
                // SAFETY: the literal ends in exactly one NUL.
                unsafe { ::std::ffi::CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes()) }
            );
            // Tested first: an engaged process spends 3 instructions here, not 6.
            if !$crate::runtime::engaged() {
                let addr = ORIGINAL.cached();
                if addr != 0 {
                    // SAFETY: dlsym found libc's definition of this very symbol,
                    // whose C signature is the one declared here; the caller's
                    // arguments.
                    return unsafe { ::std::mem::transmute::<usize, Real>(addr)($($arg),*) };
                }
            }
            // `extern "C"` (it cannot unwind) lets the hook jump to it.
            #[inline(never)]
            extern "C" fn checked($($arg: $ty),*) -> $ret {
                // The address is read after the test, so that it is not one more
                // value to keep across the test's thread-local read.
                let real = || {
                    // SAFETY: as above.
                    ORIGINAL.addr().map(|addr| unsafe { ::std::mem::transmute::<usize, Real>(addr) })
                };
                let unresolved = || {
                    $crate::sys::set_errno(libc::ENOSYS);
                    (-1_i64) as $ret
                };
                if $crate::hooks::blocking::passthrough($fd) {
                    // SAFETY: forwarding the caller's arguments.
                    return real().map_or_else(unresolved, |$real| unsafe { $real($($arg),*) });
                }
                real().map_or_else(unresolved, |$real| slow($($arg,)* $real))
            }
            #[inline(never)]
            fn slow($($arg: $ty,)* $real: Real) -> $ret {
                let allow = $crate::runtime::dispatch::any_on().then($crate::runtime::dispatch::Allow::new);
                #[allow(clippy::redundant_closure_call)]
                let r = (|| $body)();
                if let Some(allow) = allow {
                    allow.end();
                }
                r
            }
            checked($($arg),*)
        }
    };
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty as $real:ident $body:block) => {
        hook! { @define "C" $(#[$meta])* $name($($arg: $ty),*) -> $ret as $real $body }
    };
    ($(#[$meta:meta])* unwind fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty as $real:ident $body:block) => {
        hook! { @define "C-unwind" $(#[$meta])* $name($($arg: $ty),*) -> $ret as $real $body }
    };
}

/// A hook's body, with its system calls (its real call above all) allowed
/// under Syscall User Dispatch: a hook is where a coroutine's call gets our
/// treatment, so it must not trap a second time. No value with a destructor
/// lives in the frame: glibc's forced unwinding (`pthread_exit`, cancellation
/// inside the real call) may cross it, and a landing pad in an `extern "C"`
/// frame would abort; a thread being unwound is no coroutine, so skipping
/// `end` there leaves ALLOW as it was. Until a thread turns dispatch on, the
/// selector is not touched at all. `unwind` hooks are left as they are:
/// those that wait take a `Guard`, which allows too.
macro_rules! hook_body {
    ("C", $body:block) => {{
        let allow = $crate::runtime::dispatch::any_on().then($crate::runtime::dispatch::Allow::new);
        #[allow(clippy::redundant_closure_call)]
        let r = (|| $body)();
        if let Some(allow) = allow {
            allow.end();
        }
        r
    }};
    ("C-unwind", $body:block) => {
        $body
    };
}

/// Defines `$alias` as a second entry point with the same behaviour as `$hook`.
macro_rules! alias {
    ($(#[$meta:meta])* fn $alias:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $hook:path) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// As the function it aliases.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $alias($($arg: $ty),*) -> $ret {
            // SAFETY: same signature and contract as the hook it forwards to.
            unsafe { $hook($($arg),*) }
        }
    };
}
