//! The `hook!` machinery: the real function (`sys::Original`) bound in each
//! hook's body, under the re-entrancy guard (`runtime::Guard`).

// The paths the hooks have always used.
pub(crate) use crate::runtime::Guard;
pub use crate::sys::Original;

/// The real libc function `$name` as a pointer of the given C signature, or
/// None if no later object defines it. For our own calls to a function we also
/// hook: a plain call would reach our hook.
macro_rules! original {
    ($abi:literal fn $name:ident($($ty:ty),* $(,)?) -> $ret:ty) => {{
        static ORIGINAL: $crate::sys::Original = $crate::sys::Original::new(
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
    // still in place. No thread-local is read there: even the hot ones
    // (`tp_local`) take registers, so the frame would save and restore every
    // argument. Once engaged, `checked` makes the pass-through test
    // (`blocking::passthrough`) in a frame of its own, and only the calls that
    // need us reach `slow`, the hook proper.
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty as $real:ident passthrough($fd:ident) $body:block) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// The C function's contract: pointers valid for the sizes given, fds the
        /// caller owns.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            type Real = unsafe extern "C" fn($($ty),*) -> $ret;
            static ORIGINAL: $crate::sys::Original = $crate::sys::Original::new(
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
