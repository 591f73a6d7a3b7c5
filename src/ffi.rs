//! The C API (`include/patchall.h`): the Rust API behind `extern "C"` functions.
//!
//! Coroutines spawned here and with [`crate::spawn`] are the same kind, on the same
//! per-thread schedulers. A coroutine is named by its id (as [`crate::Coroutine::id`]),
//! never by a pointer: ids are never reused, so joining twice, joining a detached
//! coroutine or passing garbage gives `ESRCH` instead of a use-after-free.
//!
//! No panic crosses the C ABI (docs/DESIGN.md, contract 7): every function runs its
//! body under `catch_unwind` and turns a panic, which can only be a bug of ours,
//! into `ENOTRECOVERABLE` (or a failed spawn).

use std::collections::BTreeMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::coroutine::{Builder, JoinHandle};
use crate::runtime;
use crate::sys::{errno, set_errno};

/// `pa_options`: how to spawn a coroutine. All-zero means the defaults.
#[repr(C)]
#[derive(Debug)]
pub struct PaOptions {
    /// A NUL-terminated name (copied; invalid UTF-8 is replaced), or NULL.
    pub name: *const c_char,
    /// Usable stack bytes (rounded up to pages, at least 16 KiB), or 0 for
    /// `PATCHALL_STACK_SIZE`.
    pub stack_size: usize,
}

/// `void *(*)(void *)`, the start routine `pthread_create` takes.
pub type PaStartFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

/// A C pointer carried into a coroutine (its argument) or out of it (its result).
struct CPtr(*mut c_void);

// SAFETY: patchall never dereferences the pointer; it only hands it back to C code,
// exactly as `pthread_create` hands `arg` to a new thread and `pthread_join` gives
// back the result on whichever thread joins. Whether the pointee may be used there
// is the C caller's contract, the same one pthreads states.
unsafe impl Send for CPtr {}

impl CPtr {
    /// Takes the pointer out. A method, so that a closure captures the whole
    /// `CPtr` (Send) rather than its raw-pointer field (not Send).
    fn into_inner(self) -> *mut c_void {
        self.0
    }
}

/// Joinable coroutines by id: a handle leaves at `pa_join` or `pa_detach`.
static HANDLES: Mutex<BTreeMap<u64, JoinHandle<CPtr>>> = Mutex::new(BTreeMap::new());

fn handles() -> MutexGuard<'static, BTreeMap<u64, JoinHandle<CPtr>>> {
    HANDLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `body`; a panic (a bug in the runtime) becomes `on_panic` instead of
/// unwinding into C, which would abort the process. The caller's errno is
/// restored: the header promises it is left alone.
fn no_unwind<R>(on_panic: R, body: impl FnOnce() -> R) -> R {
    let saved = errno();
    let result = panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic);
    set_errno(saved);
    result
}

/// `pa_spawn`: starts `start(arg)` as a coroutine on this thread's scheduler.
///
/// Returns the coroutine's id (never 0), or 0 with errno set: `EINVAL` (`start`
/// is NULL), `ENOMEM` (no memory for the stack), `EAGAIN` (any other shortage,
/// e.g. no fd for the scheduler's epoll).
///
/// # Safety
///
/// `opts` is NULL or points to a valid `pa_options` whose `name` is NULL or a
/// NUL-terminated string. `start` must be safe to call with `arg` on this thread,
/// and must return normally (no `longjmp` out of it, no `pthread_exit`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pa_spawn(
    start: Option<PaStartFn>,
    arg: *mut c_void,
    opts: *const PaOptions,
) -> u64 {
    let spawned = no_unwind(Err(libc::EAGAIN), || {
        let start = start.ok_or(libc::EINVAL)?;
        let mut builder = Builder::new();
        // SAFETY: the caller passes NULL or a valid `pa_options` (see above).
        if let Some(opts) = unsafe { opts.as_ref() } {
            if !opts.name.is_null() {
                // SAFETY: a non-NULL name is NUL-terminated (see above).
                let name = unsafe { CStr::from_ptr(opts.name) };
                builder = builder.name(name.to_string_lossy());
            }
            if opts.stack_size != 0 {
                builder = builder.stack_size(opts.stack_size);
            }
        }
        let arg = CPtr(arg);
        let handle = builder
            .spawn(move || {
                crate::runtime::note_entry(crate::runtime::Entry::Code(start as usize));
                // SAFETY: the caller promised `start` may be called with `arg` here.
                CPtr(unsafe { start(arg.into_inner()) })
            })
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOMEM) => libc::ENOMEM,
                _ => libc::EAGAIN,
            })?;
        let id = handle.coroutine().id();
        handles().insert(id, handle);
        Ok(id)
    });
    spawned.unwrap_or_else(|err| {
        set_errno(err);
        0
    })
}

/// `pa_join`: waits for coroutine `co` to return and stores its result in
/// `*retval` (if `retval` is not NULL). Returns 0, `ESRCH` (no joinable coroutine
/// with that id: never spawned, already joined, or detached), `EDEADLK` (`co` is
/// the caller), or `ENOTRECOVERABLE` (the coroutine ended in a runtime bug).
///
/// # Safety
///
/// `retval` is NULL or valid for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pa_join(co: u64, retval: *mut *mut c_void) -> c_int {
    no_unwind(libc::ENOTRECOVERABLE, || {
        if co != 0 && pa_self() == co {
            return libc::EDEADLK;
        }
        let Some(handle) = handles().remove(&co) else {
            return libc::ESRCH;
        };
        match handle.join() {
            Ok(result) => {
                // SAFETY: the caller passes NULL or a writable pointer slot.
                if let Some(slot) = unsafe { retval.as_mut() } {
                    *slot = result.into_inner();
                }
                0
            }
            Err(_) => libc::ENOTRECOVERABLE,
        }
    })
}

/// `pa_detach`: gives up the right to join `co`; it runs to completion on its
/// own. Returns 0 or `ESRCH`.
#[unsafe(no_mangle)]
pub extern "C" fn pa_detach(co: u64) -> c_int {
    no_unwind(libc::ENOTRECOVERABLE, || match handles().remove(&co) {
        Some(_) => 0,
        None => libc::ESRCH,
    })
}

/// `pa_sleep_ms`: parks the calling coroutine for `ms` milliseconds; on a plain
/// thread, runs this thread's coroutines meanwhile. Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn pa_sleep_ms(ms: u64) -> c_int {
    sleep(Duration::from_millis(ms))
}

/// `pa_sleep_ns`: as [`pa_sleep_ms`], in nanoseconds.
#[unsafe(no_mangle)]
pub extern "C" fn pa_sleep_ns(ns: u64) -> c_int {
    sleep(Duration::from_nanos(ns))
}

fn sleep(dur: Duration) -> c_int {
    no_unwind(libc::ENOTRECOVERABLE, || {
        crate::sleep(dur);
        0
    })
}

/// `pa_yield`: lets every other runnable coroutine run once. Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn pa_yield() -> c_int {
    no_unwind(libc::ENOTRECOVERABLE, || {
        crate::yield_now();
        0
    })
}

/// `pa_self`: the calling coroutine's id, or 0 on a plain thread.
#[unsafe(no_mangle)]
pub extern "C" fn pa_self() -> u64 {
    runtime::current_task().map_or(0, |task| task.id)
}

/// `pa_in_coroutine`: 1 inside a coroutine, 0 elsewhere.
#[unsafe(no_mangle)]
pub extern "C" fn pa_in_coroutine() -> c_int {
    c_int::from(runtime::in_coroutine())
}

/// `pa_run`: on a plain thread, runs this thread's coroutines until all of them
/// (and all they spawn) are done; returns 0. Inside a coroutine it would wait for
/// itself: returns `EDEADLK` at once.
#[unsafe(no_mangle)]
pub extern "C" fn pa_run() -> c_int {
    no_unwind(libc::ENOTRECOVERABLE, || {
        if runtime::in_coroutine() {
            return libc::EDEADLK;
        }
        crate::run();
        0
    })
}

/// `pa_print_run_info`: writes the dump of every coroutine (as
/// `PATCHALL_DUMP_SIGNAL` prints it) to `fd`. Returns 0, or an errno value
/// if a write failed (errno itself is left alone).
#[unsafe(no_mangle)]
pub extern "C" fn pa_print_run_info(fd: c_int) -> c_int {
    no_unwind(libc::ENOTRECOVERABLE, || {
        match runtime::dump::print_to(fd) {
            Ok(()) => 0,
            Err(e) => e,
        }
    })
}
