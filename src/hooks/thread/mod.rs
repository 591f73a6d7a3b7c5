//! Green threads (`PATCHALL_GREEN_THREADS=1`): `pthread_create` called in a
//! coroutine starts a coroutine on the caller's scheduler, `main` runs as one
//! (see `start`), and every `pthread_*` function that takes a `pthread_t`
//! understands the handles we hand out. With green threads off every hook here
//! forwards untouched.
//!
//! A green thread is a heap record ([`GreenThread`]) whose `pthread_t` is the
//! record's address with the low bit set: glibc's handles are aligned pointers,
//! so an odd value is never one of them, and every hook checks that bit before
//! a handle reaches glibc. The running coroutine's record is its per-coroutine
//! word (`control::task_local`).
//!
//! Cancellation is deferred: `pthread_cancel` marks the thread and wakes it if
//! it is parked; it ends at the entry of the next hooked cancellation point
//! (read, write, close, sleep…: `blocking::cancellation_point`), in its wait,
//! at `pthread_join`, or at `pthread_testcancel`. Ending a
//! green thread (return, `pthread_exit`, cancellation) runs its C
//! `pthread_cleanup_push` handlers, resets a `pthread_once` it was inside, runs
//! its key destructors, then wakes its joiner.
//!
//! With `PATCHALL_WORKERS=N` green threads spread over N OS threads (see
//! `spread`); a record's shared fields are atomic for that reason too.
//!
//! Functions that only make sense for an OS thread (affinity, scheduling, CPU
//! clock, signals) act on the OS thread that runs the green thread, which every
//! coroutine of that thread shares.

use std::cell::Cell;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libc::{c_char, c_int, c_void, clockid_t, pthread_attr_t, pthread_t, size_t, timespec};

use super::green;
use crate::config::{StackMode, config};
use crate::runtime::control::{self, TaskHandle, TaskHome};
use crate::runtime::{self, Breaks, Wake, parking, stack::GUARD_GAP};
use crate::sys::deadline_at;

mod keys;
mod native;
mod once;
mod spread;
mod start;

/// A thread's start routine.
type StartRoutine = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

const FINISHED: u32 = 1;
const DETACHED: u32 = 2;
const JOINING: u32 = 4;

/// glibc's `PTHREAD_CANCELED`.
const CANCELED: *mut c_void = usize::MAX as *mut c_void;
// glibc's <pthread.h> values (the libc crate lacks them).
const PTHREAD_CANCEL_ENABLE: c_int = 0;
const PTHREAD_CANCEL_DISABLE: c_int = 1;
const PTHREAD_CANCEL_DEFERRED: c_int = 0;
const PTHREAD_CANCEL_ASYNCHRONOUS: c_int = 1;
/// Longest thread name with its NUL (the kernel's TASK_COMM_LEN).
const NAME_LEN: usize = 16;
/// Stack when glibc's default thread attribute cannot be read.
const FALLBACK_STACK: usize = 8 << 20;

unsafe extern "C" {
    fn pthread_getattr_default_np(attr: *mut pthread_attr_t) -> c_int;
    fn pthread_attr_getdetachstate(attr: *const pthread_attr_t, state: *mut c_int) -> c_int;
    fn longjmp(env: *mut c_void, val: c_int) -> !;
}

/// glibc's `__pthread_unwind_buf_t`, which C's `pthread_cleanup_push` keeps on
/// the stack: a `sigsetjmp` buffer, then (in glibc's private part) the link to
/// the next outer handler.
#[repr(C)]
struct UnwindBuf {
    jmp_buf: [libc::c_long; 8],
    mask_was_saved: c_int,
    prev: *mut UnwindBuf,
    private: [*mut c_void; 3],
}

/// One green thread. Shared fields are atomic or locked (a native thread may
/// join, detach, cancel or name it); the `Cell`s are touched only by the green
/// thread itself, on its own coroutine.
pub(crate) struct GreenThread {
    /// FINISHED | DETACHED | JOINING. Plain threads on other OS threads wait
    /// for FINISHED with a futex on this word.
    state: AtomicU32,
    retval: AtomicPtr<c_void>,
    /// The coroutine, once it has started.
    task: OnceLock<(TaskHandle, TaskHome)>,
    /// glibc's handle of the OS thread whose scheduler runs the coroutine
    /// (the creator's until it starts: it may start on another worker).
    os_thread: AtomicUsize,
    /// The load of the worker it was placed on, counted down as it ends.
    load: OnceLock<Arc<AtomicUsize>>,
    /// (lowest address, size) of the stack; (0, requested size) until it runs.
    stack: (AtomicUsize, AtomicUsize),
    cancel_pending: AtomicBool,
    cancel_enabled: AtomicBool,
    /// The record this thread is joining, to refuse a join cycle (EDEADLK).
    joining: AtomicUsize,
    name: Mutex<[u8; NAME_LEN]>,
    /// `main`: never freed, keys are the OS thread's own.
    main: bool,
    cancel_async: Cell<bool>,
    exiting: Cell<bool>,
    /// Innermost `pthread_cleanup_push` handler.
    cleanup: Cell<*mut UnwindBuf>,
    /// Innermost `pthread_once` init routine this thread is running.
    onces: Cell<*const once::Running>,
    /// Key values; None for `main`, which uses glibc's.
    keys: Option<keys::Slots>,
}

// SAFETY: fields other threads reach are atomics, a Mutex and a OnceLock of
// Send + Sync handles; the Cells and key slots are only touched by the green
// thread itself, which runs on one OS thread for its whole life.
unsafe impl Sync for GreenThread {}
// SAFETY: as above.
unsafe impl Send for GreenThread {}

impl GreenThread {
    /// Allocates a record; ENOMEM-free: a failed allocation is EAGAIN.
    fn alloc(main: bool, detached: bool, stack_size: usize) -> Result<&'static GreenThread, c_int> {
        let record = GreenThread {
            state: AtomicU32::new(if detached { DETACHED } else { 0 }),
            retval: AtomicPtr::new(ptr::null_mut()),
            task: OnceLock::new(),
            os_thread: AtomicUsize::new(os_self() as usize),
            load: OnceLock::new(),
            stack: (AtomicUsize::new(0), AtomicUsize::new(stack_size)),
            cancel_pending: AtomicBool::new(false),
            cancel_enabled: AtomicBool::new(true),
            joining: AtomicUsize::new(0),
            name: Mutex::new(inherited_name()),
            main,
            cancel_async: Cell::new(false),
            exiting: Cell::new(false),
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
    unsafe fn free(addr: usize) {
        let p = addr as *mut GreenThread;
        // SAFETY: the caller's promise; records are alive until released.
        if unsafe { !(*p).main } {
            // SAFETY: allocated with the global allocator and GreenThread's layout.
            drop(unsafe { Box::from_raw(p) });
        }
    }

    fn addr(&self) -> usize {
        self as *const GreenThread as usize
    }

    fn handle(&self) -> pthread_t {
        (self.addr() | 1) as pthread_t
    }

    fn finished(&self) -> bool {
        self.state.load(Acquire) & FINISHED != 0
    }

    /// Run first in the record's own coroutine: learns the coroutine's handle
    /// and stack, and arms a cancellation that arrived before it started.
    fn bind(&self) {
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
    fn arm_cancel(&self) {
        if self.cancel_pending.load(SeqCst) && self.cancel_enabled.load(SeqCst) {
            if let Some((task, home)) = self.task.get() {
                task.cancel(home);
            }
        }
    }

    /// True if this (the calling) thread must act on a cancellation now.
    fn cancel_due(&self) -> bool {
        self.cancel_pending.load(SeqCst) && self.cancel_enabled.load(SeqCst) && !self.exiting.get()
    }

    /// Everything after the start routine: onces reset, key destructors, then
    /// FINISHED and the joiner woken. True if the caller must free the record
    /// (it was detached); after this the record may be gone.
    fn finish(&self, retval: *mut c_void) -> bool {
        self.exiting.set(true);
        once::reset(self);
        match &self.keys {
            Some(slots) => keys::run_destructors(slots),
            None => keys::run_os_thread_destructors(),
        }
        self.complete(retval)
    }

    /// Publishes the result and wakes joiners; true if detached (the caller frees).
    fn complete(&self, retval: *mut c_void) -> bool {
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
        futex_wake_all(word);
        false
    }
}

/// Ends the calling green thread with `retval` (pthread_exit, cancellation).
///
/// # Safety
/// `rec` is the calling coroutine's own record. Every frame between the
/// coroutine's start and here holds only values that need no dropping.
unsafe fn exit_thread(rec: &GreenThread, retval: *mut c_void) -> ! {
    if !rec.exiting.replace(true) {
        control::clear_cancel();
        rec.retval.store(retval, Relaxed);
        once::reset(rec);
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
        unsafe { GreenThread::free(addr) };
    }
    // SAFETY: the caller's promise: no frame owns anything that needs dropping.
    unsafe { control::exit_current() }
}

/// The green thread running here, if any.
fn current() -> Option<&'static GreenThread> {
    if !green::enabled() {
        return None;
    }
    // SAFETY: the word is only ever set (by `bind`) to the coroutine's own
    // record, which lives until the coroutine ends.
    unsafe { (control::task_local() as *const GreenThread).as_ref() }
}

/// The record behind a green handle; None for glibc's handles (always even).
fn record(th: pthread_t) -> Option<&'static GreenThread> {
    if th & 1 == 0 {
        return None;
    }
    // SAFETY: odd handles are only made by `handle` from a live record; using a
    // handle after join (or after a detached thread ended) is undefined, as in glibc.
    unsafe { ((th & !1) as *const GreenThread).as_ref() }
}

/// The OS thread a handle stands for: itself, or the one running a green
/// thread (ESRCH once that has finished).
fn os_thread(th: pthread_t) -> Result<pthread_t, c_int> {
    match record(th) {
        None => Ok(th),
        Some(rec) if rec.finished() => Err(libc::ESRCH),
        Some(rec) => Ok(rec.os_thread.load(Relaxed) as pthread_t),
    }
}

/// Acts on a cancellation that woke a parked call (`Wake::Cancelled`): a green
/// thread with cancellation enabled ends here with `PTHREAD_CANCELED`. Returns
/// true if the caller should wait again (the cancellation is deferred: disabled,
/// or the thread is already ending), false for other coroutines (the caller
/// reports ECANCELED).
///
/// # Safety
/// The caller's frames (up to the coroutine's start) are abandoned: they may
/// own heap memory (it leaks) but no lock, borrow or guard whose drop restores
/// state. Call it with the hook `Guard` released.
pub(crate) unsafe fn act_on_cancel() -> bool {
    let Some(rec) = current() else {
        return false;
    };
    if rec.cancel_due() {
        // SAFETY: the caller's promise.
        unsafe { exit_thread(rec, CANCELED) }
    }
    control::clear_cancel();
    true
}

/// True if the calling green thread has a pending, enabled cancellation: a
/// cancellation point that must act before it waits asks this.
pub(crate) fn cancel_due() -> bool {
    current().is_some_and(GreenThread::cancel_due)
}

/// glibc's handle of the calling OS thread (our `pthread_self` would give a
/// green handle).
fn os_self() -> pthread_t {
    // SAFETY: pthread_self has no preconditions.
    original!("C" fn pthread_self() -> pthread_t).map_or(0, |real| unsafe { real() })
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

/// glibc's default thread stack size (`pthread_setattr_default_np`, else
/// RLIMIT_STACK): address space, committed only as touched.
fn default_stack_size() -> usize {
    let mut attr = MaybeUninit::<pthread_attr_t>::uninit();
    let mut size = 0;
    // SAFETY: getattr_default_np initialises `attr`, destroyed after one read.
    unsafe {
        if pthread_getattr_default_np(attr.as_mut_ptr()) != 0 {
            return FALLBACK_STACK;
        }
        libc::pthread_attr_getstacksize(attr.as_ptr(), &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
    }
    if size == 0 { FALLBACK_STACK } else { size }
}

/// Starts `start(arg)` as a green thread on the least loaded worker (this
/// thread's scheduler without workers).
fn spawn(
    attr: *const pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> Result<&'static GreenThread, c_int> {
    let (stack, detached) = if attr.is_null() {
        (default_stack_size(), false)
    } else {
        let (mut size, mut state) = (0, 0);
        // SAFETY: the caller's initialised attribute, only read.
        unsafe {
            libc::pthread_attr_getstacksize(attr, &mut size);
            pthread_attr_getdetachstate(attr, &mut state);
        }
        (size, state == libc::PTHREAD_CREATE_DETACHED)
    };
    let rec = GreenThread::alloc(false, detached, stack)?;
    let (addr, arg) = (rec.addr(), arg as usize);
    // A new thread starts with its creator's mask.
    let mask = runtime::signals::caller_mask();
    let body = move || run(addr, start, arg, mask);
    let (home, load) = spread::place();
    let spawned = match &home {
        None => runtime::with_scheduler(|s| s.spawn(None, Some(stack), body)).ok(),
        Some(home) => Some(runtime::spawn_at(home, None, Some(stack), None, body)),
    };
    match (spawned, load) {
        (Some(Ok(_)), Some(load)) => {
            let _ = rec.load.set(load);
        }
        (Some(Ok(_)), None) => {}
        (_, load) => {
            if let Some(load) = load {
                load.fetch_sub(1, Relaxed);
            }
            // SAFETY: no coroutine was made, so nothing else knows the record.
            unsafe { GreenThread::free(addr) };
            return Err(libc::EAGAIN);
        }
    }
    Ok(rec)
}

/// A green thread's coroutine body.
fn run(addr: usize, start: StartRoutine, arg: usize, mask: u64) {
    // SAFETY: the record outlives its coroutine: it is freed at the end of this
    // function (detached) or by a joiner once FINISHED is set.
    let rec = unsafe { &*(addr as *const GreenThread) };
    rec.bind();
    runtime::note_entry(runtime::Entry::Code(start as usize));
    runtime::signals::adopt_mask(mask);
    // SAFETY: the user's start routine with the user's argument, as glibc's
    // start_thread would call it.
    let retval = unsafe { start(arg as *mut c_void) };
    if rec.finish(retval) {
        // SAFETY: detached and finished: nobody else can reach it.
        unsafe { GreenThread::free(addr) };
    }
}

hook! {
    /// `pthread_create(3)`: in a coroutine (green threads on), starts a
    /// coroutine unless the start routine must stay native; EAGAIN when no
    /// stack can be had.
    fn pthread_create(thread: *mut pthread_t, attr: *const pthread_attr_t, start: Option<StartRoutine>, arg: *mut c_void) -> c_int as real {
        // A native thread starts with its creator's mask: a green thread's own.
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            let r = runtime::signals::with_own_mask(|| unsafe { real(thread, attr, start, arg) });
            // glibc's first thread installs its SIGSETXID handler.
            runtime::tls::after_thread_created();
            r
        };
        let Some(routine) = start else { return forward() };
        if !green::enabled()
            || !runtime::in_coroutine()
            || spread::starting()
            || native::stays_native(routine as usize)
        {
            return forward();
        }
        match spawn(attr, routine, arg) {
            Ok(rec) => {
                // SAFETY: the caller's out-parameter.
                unsafe { *thread = rec.handle() };
                0
            }
            Err(e) => e,
        }
    }
}

/// How long a join may wait.
#[derive(Clone, Copy)]
enum Wait {
    Try,
    Until(Option<Instant>),
}

/// Joins a green thread: glibc's checks and errors, then waits for FINISHED.
fn join_green(rec: &'static GreenThread, ret: *mut *mut c_void, wait: Wait) -> c_int {
    let me = current();
    let mut state = rec.state.load(Acquire);
    if matches!(wait, Wait::Try) && state & FINISHED == 0 {
        return libc::EBUSY;
    }
    if state & DETACHED != 0 {
        return libc::EINVAL;
    }
    if me.is_some_and(|m| ptr::eq(m, rec) || rec.joining.load(SeqCst) == m.addr()) {
        return libc::EDEADLK;
    }
    loop {
        if state & (JOINING | DETACHED) != 0 {
            return libc::EINVAL;
        }
        match rec
            .state
            .compare_exchange_weak(state, state | JOINING, AcqRel, Acquire)
        {
            Ok(_) => break,
            Err(now) => state = now,
        }
    }
    let deadline = match wait {
        Wait::Try => None,
        Wait::Until(d) => d,
    };
    if let Some(m) = me {
        m.joining.store(rec.addr(), SeqCst);
    }
    let waited = wait_finished(rec, deadline);
    if let Some(m) = me {
        m.joining.store(0, SeqCst);
    }
    if let Err(e) = waited {
        rec.state.fetch_and(!JOINING, AcqRel);
        if let (libc::ECANCELED, Some(m)) = (e, me) {
            // SAFETY: our frames hold only plain values; C's frames are the user's.
            unsafe { exit_thread(m, CANCELED) }
        }
        return e;
    }
    if !ret.is_null() {
        // SAFETY: the caller's out-parameter.
        unsafe { *ret = rec.retval.load(Acquire) };
    }
    // SAFETY: joined: we are the only one who can still reach it.
    unsafe { GreenThread::free(rec.addr()) };
    0
}

/// Waits until `rec` has finished. ETIMEDOUT at `deadline`; ECANCELED when the
/// waiting green thread is cancelled (a join is a cancellation point).
fn wait_finished(rec: &GreenThread, deadline: Option<Instant>) -> Result<(), c_int> {
    let addr = rec.addr();
    let finished = || rec.finished();
    if runtime::in_coroutine() {
        while !finished() {
            if current().is_some_and(GreenThread::cancel_due) {
                return Err(libc::ECANCELED);
            }
            runtime::label(&const { runtime::Label::new("join", runtime::Family::Join) });
            if parking::park_on(addr, deadline, || !finished()) == Wake::TimedOut && !finished() {
                return Err(libc::ETIMEDOUT);
            }
        }
        return Ok(());
    }
    if runtime::current_scheduler().is_some() {
        // A plain caller on a thread that runs coroutines (a destructor or
        // atexit handler on main's thread): the green thread may be one of
        // them, so run them meanwhile; its end on another worker comes as mail.
        while !finished() {
            if parking::drive_on(addr, deadline, Breaks::Never, || !finished()) == Wake::TimedOut
                && !finished()
            {
                return Err(libc::ETIMEDOUT);
            }
        }
        return Ok(());
    }
    loop {
        let state = rec.state.load(Acquire);
        if state & FINISHED != 0 {
            return Ok(());
        }
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(libc::ETIMEDOUT),
            },
        };
        futex_wait(&rec.state, state, left);
    }
}

/// A coroutine joining a native thread: polls `tryjoin` so that the other
/// coroutines of this OS thread keep running (the native thread may be waiting
/// for one of them).
fn join_native(tryjoin: impl Fn() -> c_int, deadline: Option<Instant>) -> c_int {
    let mut pause = Duration::from_micros(200);
    loop {
        let r = tryjoin();
        if r != libc::EBUSY {
            return r;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return libc::ETIMEDOUT;
        }
        let wake_at = deadline.map_or(now + pause, |d| d.min(now + pause));
        runtime::label(&const { runtime::Label::new("join", runtime::Family::Join) });
        if runtime::sleep_until(wake_at) == Wake::Cancelled {
            // SAFETY: `tryjoin` borrows only plain values; nothing here needs dropping.
            if !unsafe { act_on_cancel() } {
                return libc::ECANCELED;
            }
        }
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Every join flavour: `wait` for a green thread; a coroutine joining a native
/// thread polls; anything else is glibc's.
fn join(
    th: pthread_t,
    ret: *mut *mut c_void,
    clock: clockid_t,
    abstime: *const timespec,
    block: bool,
    real: impl Fn() -> c_int,
) -> c_int {
    let deadline = || deadline_at(clock, abstime);
    match record(th) {
        Some(rec) if !block => join_green(rec, ret, Wait::Try),
        Some(rec) if rec.finished() => join_green(rec, ret, Wait::Until(None)),
        Some(rec) => match deadline() {
            Ok(d) => join_green(rec, ret, Wait::Until(d)),
            Err(e) => e,
        },
        None if block && green::enabled() && runtime::in_coroutine() => {
            let tryjoin = || {
                original!("C" fn pthread_tryjoin_np(pthread_t, *mut *mut c_void) -> c_int)
                    // SAFETY: glibc's handle and the caller's out-parameter.
                    .map_or(libc::ENOSYS, |real| unsafe { real(th, ret) })
            };
            match deadline() {
                Ok(d) => join_native(tryjoin, d),
                Err(e) => e,
            }
        }
        None => real(),
    }
}

hook! {
    /// `pthread_join(3)`.
    unwind fn pthread_join(th: pthread_t, ret: *mut *mut c_void) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        join(th, ret, libc::CLOCK_REALTIME, ptr::null(), true, || unsafe { real(th, ret) })
    }
}

hook! {
    /// `pthread_tryjoin_np(3)`: EBUSY while the thread runs.
    fn pthread_tryjoin_np(th: pthread_t, ret: *mut *mut c_void) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        join(th, ret, libc::CLOCK_REALTIME, ptr::null(), false, || unsafe { real(th, ret) })
    }
}

hook! {
    /// `pthread_timedjoin_np(3)`: `abstime` on CLOCK_REALTIME.
    unwind fn pthread_timedjoin_np(th: pthread_t, ret: *mut *mut c_void, abstime: *const timespec) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        join(th, ret, libc::CLOCK_REALTIME, abstime, true, || unsafe { real(th, ret, abstime) })
    }
}

hook! {
    /// `pthread_clockjoin_np(3)`: `abstime` on CLOCK_REALTIME or CLOCK_MONOTONIC.
    unwind fn pthread_clockjoin_np(th: pthread_t, ret: *mut *mut c_void, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        if record(th).is_some() && clock != libc::CLOCK_REALTIME && clock != libc::CLOCK_MONOTONIC {
            return libc::EINVAL;
        }
        // SAFETY: forwarding the caller's arguments.
        join(th, ret, clock, abstime, true, || unsafe { real(th, ret, clock, abstime) })
    }
}

hook! {
    /// `pthread_detach(3)`.
    fn pthread_detach(th: pthread_t) -> c_int as real {
        let Some(rec) = record(th) else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(th) };
        };
        let mut state = rec.state.load(Acquire);
        loop {
            if state & (DETACHED | JOINING) != 0 {
                return libc::EINVAL;
            }
            match rec.state.compare_exchange_weak(state, state | DETACHED, AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        if state & FINISHED != 0 {
            // SAFETY: finished and now detached: nobody else can reach it.
            unsafe { GreenThread::free(rec.addr()) };
        }
        0
    }
}

hook! {
    /// `pthread_self(3)`: a green thread's own handle.
    fn pthread_self() -> pthread_t as real {
        match current() {
            Some(rec) => rec.handle(),
            // SAFETY: no arguments.
            None => unsafe { real() },
        }
    }
}

hook! {
    /// `pthread_equal(3)`: handles are equal when their values are.
    fn pthread_equal(a: pthread_t, b: pthread_t) -> c_int as _real {
        c_int::from(a == b)
    }
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
        if rec.cancel_due() {
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
            rec.cancel_pending.store(true, SeqCst);
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
        let was = rec.cancel_enabled.swap(state == PTHREAD_CANCEL_ENABLE, SeqCst);
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

hook! {
    /// `pthread_kill(3)`: to the OS thread running a green thread. A green
    /// thread that finished but is not joined yet gets nothing and the call
    /// succeeds, whatever the signal, as glibc (2.34+) does for an exited
    /// thread: the signal could only reach other coroutines of its OS thread.
    fn pthread_kill(th: pthread_t, sig: c_int) -> c_int as real {
        match os_thread(th) {
            // SAFETY: glibc's handle of a live thread, the caller's signal.
            Ok(t) => unsafe { real(t, sig) },
            // glibc's own signals (SIGCANCEL, SIGSETXID) are refused first.
            Err(_) if runtime::signals::glibc_internal(sig) => libc::EINVAL,
            Err(_) => 0,
        }
    }
}

hook! {
    /// `pthread_sigqueue(3)`: to the OS thread running a green thread.
    fn pthread_sigqueue(th: pthread_t, sig: c_int, value: libc::sigval) -> c_int as real {
        match os_thread(th) {
            // SAFETY: glibc's handle, the caller's other arguments.
            Ok(t) => unsafe { real(t, sig, value) },
            Err(e) => e,
        }
    }
}

hook! {
    /// `pthread_getaffinity_np(3)`: of the OS thread running a green thread.
    fn pthread_getaffinity_np(th: pthread_t, size: size_t, set: *mut libc::cpu_set_t) -> c_int as real {
        match os_thread(th) {
            // SAFETY: glibc's handle, the caller's other arguments.
            Ok(t) => unsafe { real(t, size, set) },
            Err(e) => e,
        }
    }
}

hook! {
    /// `pthread_setaffinity_np(3)`: moves the OS thread running a green thread,
    /// with every coroutine on it.
    fn pthread_setaffinity_np(th: pthread_t, size: size_t, set: *const libc::cpu_set_t) -> c_int as real {
        match os_thread(th) {
            // SAFETY: glibc's handle, the caller's other arguments.
            Ok(t) => unsafe { real(t, size, set) },
            Err(e) => e,
        }
    }
}

hook! {
    /// `pthread_getschedparam(3)`: of the OS thread running a green thread.
    fn pthread_getschedparam(th: pthread_t, policy: *mut c_int, param: *mut libc::sched_param) -> c_int as real {
        match os_thread(th) {
            // SAFETY: glibc's handle, the caller's other arguments.
            Ok(t) => unsafe { real(t, policy, param) },
            Err(e) => e,
        }
    }
}

hook! {
    /// `pthread_setschedparam(3)`: of the OS thread running a green thread
    /// (every coroutine on it).
    fn pthread_setschedparam(th: pthread_t, policy: c_int, param: *const libc::sched_param) -> c_int as real {
        match os_thread(th) {
            // SAFETY: glibc's handle, the caller's other arguments.
            Ok(t) => unsafe { real(t, policy, param) },
            Err(e) => e,
        }
    }
}

hook! {
    /// `pthread_setschedprio(3)`: of the OS thread running a green thread.
    fn pthread_setschedprio(th: pthread_t, prio: c_int) -> c_int as real {
        match os_thread(th) {
            // SAFETY: glibc's handle, the caller's other argument.
            Ok(t) => unsafe { real(t, prio) },
            Err(e) => e,
        }
    }
}

hook! {
    /// `pthread_getcpuclockid(3)`: the CPU clock of the OS thread running a
    /// green thread, which all its coroutines share.
    fn pthread_getcpuclockid(th: pthread_t, clock: *mut clockid_t) -> c_int as real {
        match os_thread(th) {
            // SAFETY: glibc's handle, the caller's out-parameter.
            Ok(t) => unsafe { real(t, clock) },
            Err(e) => e,
        }
    }
}

hook! {
    /// `pthread_setname_np(3)`: a green thread's own name (the OS thread keeps
    /// its own); ERANGE past 15 bytes, as glibc.
    fn pthread_setname_np(th: pthread_t, name: *const c_char) -> c_int as real {
        let Some(rec) = record(th) else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(th, name) };
        };
        // SAFETY: the caller's NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
        if bytes.len() >= NAME_LEN {
            return libc::ERANGE;
        }
        let mut new = [0u8; NAME_LEN];
        new[..bytes.len()].copy_from_slice(bytes);
        *rec.name.lock().unwrap_or_else(|e| e.into_inner()) = new;
        0
    }
}

hook! {
    /// `pthread_getname_np(3)`: ERANGE for a buffer under 16 bytes, as glibc.
    fn pthread_getname_np(th: pthread_t, buf: *mut c_char, len: size_t) -> c_int as real {
        let Some(rec) = record(th) else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(th, buf, len) };
        };
        if len < NAME_LEN {
            return libc::ERANGE;
        }
        let name = *rec.name.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the caller's buffer holds at least NAME_LEN bytes; the name is
        // NUL-terminated within them.
        unsafe { ptr::copy_nonoverlapping(name.as_ptr(), buf.cast(), NAME_LEN) };
        0
    }
}

hook! {
    /// `pthread_getattr_np(3)`: a fresh attribute describing a green thread:
    /// its coroutine stack, guard gap and detach state.
    fn pthread_getattr_np(th: pthread_t, attr: *mut pthread_attr_t) -> c_int as real {
        let Some(rec) = record(th) else {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(th, attr) };
        };
        let (bottom, size) = (rec.stack.0.load(Relaxed), rec.stack.1.load(Relaxed));
        let guard = match config().stack_mode {
            StackMode::Guarded => GUARD_GAP,
            StackMode::Dense => 0,
        };
        let detach = if rec.state.load(Acquire) & DETACHED != 0 {
            libc::PTHREAD_CREATE_DETACHED
        } else {
            libc::PTHREAD_CREATE_JOINABLE
        };
        // SAFETY: `attr` is the caller's attribute to initialise; the stack
        // range is the coroutine's own.
        unsafe {
            let r = libc::pthread_attr_init(attr);
            if r != 0 {
                return r;
            }
            if bottom != 0 {
                libc::pthread_attr_setstack(attr, bottom as *mut c_void, size);
            } else {
                libc::pthread_attr_setstacksize(attr, size);
            }
            libc::pthread_attr_setguardsize(attr, guard);
            libc::pthread_attr_setdetachstate(attr, detach);
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

/// Wakes every futex waiter on `word` (threads of this process).
fn futex_wake_all<T>(word: *const T) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; it never dereferences
    // memory we do not own (EFAULT at worst, ignored).
    unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            c_int::MAX,
        );
    }
}

/// Blocks the OS thread while `word` holds `expected`, at most `timeout`.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| timespec {
        tv_sec: d.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos().into(),
    });
    let ts_ptr = ts.as_ref().map_or(ptr::null(), |t| t as *const timespec);
    // SAFETY: a live futex word and an optional valid relative timeout.
    unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
        );
    }
}
