//! The green thread record, and how a green thread ends: return,
//! `pthread_exit`, or cancellation (deferred: `pthread_cancel` marks it and
//! wakes it if it is parked; it ends at the entry of the next hooked
//! cancellation point, in its wait, at `pthread_join`, or at
//! `pthread_testcancel`). Ending runs its C `pthread_cleanup_push` handlers,
//! resets a `pthread_once` it was inside, runs its key destructors, then wakes
//! its joiner.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, fence};
use std::sync::{Arc, Mutex, OnceLock};

use libc::{c_char, c_int, c_void, pthread_t, size_t};

use super::{CANCELED, NAME_LEN, current, keys, no_panic, once, os_self, record};
use crate::hooks::cancel::Cancel;
use crate::runtime::control::{self, TaskHandle, TaskHome};
use crate::runtime::parking;
use crate::sys::futex;

pub(super) const FINISHED: u32 = 1;
pub(super) const DETACHED: u32 = 2;
pub(super) const JOINING: u32 = 4;

// glibc's <pthread.h> values (the libc crate lacks them).
const PTHREAD_CANCEL_ENABLE: c_int = 0;
const PTHREAD_CANCEL_DISABLE: c_int = 1;
const PTHREAD_CANCEL_DEFERRED: c_int = 0;
const PTHREAD_CANCEL_ASYNCHRONOUS: c_int = 1;

unsafe extern "C" {
    fn longjmp(env: *mut c_void, val: c_int) -> !;
}

/// glibc's `__pthread_unwind_buf_t`, which C's `pthread_cleanup_push` keeps on
/// the stack: a `sigsetjmp` buffer, then (in glibc's private part) the link to
/// the next outer handler.
#[repr(C)]
pub(super) struct UnwindBuf {
    jmp_buf: [libc::c_long; 8],
    mask_was_saved: c_int,
    prev: *mut UnwindBuf,
    private: [*mut c_void; 3],
}

/// One green thread. Shared fields are atomic or locked (a native thread may
/// join, detach, cancel or name it); the `Cell`s are touched only by the green
/// thread itself, on its own coroutine. `repr(C)`: it starts with its
/// `Cancel`, which is what the cancellation points see of it.
#[repr(C)]
pub(crate) struct GreenThread {
    /// Pending, enabled, exiting: read by every cancellation point.
    pub(super) cancel: Cancel,
    /// FINISHED | DETACHED | JOINING. Plain threads on other OS threads wait
    /// for FINISHED with a futex on this word.
    pub(super) state: AtomicU32,
    pub(super) retval: AtomicPtr<c_void>,
    /// The coroutine, once it has started.
    pub(super) task: OnceLock<(TaskHandle, TaskHome)>,
    /// glibc's handle of the OS thread whose scheduler runs the coroutine
    /// (the creator's until it starts: it may start on another worker).
    pub(super) os_thread: AtomicUsize,
    /// The load of the worker it was placed on, counted down as it ends.
    pub(super) load: OnceLock<Arc<AtomicUsize>>,
    /// (lowest address, size) of the stack; (0, requested size) until it runs.
    pub(super) stack: (AtomicUsize, AtomicUsize),
    /// The record this thread is joining, to refuse a join cycle (EDEADLK).
    pub(super) joining: AtomicUsize,
    pub(super) name: Mutex<[u8; NAME_LEN]>,
    /// `main`: never freed, keys are the OS thread's own.
    pub(super) main: bool,
    pub(super) cancel_async: Cell<bool>,
    /// Innermost `pthread_cleanup_push` handler.
    pub(super) cleanup: Cell<*mut UnwindBuf>,
    /// Innermost `pthread_once` init routine this thread is running.
    pub(super) onces: Cell<*const once::Running>,
    /// Key values; None for `main`, which uses glibc's.
    pub(super) keys: Option<keys::Slots>,
}

// SAFETY: fields other threads reach are atomics, a Mutex and a OnceLock of
// Send + Sync handles; the Cells and key slots are only touched by the green
// thread itself, which runs on one OS thread for its whole life.
unsafe impl Sync for GreenThread {}
// SAFETY: as above.
unsafe impl Send for GreenThread {}

impl GreenThread {
    /// Allocates a record; ENOMEM-free: a failed allocation is EAGAIN.
    pub(super) fn alloc(
        main: bool,
        detached: bool,
        stack_size: usize,
    ) -> Result<&'static GreenThread, c_int> {
        let record = GreenThread {
            cancel: Cancel::new(end_cancelled),
            state: AtomicU32::new(if detached { DETACHED } else { 0 }),
            retval: AtomicPtr::new(ptr::null_mut()),
            task: OnceLock::new(),
            os_thread: AtomicUsize::new(os_self() as usize),
            load: OnceLock::new(),
            stack: (AtomicUsize::new(0), AtomicUsize::new(stack_size)),
            joining: AtomicUsize::new(0),
            name: Mutex::new(inherited_name()),
            main,
            cancel_async: Cell::new(false),
            cleanup: Cell::new(ptr::null_mut()),
            onces: Cell::new(ptr::null()),
            keys: (!main).then(keys::Slots::new),
        };
        let layout = std::alloc::Layout::new::<GreenThread>();
        // SAFETY: the layout is non-zero-sized.
        let p = unsafe { std::alloc::alloc(layout) }.cast::<GreenThread>();
        if p.is_null() {
            return Err(libc::EAGAIN);
        }
        // SAFETY: `p` is fresh memory with GreenThread's layout; `free` releases
        // it as the Box it is compatible with.
        unsafe {
            p.write(record);
            Ok(&*p)
        }
    }

    /// Releases a record nobody can reach any more (joined, or detached and
    /// finished). `main`'s is never released: its driver still reads it.
    ///
    /// # Safety
    /// `addr` came from `alloc` and is released once.
    pub(super) unsafe fn free(addr: usize) {
        let p = addr as *mut GreenThread;
        // SAFETY: the caller's promise; records are alive until released.
        if unsafe { !(*p).main } {
            // SAFETY: allocated with the global allocator and GreenThread's layout.
            drop(unsafe { Box::from_raw(p) });
        }
    }

    pub(super) fn addr(&self) -> usize {
        self as *const GreenThread as usize
    }

    pub(super) fn handle(&self) -> pthread_t {
        (self.addr() | 1) as pthread_t
    }

    pub(super) fn finished(&self) -> bool {
        self.state.load(Acquire) & FINISHED != 0
    }

    /// Run first in the record's own coroutine: learns the coroutine's handle
    /// and stack, and arms a cancellation that arrived before it started.
    pub(super) fn bind(&self) {
        control::set_task_local(self.addr());
        self.os_thread.store(os_self() as usize, Relaxed);
        if let Some((bottom, size)) = control::current_stack() {
            self.stack.0.store(bottom, Relaxed);
            self.stack.1.store(size, Relaxed);
        }
        if let Some(handle) = control::current_handle() {
            let _ = self.task.set(handle);
        }
        // Pairs with the fence in `pthread_cancel`: one side sees the other.
        fence(SeqCst);
        self.arm_cancel();
    }

    /// Passes a pending, enabled cancellation to the coroutine: a parked one
    /// wakes with `Wake::Cancelled`, a running one finds it at its next park.
    pub(super) fn arm_cancel(&self) {
        if self.cancel.pending.load(SeqCst) && self.cancel.enabled.load(SeqCst) {
            if let Some((task, home)) = self.task.get() {
                task.cancel(home);
            }
        }
    }

    /// Everything after the start routine: onces reset, key destructors, then
    /// FINISHED and the joiner woken. True if the caller must free the record
    /// (it was detached); after this the record may be gone. Reached from the
    /// `C-unwind` exits (`pthread_exit`, `__pthread_unwind_next`): our parts
    /// run under `no_panic`, the program's key destructors outside it.
    pub(super) fn finish(&self, retval: *mut c_void) -> bool {
        self.cancel.exiting.set(true);
        no_panic("green thread exit", || once::reset(self));
        match &self.keys {
            Some(slots) => keys::run_destructors(slots),
            None => keys::run_os_thread_destructors(),
        }
        no_panic("green thread exit", || self.complete(retval))
    }

    /// Publishes the result and wakes joiners; true if detached (the caller frees).
    pub(super) fn complete(&self, retval: *mut c_void) -> bool {
        self.retval.store(retval, Release);
        let addr = self.addr();
        let word = &self.state as *const AtomicU32;
        if let Some(load) = self.load.get() {
            load.fetch_sub(1, Relaxed);
        }
        let before = self.state.fetch_or(FINISHED, AcqRel);
        if before & DETACHED != 0 {
            return true;
        }
        // A joiner may free the record from here on: only addresses are used.
        parking::unpark_all(addr);
        futex::wake(word as usize, i32::MAX);
        false
    }
}

/// Ends the calling green thread with `retval` (pthread_exit, cancellation).
///
/// # Safety
/// `rec` is the calling coroutine's own record. Every frame between the
/// coroutine's start and here holds only values that need no dropping.
pub(super) unsafe fn exit_thread(rec: &GreenThread, retval: *mut c_void) -> ! {
    if !rec.cancel.exiting.replace(true) {
        no_panic("pthread_exit", || {
            control::clear_cancel();
            rec.retval.store(retval, Relaxed);
            once::reset(rec);
        });
    }
    // SAFETY: the caller's promise.
    unsafe { unwind(rec.addr()) }
}

/// Runs the innermost cleanup handler (it calls `__pthread_unwind_next`, which
/// comes back here), or with none left, finishes and ends the coroutine.
///
/// # Safety
/// As `exit_thread`.
unsafe fn unwind(addr: usize) -> ! {
    // SAFETY: the calling coroutine's own record, alive until `finish`.
    let rec = unsafe { &*(addr as *const GreenThread) };
    let buf = rec.cleanup.get();
    if !buf.is_null() {
        // SAFETY: `buf` is a handler frame of this coroutine, registered and not
        // yet unregistered, so it is live; the frames the jump abandons are C's
        // and ours, which own nothing that needs dropping (caller's promise).
        unsafe {
            rec.cleanup.set((*buf).prev);
            longjmp(buf.cast(), 1)
        }
    }
    if rec.finish(rec.retval.load(Relaxed)) {
        // SAFETY: detached and finished: nobody else can reach it.
        no_panic("green thread exit", || unsafe { GreenThread::free(addr) });
    }
    // SAFETY: the caller's promise: no frame owns anything that needs dropping.
    unsafe { control::exit_current() }
}

// `end_cancelled` finds the record from its `Cancel`.
const _: () = assert!(std::mem::offset_of!(GreenThread, cancel) == 0);

/// Every record's `Cancel::end`: a cancellation point found the calling green
/// thread's cancellation due.
///
/// # Safety
/// As `exit_thread`; `cancel` is the calling thread's own.
unsafe fn end_cancelled(cancel: &'static Cancel) -> ! {
    // SAFETY: every `Cancel` a coroutine's word reaches is the first field of
    // its `GreenThread` (`repr(C)`, checked above).
    let rec = unsafe { &*(cancel as *const Cancel).cast::<GreenThread>() };
    // SAFETY: the caller's promise.
    unsafe { exit_thread(rec, CANCELED) }
}

/// A new thread's name: its creator's, as a new OS thread inherits its
/// creator's `comm`.
fn inherited_name() -> [u8; NAME_LEN] {
    if let Some(rec) = current() {
        return *rec.name.lock().unwrap_or_else(|e| e.into_inner());
    }
    let mut name = [0u8; NAME_LEN];
    if let Some(real) =
        original!("C" fn pthread_getname_np(pthread_t, *mut c_char, size_t) -> c_int)
    {
        // SAFETY: the buffer holds NAME_LEN bytes, as passed.
        unsafe { real(os_self(), name.as_mut_ptr().cast(), NAME_LEN) };
        name[NAME_LEN - 1] = 0;
    }
    name
}

/// `pthread_exit(3)`: a green thread ends its coroutine (cleanup handlers, key
/// destructors, then its joiner wakes); any other thread is glibc's.
///
/// # Safety
/// As libc's: the calling thread ends; `retval` is only stored.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pthread_exit(retval: *mut c_void) -> ! {
    if let Some(rec) = current() {
        // SAFETY: this frame owns nothing; the frames below it are the user's.
        unsafe { exit_thread(rec, retval) }
    }
    match original!("C-unwind" fn pthread_exit(*mut c_void) -> !) {
        // SAFETY: forwarding the caller's argument.
        Some(real) => unsafe { real(retval) },
        None => std::process::abort(),
    }
}

/// `pthread_testcancel(3)`: a green thread with a pending, enabled
/// cancellation ends here.
///
/// # Safety
/// None beyond libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pthread_testcancel() {
    if let Some(rec) = current() {
        if rec.cancel.due() {
            // SAFETY: this frame owns nothing.
            unsafe { exit_thread(rec, CANCELED) }
        }
        return;
    }
    if let Some(real) = original!("C-unwind" fn pthread_testcancel() -> ()) {
        // SAFETY: no arguments.
        unsafe { real() }
    }
}

hook! {
    /// `pthread_cancel(3)`: deferred, whatever the cancel type; acted on at
    /// the thread's next cancellation point.
    fn pthread_cancel(th: pthread_t) -> c_int as real {
        let Some(rec) = record(th) else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(th) };
        };
        if !rec.finished() {
            rec.cancel.pending.store(true, SeqCst);
            // Pairs with the fence in `bind`.
            fence(SeqCst);
            rec.arm_cancel();
        }
        0
    }
}

hook! {
    /// `pthread_setcancelstate(3)`, per green thread.
    fn pthread_setcancelstate(state: c_int, old: *mut c_int) -> c_int as real {
        let Some(rec) = current() else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(state, old) };
        };
        if state != PTHREAD_CANCEL_ENABLE && state != PTHREAD_CANCEL_DISABLE {
            return libc::EINVAL;
        }
        let was = rec.cancel.enabled.swap(state == PTHREAD_CANCEL_ENABLE, SeqCst);
        // SAFETY: null or the caller's writable int.
        if let Some(old) = unsafe { old.as_mut() } {
            *old = if was { PTHREAD_CANCEL_ENABLE } else { PTHREAD_CANCEL_DISABLE };
        }
        if state == PTHREAD_CANCEL_ENABLE {
            rec.arm_cancel();
        } else {
            control::clear_cancel();
        }
        0
    }
}

hook! {
    /// `pthread_setcanceltype(3)`, per green thread. Asynchronous cancellation
    /// is kept as a setting but acts as deferred: a coroutine only stops where
    /// it parks.
    fn pthread_setcanceltype(kind: c_int, old: *mut c_int) -> c_int as real {
        let Some(rec) = current() else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(kind, old) };
        };
        if kind != PTHREAD_CANCEL_DEFERRED && kind != PTHREAD_CANCEL_ASYNCHRONOUS {
            return libc::EINVAL;
        }
        let was = rec.cancel_async.replace(kind == PTHREAD_CANCEL_ASYNCHRONOUS);
        // SAFETY: null or the caller's writable int.
        if let Some(old) = unsafe { old.as_mut() } {
            *old = if was { PTHREAD_CANCEL_ASYNCHRONOUS } else { PTHREAD_CANCEL_DEFERRED };
        }
        0
    }
}

/// Defines a cleanup-handler entry point that C's `pthread_cleanup_push`/`pop`
/// call: in a green thread it keeps the handler chain in the record (glibc's
/// is per OS thread, shared by its coroutines); elsewhere it is glibc's.
macro_rules! cleanup_hook {
    ($(#[$meta:meta])* fn $name:ident(|$rec:ident, $buf:ident| $green:expr)) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// `buf` is the handler buffer `pthread_cleanup_push` made on the stack.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(buf: *mut c_void) {
            if let Some($rec) = current() {
                let $buf = buf.cast::<UnwindBuf>();
                // SAFETY: the caller's live handler buffer, in its own frame.
                unsafe { $green };
                return;
            }
            if let Some(real) = original!("C" fn $name(*mut c_void) -> ()) {
                // SAFETY: forwarding the caller's argument.
                unsafe { real(buf) }
            }
        }
    };
}

cleanup_hook! {
    /// `pthread_cleanup_push`: links the handler in.
    fn __pthread_register_cancel(|rec, buf| {
        (*buf).prev = rec.cleanup.get();
        rec.cleanup.set(buf);
    })
}

cleanup_hook! {
    /// `pthread_cleanup_push_defer_np`: as `pthread_cleanup_push` (green
    /// threads are always deferred).
    fn __pthread_register_cancel_defer(|rec, buf| {
        (*buf).prev = rec.cleanup.get();
        rec.cleanup.set(buf);
    })
}

cleanup_hook! {
    /// `pthread_cleanup_pop`: unlinks the handler.
    fn __pthread_unregister_cancel(|rec, buf| rec.cleanup.set((*buf).prev))
}

cleanup_hook! {
    /// `pthread_cleanup_pop_restore_np`: as `pthread_cleanup_pop`.
    fn __pthread_unregister_cancel_restore(|rec, buf| rec.cleanup.set((*buf).prev))
}

/// Called by a cleanup handler's code after the handler ran during an exit:
/// on to the next handler, or the end of the thread.
///
/// # Safety
/// Only reached from `pthread_cleanup_push`'s code during an exit.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn __pthread_unwind_next(buf: *mut c_void) -> ! {
    if let Some(rec) = current() {
        // SAFETY: this frame owns nothing; the thread is exiting.
        unsafe { unwind(rec.addr()) }
    }
    match original!("C-unwind" fn __pthread_unwind_next(*mut c_void) -> !) {
        // SAFETY: forwarding the caller's argument.
        Some(real) => unsafe { real(buf) },
        None => std::process::abort(),
    }
}
