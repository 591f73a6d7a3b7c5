//! The runtime's own OS threads (the offload pool, the monitor): started with
//! libc's `pthread_create`, never the green-thread hook, so they are OS threads
//! even when a coroutine starts them, and deaf to asynchronous signals, which
//! stay with the program's own threads as they would without patchall.

use std::ffi::c_void;
use std::ptr;

/// A thread's body, as `pthread_create` takes it.
pub(crate) type Start = extern "C" fn(*mut c_void) -> *mut c_void;

type CreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    Start,
    *mut c_void,
) -> libc::c_int;

/// The real `pthread_create`.
static PTHREAD_CREATE: crate::hooks::Original = crate::hooks::Original::new(c"pthread_create");

/// Starts a detached OS thread running `main(arg)`; false if none could start.
/// `main` should call [`block_async_signals`] first.
pub(crate) fn start(main: Start, arg: *mut c_void) -> bool {
    let Some(addr) = PTHREAD_CREATE.addr() else {
        return false;
    };
    // SAFETY: dlsym found libc's pthread_create, whose signature this is.
    let create = unsafe { std::mem::transmute::<usize, CreateFn>(addr) };
    let mut thread: libc::pthread_t = 0;
    // SAFETY: default attributes; `main` and `arg` are the caller's pair.
    if unsafe { create(&mut thread, ptr::null(), main, arg) } != 0 {
        return false;
    }
    // SAFETY: a thread we just created and never join.
    unsafe { libc::pthread_detach(thread) };
    true
}

/// Blocks every asynchronous signal on the calling thread: a process-directed
/// signal goes to the program's threads. Faults are still delivered here,
/// where they happen.
pub(crate) fn block_async_signals() {
    // SAFETY: a local set, filled and passed by pointer; masks only this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            libc::sigdelset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut());
    }
}
