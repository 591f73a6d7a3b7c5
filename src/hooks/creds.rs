//! The setuid family. glibc makes every thread of the process change its
//! credentials (`setxid`): it walks its thread lists, signals each thread
//! other than the caller and waits for them. A coroutine with TLS of its own
//! (`runtime::tls`) is on no list, so it calls these on its OS thread's
//! descriptor, which is. Otherwise each forwards untouched.

use libc::{c_int, gid_t, size_t, uid_t};

use crate::runtime::tls;
use crate::sys::{errno, set_errno};

/// Runs `call` as `tls::on_carrier` does, keeping its errno.
fn on_carrier(call: impl FnOnce() -> c_int) -> c_int {
    let (r, e) = tls::on_carrier(|| (call(), errno()));
    set_errno(e);
    r
}

macro_rules! creds {
    ($($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        hook! {
            $(#[$meta])*
            fn $name($($arg: $ty),*) -> c_int as real {
                // SAFETY: forwarding the caller's arguments.
                on_carrier(|| unsafe { real($($arg),*) })
            }
        }
    )*};
}

creds! {
    /// `setuid(2)`, on the OS thread's descriptor.
    fn setuid(uid: uid_t);
    /// `setgid(2)`, on the OS thread's descriptor.
    fn setgid(gid: gid_t);
    /// `seteuid(2)`, on the OS thread's descriptor.
    fn seteuid(uid: uid_t);
    /// `setegid(2)`, on the OS thread's descriptor.
    fn setegid(gid: gid_t);
    /// `setreuid(2)`, on the OS thread's descriptor.
    fn setreuid(ruid: uid_t, euid: uid_t);
    /// `setregid(2)`, on the OS thread's descriptor.
    fn setregid(rgid: gid_t, egid: gid_t);
    /// `setresuid(2)`, on the OS thread's descriptor.
    fn setresuid(ruid: uid_t, euid: uid_t, suid: uid_t);
    /// `setresgid(2)`, on the OS thread's descriptor.
    fn setresgid(rgid: gid_t, egid: gid_t, sgid: gid_t);
    /// `setgroups(2)`, on the OS thread's descriptor.
    fn setgroups(size: size_t, list: *const gid_t);
}
