//! Thread-locals the hot paths reach at a fixed distance below the thread
//! pointer, without `__tls_get_addr`.
//!
//! In a shared library (the preload, `libpatchall.so` linked by a C program)
//! rustc compiles a thread-local access as a call to `__tls_get_addr`, which
//! the linker turns into one load only in an executable. That call reads the
//! running block's DTV: about 11 instructions, and with a TLS block per green
//! thread (`tls`) one more cold line per coroutine at every access; the
//! runtime's hot paths make some 14 such accesses a round trip of a green C
//! echo server. A library loaded with the program has its TLS in the static
//! block, which lies at the same distance below the thread pointer in every
//! thread and in every block of ours: once learnt, an access is `fs:0` minus
//! that distance. Loaded later by `dlopen` its TLS is dynamic, and the key
//! is used as it is.
//!
//! ```ignore
//! tp_local! {
//!     static DEPTH: Cell<u32> = const { Cell::new(0) };
//! }
//! DEPTH.with(|d| d.set(d.get() + 1));
//! ```

use std::marker::PhantomData;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::thread::LocalKey;

use super::tls;

/// `below` before the distance is learnt.
const UNKNOWN: isize = 0;
/// `below` for a thread-local outside static TLS: always the key.
const DYNAMIC: isize = -1;

/// What `tp_local!` defines for each thread-local: its key, and where the
/// distance below the thread pointer is kept once learnt (0 unknown, -1
/// dynamic). Functions, not fields, so that the hot path reads the distance
/// from a static of its own (RIP-relative), not through a pointer to a
/// static (which a shared library reaches through its GOT).
pub(crate) trait Slot: 'static {
    type T: 'static;
    fn key() -> &'static LocalKey<Self::T>;
    fn below() -> &'static AtomicIsize;
}

/// A `const` thread-local without a destructor, reached through `with` (the
/// running block's) or `per_os_thread` (the OS thread's own block's).
pub(crate) struct TpLocal<S: Slot>(PhantomData<S>);

impl<S: Slot> TpLocal<S> {
    #[doc(hidden)]
    pub(crate) const fn new() -> TpLocal<S> {
        // Without a destructor a const thread-local is never torn down, so
        // its address is valid for the thread's whole life: `with` never
        // fails and needs no `try_with`.
        assert!(
            !std::mem::needs_drop::<S::T>(),
            "a tp_local has no destructor"
        );
        TpLocal(PhantomData)
    }

    /// Runs `f` on the value in the block `fs` points at (a coroutine's own,
    /// while one with a TLS block of its own runs). Safe in hooks and signal
    /// handlers: no allocation, no lock.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&S::T) -> R) -> R {
        let p = match S::below().load(Ordering::Relaxed) {
            below if below > 0 => tls::thread_pointer().wrapping_sub(below as usize) as *const S::T,
            _ => learn::<S>(),
        };
        // SAFETY: the running block's copy of a live thread-local, which has no
        // destructor (`new`); it is only shared (`LocalKey::with`'s terms).
        f(unsafe { &*p })
    }

    /// Runs `f` on the value in this OS thread's own block, whatever block
    /// runs (`tls::per_os_thread`).
    #[inline(always)]
    pub(crate) fn per_os_thread<R>(&self, f: impl FnOnce(&S::T) -> R) -> R {
        let below = S::below().load(Ordering::Relaxed);
        if below > 0 {
            let carrier = tls::running_carrier();
            let base = if carrier != 0 {
                carrier
            } else {
                tls::thread_pointer()
            };
            // SAFETY: the OS thread's own copy, live as long as the thread.
            return f(unsafe { &*(base.wrapping_sub(below as usize) as *const S::T) });
        }
        learn::<S>();
        match tls::per_os_thread(S::key(), f) {
            Ok(r) => r,
            Err(_) => unreachable!("a const thread-local without destructor is never gone"),
        }
    }
}

/// The running block's address through the key; learns the distance once
/// the static TLS size is known (`tls::static_size`).
#[cold]
#[inline(never)]
fn learn<S: Slot>() -> *const S::T {
    let p = S::key().with(|v| v as *const S::T);
    if S::below().load(Ordering::Relaxed) == UNKNOWN {
        let size = tls::static_size();
        if size != 0 {
            let below = tls::thread_pointer().wrapping_sub(p as usize);
            let learnt = if below != 0 && below <= size {
                below as isize
            } else {
                DYNAMIC
            };
            S::below().store(learnt, Ordering::Relaxed);
        }
    }
    p
}

/// `thread_local!` for a `const`-initialised value without a destructor, as a
/// `TpLocal`: a module of the same name holds its key and distance.
macro_rules! tp_local {
    ($(#[$meta:meta])* $vis:vis static $name:ident: $t:ty = const $init:block;) => {
        #[allow(non_snake_case)]
        $vis mod $name {
            #[allow(unused_imports)]
            use super::*;

            pub(crate) struct Slot;

            impl $crate::runtime::tp_local::Slot for Slot {
                type T = $t;
                #[inline(always)]
                fn key() -> &'static ::std::thread::LocalKey<$t> {
                    ::std::thread_local! {
                        static KEY: $t = const $init;
                    }
                    &KEY
                }
                #[inline(always)]
                fn below() -> &'static ::std::sync::atomic::AtomicIsize {
                    static BELOW: ::std::sync::atomic::AtomicIsize = ::std::sync::atomic::AtomicIsize::new(0);
                    &BELOW
                }
            }
        }
        $(#[$meta])*
        $vis static $name: $crate::runtime::tp_local::TpLocal<$name::Slot> =
            $crate::runtime::tp_local::TpLocal::new();
    };
}
pub(crate) use tp_local;

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    tp_local! {
        static N: Cell<u32> = const { Cell::new(7) };
    }

    /// The address the key gives in the running block, from a call of its
    /// own (the compiler takes a thread-local's address as fixed within a
    /// function, and the tests below switch blocks).
    #[inline(never)]
    fn through_key() -> *const Cell<u32> {
        <N::Slot as Slot>::key().with(|v| v as *const Cell<u32>)
    }

    #[inline(never)]
    fn through_tp() -> *const Cell<u32> {
        N.with(|v| v as *const Cell<u32>)
    }

    #[test]
    fn learns_its_place_and_finds_each_threads_own_copy() {
        tls::learn_static_size();
        N.with(|n| n.set(1));
        // In a test binary the crate's TLS is the executable's: static.
        let below = <N::Slot as Slot>::below().load(Ordering::Relaxed);
        assert!(below != UNKNOWN && below != DYNAMIC, "learnt: {below:#x}");
        assert_eq!(through_tp(), through_key());
        let other = std::thread::spawn(|| {
            let fresh = N.with(Cell::get);
            N.with(|n| n.set(2));
            (fresh, through_tp() == through_key(), through_tp() as usize)
        })
        .join()
        .unwrap();
        assert_eq!(
            (other.0, other.1),
            (7, true),
            "a new thread's own copy, where the key has it"
        );
        assert_ne!(other.2, through_tp() as usize);
        assert_eq!(N.with(Cell::get), 1, "this thread's copy untouched");
    }

    #[test]
    fn a_block_of_its_own_shadows_with_but_not_per_os_thread() {
        if !tls::available() {
            return;
        }
        tls::learn_static_size();
        N.with(|n| n.set(3));
        let carrier = tls::thread_pointer();
        let block = tls::take().expect("a block");
        tls::bind(block, carrier, (0, 0));
        tls::switch_to(block);
        let seen = (
            N.with(Cell::get),
            through_tp() == through_key(),
            N.per_os_thread(Cell::get),
        );
        N.with(|n| n.set(4));
        N.per_os_thread(|n| n.set(5));
        tls::switch_to(carrier);
        let after = N.with(Cell::get);
        tls::give_back(block);
        assert_eq!(
            seen,
            (7, true, 3),
            "the block's fresh copy; the carrier's through per_os_thread"
        );
        assert_eq!(
            after, 5,
            "per_os_thread wrote the carrier's copy, `with` the block's"
        );
    }
}
