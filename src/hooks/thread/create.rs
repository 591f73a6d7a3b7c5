//! `pthread_create`: a green thread is a coroutine on the least loaded worker
//! (this thread's scheduler without workers), with a fresh record.

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::Relaxed;

use libc::{c_int, c_void, pthread_attr_t, pthread_t};

use super::record::GreenThread;
use super::{StartRoutine, green_threads, native, spread};
use crate::runtime::{self, stack};

/// Stack when glibc's default thread attribute cannot be read.
pub(super) const FALLBACK_STACK: usize = 8 << 20;

unsafe extern "C" {
    fn pthread_getattr_default_np(attr: *mut pthread_attr_t) -> c_int;
    fn pthread_attr_getdetachstate(attr: *const pthread_attr_t, state: *mut c_int) -> c_int;
}

/// glibc's default thread stack size (`pthread_setattr_default_np`, else
/// RLIMIT_STACK): address space, committed only as touched.
pub(super) fn default_stack_size() -> usize {
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
/// thread's scheduler without workers). Its stack: the attribute's size if the
/// program set one, else `PATCHALL_STACK_SIZE`, else glibc's default thread
/// stack (`stack::usable_size`).
fn spawn(
    attr: *const pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> Result<&'static GreenThread, c_int> {
    let glibc = default_stack_size();
    let (asked, detached) = if attr.is_null() {
        (None, false)
    } else {
        let (mut size, mut state) = (0, 0);
        // SAFETY: the caller's initialised attribute, only read.
        unsafe {
            libc::pthread_attr_getstacksize(attr, &mut size);
            pthread_attr_getdetachstate(attr, &mut state);
        }
        // glibc reports its default for an attribute whose size was never
        // set, so only another size counts as the program's own.
        (
            (size != glibc).then_some(size),
            state == libc::PTHREAD_CREATE_DETACHED,
        )
    };
    let stack = stack::usable_size(asked, glibc).ok_or(libc::EAGAIN)?;
    let rec = GreenThread::alloc(false, detached, stack)?;
    let (addr, arg) = (rec.addr(), arg as usize);
    // A new thread starts with its creator's mask.
    let mask = runtime::signals::caller_mask();
    let body = move || run(addr, start, arg, mask);
    let (home, load) = spread::place();
    let own_tls = Some(runtime::tls::wanted(true));
    let spawned = match &home {
        None => runtime::with_scheduler(|s| s.spawn_tls(None, Some(stack), own_tls, body)).ok(),
        Some(home) => Some(runtime::spawn_at(home, None, Some(stack), own_tls, body)),
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
        if !green_threads::enabled()
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
