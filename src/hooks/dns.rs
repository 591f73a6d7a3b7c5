//! Name resolution: getaddrinfo, getnameinfo and the gethostby* family.
//!
//! glibc resolves inside these entry points (files, DNS over its own sockets,
//! NSS modules), below any hook, so a coroutine hands the whole call to the
//! offload pool and parks; gevent's threadpool resolver does the same. Outside
//! coroutines every call is libc's, untouched.
//!
//! `getaddrinfo`'s list is made by the real function (on a pool thread) and
//! freed by the real `freeaddrinfo`, which needs no hook. h_errno is per
//! thread: the pool thread starts with the caller's and the caller gets back
//! what the lookup left.
//!
//! `gethostbyname`, `gethostbyname2` and `gethostbyaddr` return static storage,
//! valid until the next call. In a coroutine each of them gets its own storage
//! per coroutine (filled by the reentrant `_r` call on the pool), so a
//! coroutine that parks in a lookup never finds another's answer in its result;
//! the pointer stays valid until that coroutine's next call of the same
//! function, or its end.

use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};

use super::blocking::offloaded;
use super::coroutine_guard;
use crate::runtime::{Family, Label, control};

unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

fn h_errno() -> c_int {
    // SAFETY: always a valid pointer to this thread's h_errno.
    unsafe { *__h_errno_location() }
}

fn set_h_errno(value: c_int) {
    // SAFETY: as in `h_errno`.
    unsafe { *__h_errno_location() = value }
}

/// glibc's `NETDB_INTERNAL`: see errno.
const NETDB_INTERNAL: c_int = -1;
/// The first buffer for a static-result lookup, and the largest (glibc's own
/// wrappers grow theirs the same way, without a limit).
const FIRST_BUFFER: usize = 1024;
const MAX_BUFFER: usize = 16 << 20;

/// Runs a resolver call on the offload pool from a coroutine, with the
/// caller's h_errno carried there and back; elsewhere, here.
fn resolve<R>(call: impl FnOnce() -> R) -> R {
    let Some(guard) = coroutine_guard() else {
        return call();
    };
    let mine = h_errno();
    // SAFETY: `call` uses only the caller's arguments, which outlive this
    // function; h_errno is carried explicitly.
    let (r, theirs) = unsafe {
        offloaded(
            &guard,
            &const { Label::new("resolver", Family::Offload) },
            || {
                set_h_errno(mine);
                let r = call();
                (r, h_errno())
            },
        )
    };
    set_h_errno(theirs);
    r
}

hook! {
    /// `getaddrinfo(3)`: on the offload pool from a coroutine.
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        resolve(|| unsafe { real(node, service, hints, res) })
    }
}

hook! {
    /// `getnameinfo(3)`: on the offload pool from a coroutine.
    fn getnameinfo(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        resolve(|| unsafe { real(sa, salen, host, hostlen, serv, servlen, flags) })
    }
}

hook! {
    /// `gethostbyname_r(3)`: on the offload pool from a coroutine.
    fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        resolve(|| unsafe { real(name, ret, buf, buflen, result, h_errnop) })
    }
}

hook! {
    /// `gethostbyname2_r(3)`: on the offload pool from a coroutine.
    fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        resolve(|| unsafe { real(name, af, ret, buf, buflen, result, h_errnop) })
    }
}

hook! {
    /// `gethostbyaddr_r(3)`: on the offload pool from a coroutine.
    fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, ty: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        resolve(|| unsafe { real(addr, len, ty, ret, buf, buflen, result, h_errnop) })
    }
}

/// One function's "static" result, kept per coroutine.
struct HostBuf {
    ent: hostent,
    buf: Vec<u8>,
}

impl Default for HostBuf {
    fn default() -> HostBuf {
        HostBuf {
            // SAFETY: an all-zero hostent is valid (null pointers, zero sizes).
            ent: unsafe { std::mem::zeroed() },
            buf: Vec::new(),
        }
    }
}

// SAFETY: the pointers in `ent` point into `buf`, owned alongside; the value is
// only touched by its coroutine, or by a pool thread while that coroutine waits.
unsafe impl Send for HostBuf {}

/// The per-coroutine storage of the three non-reentrant lookups (glibc keeps
/// one static buffer per function, too).
#[derive(Default)]
struct HostStatics {
    byname: HostBuf,
    byname2: HostBuf,
    byaddr: HostBuf,
}

/// A reentrant lookup into caller-given storage: (ret, buf, buflen, result, h_errnop).
type Reentrant<'a> =
    &'a dyn Fn(*mut hostent, *mut c_char, size_t, *mut *mut hostent, *mut c_int) -> c_int;

/// A non-reentrant lookup in a coroutine: its `_r` twin fills the coroutine's
/// own storage on the offload pool, retried with a doubled buffer on ERANGE as
/// glibc's wrappers do, which also set h_errno only when the lookup reported one.
fn static_result(pick: fn(&mut HostStatics) -> &mut HostBuf, lookup: Reentrant) -> *mut hostent {
    let found = control::with_scratch::<HostStatics, _>(|statics| {
        let slot = pick(statics);
        resolve(|| {
            let mut size = slot.buf.len().max(FIRST_BUFFER);
            loop {
                slot.buf.resize(size, 0);
                let mut result = std::ptr::null_mut();
                let mut herr = 0;
                let r = lookup(
                    &mut slot.ent,
                    slot.buf.as_mut_ptr().cast(),
                    slot.buf.len(),
                    &mut result,
                    &mut herr,
                );
                if r == libc::ERANGE && herr == NETDB_INTERNAL && size < MAX_BUFFER {
                    size *= 2;
                    continue;
                }
                if herr != 0 {
                    set_h_errno(herr);
                }
                return result;
            }
        })
    });
    found.unwrap_or(std::ptr::null_mut())
}

hook! {
    /// `gethostbyname(3)`: per-coroutine result storage in a coroutine.
    fn gethostbyname(name: *const c_char) -> *mut hostent as real {
        if coroutine_guard().is_none() {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(name) };
        }
        static_result(|s| &mut s.byname, &|ret, buf, len, result, herr| {
            // SAFETY: the caller's name; our storage, of `len` bytes.
            unsafe { gethostbyname_r(name, ret, buf, len, result, herr) }
        })
    }
}

hook! {
    /// `gethostbyname2(3)`: per-coroutine result storage in a coroutine.
    fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent as real {
        if coroutine_guard().is_none() {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(name, af) };
        }
        static_result(|s| &mut s.byname2, &|ret, buf, len, result, herr| {
            // SAFETY: the caller's arguments; our storage, of `len` bytes.
            unsafe { gethostbyname2_r(name, af, ret, buf, len, result, herr) }
        })
    }
}

hook! {
    /// `gethostbyaddr(3)`: per-coroutine result storage in a coroutine.
    fn gethostbyaddr(addr: *const c_void, len: socklen_t, ty: c_int) -> *mut hostent as real {
        if coroutine_guard().is_none() {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(addr, len, ty) };
        }
        static_result(|s| &mut s.byaddr, &|ret, buf, size, result, herr| {
            // SAFETY: the caller's arguments; our storage, of `size` bytes.
            unsafe { gethostbyaddr_r(addr, len, ty, ret, buf, size, result, herr) }
        })
    }
}
