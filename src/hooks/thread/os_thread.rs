//! The `pthread_*` functions that take a thread handle and act on an OS
//! thread (signals, affinity, scheduling, CPU clock) act on the one that runs
//! the green thread, which every coroutine of that thread shares; its name and
//! attributes are the green thread's own.

use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use libc::{c_char, c_int, c_void, clockid_t, pthread_attr_t, pthread_t, size_t};

use super::record::DETACHED;
use super::{NAME_LEN, current, record};
use crate::config::{StackMode, config};
use crate::runtime::{self, stack::GUARD_GAP};

/// The OS thread a handle stands for: itself, or the one running a green
/// thread (ESRCH once that has finished).
fn os_thread(th: pthread_t) -> Result<pthread_t, c_int> {
    match record(th) {
        None => Ok(th),
        Some(rec) if rec.finished() => Err(libc::ESRCH),
        Some(rec) => Ok(rec.os_thread.load(Relaxed) as pthread_t),
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
