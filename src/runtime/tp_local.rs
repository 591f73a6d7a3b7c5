//! Thread-locals the hot paths reach with the initial-exec TLS model: one
//! load of their offset from the thread pointer, never `__tls_get_addr`.
//!
//! In a shared library (the preload, `libpatchall.so` linked by a C program)
//! rustc compiles a `thread_local!` access in the general-dynamic model, a
//! call to `__tls_get_addr`, which the linker turns into a load only in an
//! executable (choosing the model is nightly-only). That call reads the
//! running block's DTV: about 13 instructions with the call, and with a TLS
//! block per green thread (`tls`) one more cold line per coroutine at every
//! access; the runtime's hot paths make some 14 such accesses a round trip of
//! a green C echo server. A `tp_local!` is storage of our own in the TLS
//! section, reached as initial-exec code reaches it: the offset from the
//! thread pointer is read from the GOT (where ld.so wrote it), or in an
//! executable is an immediate the linker put in its place. Static TLS lies at
//! the same offset in every thread and in every block of ours, so the same
//! offset finds the running block's copy (`with`) or the OS thread's own
//! (`per_os_thread`).
//!
//! The cost: `libpatchall.so` must have its TLS in the static block (the
//! `STATIC_TLS` flag): loaded with the program it always has; loaded later
//! with `dlopen`, glibc places its 256 bytes of TLS in the room it keeps for
//! that (tests/capi.rs loads it so).
//!
//! The storage starts as zero bytes: `tp_local!` is for values whose zero is
//! their initial value (a null pointer, 0, false).
//!
//! ```ignore
//! tp_local! {
//!     static DEPTH: Cell<u32> = zeroed;
//! }
//! DEPTH.with(|d| d.set(d.get() + 1));
//! ```

use std::marker::PhantomData;

use super::tls;

/// What `tp_local!` defines for each thread-local: its type and offset.
pub(crate) trait Slot: 'static {
    type T: 'static;
    /// The value's offset from the thread pointer (negative: TLS lies below
    /// it on x86_64).
    fn offset() -> isize;
}

/// A thread-local without a destructor, reached through `with` (the running
/// block's) or `per_os_thread` (the OS thread's own block's).
pub(crate) struct TpLocal<S: Slot>(PhantomData<S>);

impl<S: Slot> TpLocal<S> {
    #[doc(hidden)]
    pub(crate) const fn new() -> TpLocal<S> {
        // Without a destructor the storage is never torn down, so its address
        // is valid for the thread's whole life: `with` never fails and needs
        // no `try_with`.
        assert!(
            !std::mem::needs_drop::<S::T>(),
            "a tp_local has no destructor"
        );
        TpLocal(PhantomData)
    }

    /// Runs `f` on the value in the block `fs` points at (a coroutine's own,
    /// while one with a TLS block of its own runs). Safe in hooks and signal
    /// handlers: no allocation, no lock, no call.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&S::T) -> R) -> R {
        let p = tls::thread_pointer().wrapping_add_signed(S::offset()) as *const S::T;
        // SAFETY: the running block's copy of the storage `tp_local!` defined
        // for this type, which lives as long as the block and is only shared.
        f(unsafe { &*p })
    }

    /// Runs `f` on the value in this OS thread's own block, whatever block
    /// runs: for what means "this OS thread" (what a signal handler notes
    /// for the scheduler, an address the kernel reads per thread).
    #[inline(always)]
    pub(crate) fn per_os_thread<R>(&self, f: impl FnOnce(&S::T) -> R) -> R {
        let carrier = tls::running_carrier();
        let base = if carrier != 0 {
            carrier
        } else {
            tls::thread_pointer()
        };
        let p = base.wrapping_add_signed(S::offset()) as *const S::T;
        // SAFETY: the OS thread's own copy, live as long as the thread.
        f(unsafe { &*p })
    }
}

/// A thread-local of type `$t` whose initial value is all zero bytes, as a
/// `TpLocal`: a module of the same name holds its storage (a symbol
/// `patchall_tp_<name>` in `.tbss`, so names must be unique in the crate) and
/// its offset.
macro_rules! tp_local {
    ($(#[$meta:meta])* $vis:vis static $name:ident: $t:ty = zeroed;) => {
        #[allow(non_snake_case)]
        $vis mod $name {
            #[allow(unused_imports)]
            use super::*;

            ::std::arch::global_asm!(
                ".pushsection .tbss,\"awT\",@nobits",
                ".p2align {align}",
                concat!(".globl patchall_tp_", stringify!($name)),
                concat!(".hidden patchall_tp_", stringify!($name)),
                concat!(".type patchall_tp_", stringify!($name), ",@tls_object"),
                concat!(".size patchall_tp_", stringify!($name), ", {size}"),
                concat!("patchall_tp_", stringify!($name), ":"),
                ".zero {size}",
                ".popsection",
                align = const ::std::mem::align_of::<$t>().trailing_zeros(),
                size = const ::std::mem::size_of::<$t>(),
            );

            pub(crate) struct Slot;

            impl $crate::runtime::tp_local::Slot for Slot {
                type T = $t;
                #[inline(always)]
                fn offset() -> isize {
                    let offset: isize;
                    // SAFETY: reads the GOT entry ld.so filled with the
                    // storage's offset (an immediate in an executable).
                    unsafe {
                        ::std::arch::asm!(
                            concat!("movq patchall_tp_", stringify!($name), "@GOTTPOFF(%rip), {}"),
                            out(reg) offset,
                            options(att_syntax, pure, readonly, nostack, preserves_flags),
                        )
                    };
                    offset
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
        static TP_LOCAL_TEST: Cell<u32> = zeroed;
    }

    #[inline(never)]
    fn address() -> usize {
        TP_LOCAL_TEST.with(|v| v as *const Cell<u32> as usize)
    }

    #[test]
    fn each_thread_has_its_own_copy_starting_at_zero() {
        TP_LOCAL_TEST.with(|n| n.set(1));
        let here = address();
        let (fresh, there) = std::thread::spawn(|| {
            let fresh = TP_LOCAL_TEST.with(Cell::get);
            TP_LOCAL_TEST.with(|n| n.set(2));
            (fresh, address())
        })
        .join()
        .unwrap();
        assert_eq!(fresh, 0, "a new thread's copy starts at zero");
        assert_ne!(there, here);
        assert_eq!(
            TP_LOCAL_TEST.with(Cell::get),
            1,
            "this thread's copy untouched"
        );
        let below = tls::thread_pointer().wrapping_sub(here);
        assert!(
            below > 0 && below < 1 << 20,
            "in the static block below the thread pointer: {below:#x}"
        );
    }

    #[test]
    fn a_block_of_its_own_shadows_with_but_not_per_os_thread() {
        if !tls::available() {
            return;
        }
        TP_LOCAL_TEST.with(|n| n.set(3));
        let carrier = tls::thread_pointer();
        let block = tls::take().expect("a block");
        tls::bind(block, carrier, (0, 0));
        tls::switch_to(block);
        let seen = (
            TP_LOCAL_TEST.with(Cell::get),
            address() == block.wrapping_add_signed(<TP_LOCAL_TEST::Slot as Slot>::offset()),
            TP_LOCAL_TEST.per_os_thread(Cell::get),
        );
        TP_LOCAL_TEST.with(|n| n.set(4));
        TP_LOCAL_TEST.per_os_thread(|n| n.set(5));
        tls::switch_to(carrier);
        let after = TP_LOCAL_TEST.with(Cell::get);
        tls::give_back(block);
        assert_eq!(
            seen,
            (0, true, 3),
            "the block's fresh copy; the carrier's through per_os_thread"
        );
        assert_eq!(
            after, 5,
            "per_os_thread wrote the carrier's copy, `with` the block's"
        );
    }
}
