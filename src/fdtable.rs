//! Per-fd facts the hooks need: what kind of file it is, whether the *user* asked
//! for non-blocking mode, whether *we* set O_NONBLOCK, and the user's socket
//! timeouts. Kept per fd number, reset when the fd is created or closed through a
//! hook; an fd we never saw created is examined (fstat, F_GETFL) on first use.
//!
//! This module is the fds' lifecycle: a hook reports every fd it makes
//! (`created`, `opened`, `duplicated`) and every fd about to be closed or
//! replaced (`closing`, `closing_range`), and the runtime's reactor hears of
//! each from here. The facts live in the runtime's one per-fd table
//! (`reactor::FD_REGS`), beside the reactor's registration: the reactor, a
//! layer below, must reach its part by fd number in its poll loop.
//!
//! The kernel keeps file status flags and socket timeouts per open file
//! description, which every `dup` of an fd shares. Each fd keeps its own copy
//! (a data call reads one word, as before); fds that a hooked dup made share a
//! group number, and a change made through one of them is written to all of
//! them (`for_group`: a walk of the table, only on a flag change of a dup'ed fd).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::runtime::reactor::{FD_REGS, FdFacts};
use crate::sys::raw_fcntl;

/// What an fd refers to, as far as blocking is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Regular file, block device, directory: never "not ready"; offload territory.
    File,
    Socket,
    /// Pipes, FIFOs, ttys, eventfds and other pollable descriptors.
    Stream,
}

const KNOWN: u32 = 1 << 0;
const KIND_SOCKET: u32 = 1 << 1;
const KIND_FILE: u32 = 1 << 2;
/// The user asked for non-blocking mode (O_NONBLOCK, SOCK_NONBLOCK, FIONBIO).
const USER_NONBLOCK: u32 = 1 << 3;
/// We set O_NONBLOCK on the open file; the user did not.
const WE_SET_NONBLOCK: u32 = 1 << 4;
/// Created through a hook in this process: no other process shares it yet.
const OURS: u32 = 1 << 5;
/// A TCP stream socket: a read shorter than asked emptied its receive queue
/// (unlike a datagram, a unix stream, which stops where the writer changes,
/// or a packet-mode pipe).
const TCP: u32 = 1 << 6;

/// The facts of `fd`, if its page of the table exists.
#[inline]
fn entry(fd: i32) -> Option<&'static FdFacts> {
    FD_REGS.get(fd).map(|r| &r.facts)
}

/// The facts of `fd`, mapping its page of the table on first use.
fn entry_or_create(fd: i32) -> Option<&'static FdFacts> {
    FD_REGS.get_or_create(fd).map(|r| &r.facts)
}

/// `f` on every fd the table has a page for.
fn for_each_entry(mut f: impl FnMut(i32, &FdFacts)) {
    FD_REGS.for_each(|fd, r| f(fd, &r.facts));
}

/// The next group number (0 means none).
static NEXT_GROUP: AtomicU32 = AtomicU32::new(1);

/// Calls `f` on the entry of `fd` and on those of every fd sharing its open
/// file description.
fn for_group(fd: i32, f: impl Fn(&FdFacts)) {
    let Some(entry) = entry(fd) else { return };
    f(entry);
    let group = entry.group.load(Ordering::Acquire);
    if group == 0 {
        return;
    }
    for_each_entry(|other, e| {
        if other != fd && e.group.load(Ordering::Acquire) == group {
            f(e);
        }
    });
}

/// A snapshot of one fd's facts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    pub(crate) kind: Kind,
    pub(crate) user_nonblock: bool,
    pub(crate) we_set_nonblock: bool,
    pub(crate) ours: bool,
    pub(crate) tcp: bool,
}

fn decode(bits: u32) -> Facts {
    let kind = if bits & KIND_SOCKET != 0 {
        Kind::Socket
    } else if bits & KIND_FILE != 0 {
        Kind::File
    } else {
        Kind::Stream
    };
    Facts {
        kind,
        user_nonblock: bits & USER_NONBLOCK != 0,
        we_set_nonblock: bits & WE_SET_NONBLOCK != 0,
        ours: bits & OURS != 0,
        tcp: bits & TCP != 0,
    }
}

fn kind_bits(kind: Kind) -> u32 {
    match kind {
        Kind::Socket => KIND_SOCKET,
        Kind::File => KIND_FILE,
        Kind::Stream => 0,
    }
}

/// The facts for `fd` without any system call, if we know them.
#[inline]
pub(crate) fn known(fd: i32) -> Option<Facts> {
    let bits = entry(fd)?.bits.load(Ordering::Acquire);
    (bits & KNOWN != 0).then(|| decode(bits))
}

/// True if we set O_NONBLOCK on `fd` behind the user's back (cheap: hot path).
#[inline]
pub(crate) fn we_set_nonblock(fd: i32) -> bool {
    known(fd).is_some_and(|f| f.we_set_nonblock && !f.user_nonblock)
}

/// The facts for `fd`, examining it on first use. None if the fd is not open.
#[inline]
pub(crate) fn facts(fd: i32) -> Option<Facts> {
    known(fd).or_else(|| examine(fd))
}

/// Learns what `fd` is, with system calls, and records it: once per fd we did
/// not see created. Out of line, so that the hot path of every hooked call is
/// a load and a few tests, not this function's frame (callgrind: 52
/// instructions per call with this inline, one echo round trip makes two).
#[cold]
#[inline(never)]
fn examine(fd: i32) -> Option<Facts> {
    // SAFETY: `stat` is plain integers, for which all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into `st`; a bad fd gives an error.
    if unsafe { crate::sys::raw_syscall!(libc::SYS_fstat, fd, &mut st) } < 0 {
        return None;
    }
    let flags = raw_fcntl(fd, libc::F_GETFL, 0);
    if flags < 0 {
        return None;
    }
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFREG | libc::S_IFBLK | libc::S_IFDIR => Kind::File,
        _ => Kind::Stream,
    };
    let mut bits = KNOWN | kind_bits(kind);
    if flags & libc::O_NONBLOCK as libc::c_long != 0 {
        bits |= USER_NONBLOCK;
    }
    let entry = entry_or_create(fd)?;
    if kind == Kind::Socket && is_tcp(fd) {
        bits |= TCP;
    }
    if kind == Kind::Socket {
        // Timeouts set before we could see them (inherited, or set by glibc).
        for (opt, slot) in [
            (libc::SO_RCVTIMEO, &entry.rcvtimeo_us),
            (libc::SO_SNDTIMEO, &entry.sndtimeo_us),
        ] {
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `tv`.
            let ok = unsafe {
                crate::sys::raw_syscall!(
                    libc::SYS_getsockopt,
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    &mut tv,
                    &mut len,
                )
            } == 0;
            if ok {
                // Linux accepts timeouts of up to ~10^16 s: saturate, never overflow.
                let us = (tv.tv_sec as u64)
                    .saturating_mul(1_000_000)
                    .saturating_add(tv.tv_usec as u64);
                slot.store(us, Ordering::Relaxed);
            }
        }
    }
    // Someone may have recorded this fd meanwhile; theirs is at least as fresh.
    let _ = entry
        .bits
        .compare_exchange(0, bits, Ordering::AcqRel, Ordering::Acquire);
    Some(decode(entry.bits.load(Ordering::Acquire)))
}

/// True for a TCP stream socket (two `getsockopt`s: once per fd we did not see
/// created).
fn is_tcp(fd: i32) -> bool {
    let opt = |name: libc::c_int| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`.
        let r = unsafe {
            crate::sys::raw_syscall!(
                libc::SYS_getsockopt,
                fd,
                libc::SOL_SOCKET,
                name,
                &mut v,
                &mut len,
            )
        };
        (r == 0).then_some(v)
    };
    opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && opt(libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP)
}

/// True when `socket(domain, ty, protocol)` makes a TCP stream socket.
pub(crate) fn makes_tcp(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> bool {
    matches!(domain, libc::AF_INET | libc::AF_INET6)
        && ty & 0xf == libc::SOCK_STREAM
        && matches!(protocol, 0 | libc::IPPROTO_TCP)
}

/// Records an fd a hook just created.
pub(crate) fn created(fd: i32, kind: Kind, user_nonblock: bool) {
    created_as(fd, kind, user_nonblock, false);
}

/// `created`, for a socket that may be TCP.
pub(crate) fn created_as(fd: i32, kind: Kind, user_nonblock: bool, tcp: bool) {
    crate::runtime::fd_created(fd);
    if let Some(entry) = entry_or_create(fd) {
        let mut bits = KNOWN | OURS | kind_bits(kind);
        if user_nonblock {
            bits |= USER_NONBLOCK;
        }
        if tcp {
            bits |= TCP;
        }
        entry.rcvtimeo_us.store(0, Ordering::Relaxed);
        entry.sndtimeo_us.store(0, Ordering::Relaxed);
        entry.group.store(0, Ordering::Release);
        entry.bits.store(bits, Ordering::Release);
    }
}

/// Records an fd `open` just returned: whatever was known of its number is
/// stale; its facts are examined on first use.
pub(crate) fn opened(fd: i32) {
    crate::runtime::fd_created(fd);
    forget(fd);
}

/// Records that `new` now refers to the same open file as `old` (dup family).
pub(crate) fn duplicated(old: i32, new: i32) {
    crate::runtime::fd_created(new);
    // Known before it is shared, so that no member of the group is examined
    // later (its F_GETFL would show an O_NONBLOCK we set as the user's).
    let _ = facts(old);
    let (Some(from), Some(to)) = (entry_or_create(old), entry_or_create(new)) else {
        forget(new);
        return;
    };
    let mut group = from.group.load(Ordering::Acquire);
    if group == 0 {
        let fresh = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
        group = match from
            .group
            .compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => fresh,
            Err(theirs) => theirs,
        };
    }
    to.group.store(group, Ordering::Release);
    to.rcvtimeo_us
        .store(from.rcvtimeo_us.load(Ordering::Relaxed), Ordering::Relaxed);
    to.sndtimeo_us
        .store(from.sndtimeo_us.load(Ordering::Relaxed), Ordering::Relaxed);
    to.bits
        .store(from.bits.load(Ordering::Acquire), Ordering::Release);
}

/// Forgets everything about `fd` (it is being closed or replaced).
pub(crate) fn forget(fd: i32) {
    if let Some(entry) = entry(fd) {
        entry.bits.store(0, Ordering::Release);
        entry.group.store(0, Ordering::Release);
        entry.rcvtimeo_us.store(0, Ordering::Relaxed);
        entry.sndtimeo_us.store(0, Ordering::Relaxed);
    }
}

/// `fd` is about to be closed, or replaced by a `dup2`/`dup3` onto it: the
/// one close path. Coroutines waiting on it (on any thread) wake with EBADF
/// and its registrations go before the number can be reused
/// (`runtime::fd_closing`); what was known of it is forgotten.
pub(crate) fn closing(fd: i32) {
    crate::runtime::fd_closing(fd);
    forget(fd);
}

/// `closing` for every fd in `first..=last` (`close_range`, `closefrom`)
/// that `skip` does not exclude; only numbers the table has pages for are
/// visited (no other fd was ever registered or examined).
pub(crate) fn closing_range(first: u32, last: u32, skip: impl Fn(i32) -> bool) {
    FD_REGS.for_each(|fd, _| {
        if (first..=last).contains(&(fd as u32)) && !skip(fd) {
            closing(fd);
        }
    });
}

/// Records the user's wish for (non-)blocking mode on `fd` and the fds sharing
/// its open file description. An fd we know nothing of is left alone: its real
/// flags will be read when it is first examined.
pub(crate) fn set_user_nonblock(fd: i32, on: bool) {
    if known(fd).is_none() {
        return;
    }
    for_group(fd, |entry| {
        if entry.bits.load(Ordering::Acquire) & KNOWN == 0 {
            return;
        }
        if on {
            entry.bits.fetch_or(USER_NONBLOCK, Ordering::AcqRel);
        } else {
            entry.bits.fetch_and(!USER_NONBLOCK, Ordering::AcqRel);
        }
    });
}

/// Sets O_NONBLOCK on an fd that is ours and blocking, so a coroutine can wait for
/// it. Returns false (and changes nothing) if the fd is shared with others.
pub(crate) fn make_nonblocking(fd: i32) -> bool {
    let Some(f) = facts(fd) else { return false };
    if f.we_set_nonblock || f.user_nonblock {
        return true;
    }
    if !f.ours {
        return false;
    }
    crate::runtime::engage();
    let flags = raw_fcntl(fd, libc::F_GETFL, 0);
    if flags < 0 || raw_fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK as libc::c_long) < 0 {
        return false;
    }
    for_group(fd, |entry| {
        if entry.bits.load(Ordering::Acquire) & KNOWN != 0 {
            entry.bits.fetch_or(WE_SET_NONBLOCK, Ordering::AcqRel);
        }
    });
    true
}

/// Who is about to share this process's open files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// The parent after `fork`: fds without FD_CLOEXEC stay shared with the
    /// child even after it execs.
    ForkParent,
    /// The child after `fork`: every fd is shared with the parent.
    ForkChild,
    /// A program is about to be exec'd (here, or by `posix_spawn`) and keeps
    /// every fd without FD_CLOEXEC: it must find the flags the user set.
    Exec,
}

/// Updates the facts for fds that other processes now share (contract 4): none
/// is ours to make non-blocking any more, and before an exec the O_NONBLOCK we
/// set on an inherited fd is taken back.
pub(crate) fn sharing(who: Sharing) {
    for_each_entry(|fd, entry| {
        let bits = entry.bits.load(Ordering::Acquire);
        if bits & (OURS | WE_SET_NONBLOCK) == 0 {
            return;
        }
        if who != Sharing::ForkChild
            && raw_fcntl(fd, libc::F_GETFD, 0) & libc::FD_CLOEXEC as libc::c_long != 0
        {
            return;
        }
        if who == Sharing::Exec {
            release(fd);
        }
        entry.bits.fetch_and(!OURS, Ordering::AcqRel);
    });
}

/// Gives `fd` back the flags the user set, if we set O_NONBLOCK on it: it is
/// about to be handed to another program (`posix_spawn`'s dup2, an exec).
pub(crate) fn release(fd: i32) {
    let Some(entry) = entry(fd) else { return };
    let bits = entry.bits.load(Ordering::Acquire);
    if bits & WE_SET_NONBLOCK == 0 {
        return;
    }
    if bits & USER_NONBLOCK == 0 {
        let flags = raw_fcntl(fd, libc::F_GETFL, 0);
        if flags >= 0 {
            raw_fcntl(
                fd,
                libc::F_SETFL,
                flags & !(libc::O_NONBLOCK as libc::c_long),
            );
        }
    }
    // The open file description is another program's too now.
    for_group(fd, |entry| {
        entry
            .bits
            .fetch_and(!(WE_SET_NONBLOCK | OURS), Ordering::AcqRel);
    });
}

/// Which socket timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timeout {
    Recv,
    Send,
}

/// Records a socket timeout of `fd`, and of the fds sharing its socket.
pub(crate) fn set_timeout(fd: i32, which: Timeout, value: Option<Duration>) {
    if entry_or_create(fd).is_none() {
        return;
    }
    let us = value.map_or(0, |d| d.as_micros().clamp(1, u64::MAX as u128) as u64);
    for_group(fd, |entry| match which {
        Timeout::Recv => entry.rcvtimeo_us.store(us, Ordering::Relaxed),
        Timeout::Send => entry.sndtimeo_us.store(us, Ordering::Relaxed),
    });
}

pub(crate) fn timeout(fd: i32, which: Timeout) -> Option<Duration> {
    let entry = entry(fd)?;
    let us = match which {
        Timeout::Recv => entry.rcvtimeo_us.load(Ordering::Relaxed),
        Timeout::Send => entry.sndtimeo_us.load(Ordering::Relaxed),
    };
    (us != 0).then(|| Duration::from_micros(us))
}
