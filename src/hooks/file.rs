//! Regular files and block devices: the open family, pread/pwrite and their
//! vectored forms, fsync, fdatasync; `read`/`write`/`readv`/`writev` on such
//! fds come here from io.rs. epoll cannot wait for a disk (a regular file is
//! always "ready"), so a coroutine hands a call that may wait for the disk to
//! the offload pool and parks. `PATCHALL_OFFLOAD_FILES` decides which:
//!
//! - `auto` (default): what the page cache can serve at once runs inline —
//!   reads are first tried with `RWF_NOWAIT` (the kernel refuses instead of
//!   waiting for the disk), opens with `openat2(RESOLVE_CACHED)` (refused if
//!   the path lookup would need I/O); a refused call, the rest of a partly
//!   cached read, a creating or truncating open, a write of more than
//!   `WRITE_INLINE_MAX` bytes and every fsync run on the pool. The numbers
//!   behind this are in BENCHMARKS.md, "Offload pool" (benches/offload.rs).
//! - `always`: every such call made in a coroutine runs on the pool.
//! - `off`: every call blocks the calling thread, as without patchall.
//!
//! Outside coroutines every call is libc's. Under `auto`, an `open` that could
//! wait in the kernel after its lookup (a FIFO without O_NONBLOCK waits for its
//! peer, a device may wait for its carrier) runs on the pool: a cached `O_PATH`
//! look at the path tells (`open_cannot_wait`).

use libc::{c_char, c_int, c_uint, c_void, iovec, off_t, size_t, ssize_t};

use super::blocking::offloaded;
use super::cancel;
use super::coroutine_guard;
use super::iov::{IovCursor, iov_total};
use super::real::Guard;
use crate::config::{OffloadFiles, config};
use crate::fdtable::{self, Kind};
use crate::runtime::{Family, Label};
use crate::sys::{self, errno, set_errno};

/// Names a park for a file call made on the offload pool.
const FILE: Label = Label::new("file", Family::Offload);

/// Writes up to this many bytes run inline under `auto`: a buffered write
/// only copies into the page cache. See BENCHMARKS.md, "Offload pool".
pub(crate) const WRITE_INLINE_MAX: usize = 64 << 10;

/// `openat2`'s `struct open_how`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `RESOLVE_CACHED` (Linux 5.12): fail with EAGAIN if the lookup needs I/O.
const RESOLVE_CACHED: u64 = 0x20;

/// The policy in force, and the hook guard, for a file call made in a
/// coroutine on `fd`; None: make the call as is.
fn file_call(fd: c_int) -> Option<(Guard, OffloadFiles)> {
    // A socket or pipe we already know needs neither the guard nor the
    // policy.
    if fdtable::known(fd).is_some_and(|f| f.kind != Kind::File) {
        return None;
    }
    let guard = coroutine_guard()?;
    let mode = config().offload_files;
    if mode == OffloadFiles::Off {
        return None;
    }
    let facts = fdtable::facts(fd)?;
    (facts.kind == Kind::File).then_some((guard, mode))
}

/// Where a positioned call starts: the file position, or an explicit offset.
#[derive(Clone, Copy)]
pub(crate) enum At {
    Position,
    Offset(off_t),
}

impl At {
    fn after(self, done: usize) -> At {
        match self {
            At::Position => At::Position,
            At::Offset(o) => At::Offset(o + done as off_t),
        }
    }
}

/// True if `end` is at or past the end of `fd`, a regular file: a short read
/// that got there has read everything there is.
fn at_eof(fd: c_int, at: At, done: usize) -> bool {
    let end = match at.after(done) {
        At::Offset(o) => o,
        // SAFETY: lseek(SEEK_CUR, 0) only reads the position.
        At::Position => unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) },
    };
    // SAFETY: `stat` is plain integers, for which all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    end >= 0
        // SAFETY: fstat writes only into `st`.
        && unsafe { libc::fstat(fd, &mut st) } == 0
        && st.st_mode & libc::S_IFMT == libc::S_IFREG
        && end >= st.st_size
}

/// A read of `iov` from a file in a coroutine: Some(result) if it was made
/// here, None to make it as is. `rest(done)` is the blocking call for the
/// bytes from `done` on.
pub(crate) fn read(
    fd: c_int,
    iov: *const iovec,
    iovcnt: c_int,
    at: At,
    rest: &mut dyn FnMut(usize) -> isize,
) -> Option<isize> {
    if matches!(at, At::Offset(o) if o < 0) {
        // EINVAL from the real call; to preadv2, -1 would mean "the position".
        return None;
    }
    let (guard, mode) = file_call(fd)?;
    if guard.trapped() {
        // A disk is no other party: made here, as glibc made it.
        return Some(rest(0));
    }
    let total = iov_total(iov, iovcnt)?;
    let mut done = 0;
    if mode == OffloadFiles::Auto {
        let offset = match at {
            At::Position => -1,
            At::Offset(o) => o,
        };
        // SAFETY: the caller's iovecs; RWF_NOWAIT makes the kernel refuse
        // (EAGAIN) rather than wait for the disk.
        let r = unsafe { libc::preadv2(fd, iov, iovcnt, offset, libc::RWF_NOWAIT) };
        if r == 0 || r as usize == total {
            return Some(r);
        }
        if r > 0 {
            done = r as usize;
            if at_eof(fd, at, done) {
                return Some(r);
            }
        }
        // Refused (the data is not cached), or a file system without
        // RWF_NOWAIT (EOPNOTSUPP): the pool makes the real call, which also
        // gives any other error exactly.
    }
    // SAFETY: `rest` reads into the caller's buffers, alive across the call.
    let r = unsafe { offloaded(&guard, &FILE, || rest(done)) };
    Some(match (done, r) {
        (0, r) => r,
        (done, r) if r < 0 => done as isize,
        (done, r) => (done + r as usize) as isize,
    })
}

/// A write of `len` bytes to a file in a coroutine: Some(result) if it was
/// made here (on the pool), None to make it as is.
pub(crate) fn write(fd: c_int, len: usize, call: &mut dyn FnMut() -> isize) -> Option<isize> {
    let (guard, mode) = file_call(fd)?;
    if guard.trapped() {
        return Some(call());
    }
    if mode == OffloadFiles::Auto && len <= WRITE_INLINE_MAX {
        return None;
    }
    // SAFETY: `call` writes from the caller's buffers, alive across the call.
    Some(unsafe { offloaded(&guard, &FILE, call) })
}

/// One buffer as an iovec, for the calls that take one.
fn one(buf: *const c_void, len: size_t) -> iovec {
    iovec {
        iov_base: buf.cast_mut(),
        iov_len: len,
    }
}

/// `read(2)` on a file in a coroutine (io.rs's hook asks first).
pub(crate) fn read_at_position(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    real: unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t,
) -> Option<isize> {
    let v = one(buf, count);
    read(fd, &v, 1, At::Position, &mut |done| {
        // SAFETY: `done < count`: inside the caller's buffer.
        unsafe { real(fd, buf.cast::<u8>().add(done).cast(), count - done) }
    })
}

/// `readv(2)` on a file in a coroutine (io.rs's hook asks first).
pub(crate) fn readv_at_position(
    fd: c_int,
    iov: *const iovec,
    iovcnt: c_int,
    real: unsafe extern "C" fn(c_int, *const iovec, c_int) -> ssize_t,
) -> Option<isize> {
    let mut tail = IovCursor::new(iov, iovcnt);
    read(fd, iov, iovcnt, At::Position, &mut |done| {
        let (p, n) = tail.tail_at(done, usize::MAX);
        // SAFETY: the unread part of the caller's iovecs.
        unsafe { real(fd, p, n) }
    })
}

hook! {
    /// `pread(2)`.
    fn pread(fd: c_int, buf: *mut c_void, count: size_t, offset: off_t) -> ssize_t as real {
        cancel::cancellation_point();
        let v = one(buf, count);
        read(fd, &v, 1, At::Offset(offset), &mut |done| {
            // SAFETY: `done < count`: inside the caller's buffer.
            unsafe { real(fd, buf.cast::<u8>().add(done).cast(), count - done, offset + done as off_t) }
        })
        // SAFETY: forwarding the caller's arguments.
        .unwrap_or_else(|| unsafe { real(fd, buf, count, offset) })
    }
}

alias! {
    /// `pread64`: the same call on 64-bit Linux.
    fn pread64(fd: c_int, buf: *mut c_void, count: size_t, offset: off_t) -> ssize_t = pread
}

hook! {
    /// glibc's fortified `pread`.
    fn __pread_chk(fd: c_int, buf: *mut c_void, count: size_t, offset: off_t, buflen: size_t) -> ssize_t as real {
        if count > buflen {
            // SAFETY: the real check reports the overflow and aborts.
            return unsafe { real(fd, buf, count, offset, buflen) };
        }
        // SAFETY: same contract as `pread` once the size check passed.
        unsafe { pread(fd, buf, count, offset) }
    }
}

alias! {
    /// glibc's fortified `pread64`.
    fn __pread64_chk(fd: c_int, buf: *mut c_void, count: size_t, offset: off_t, buflen: size_t) -> ssize_t = __pread_chk
}

hook! {
    /// `preadv(2)`.
    fn preadv(fd: c_int, iov: *const iovec, iovcnt: c_int, offset: off_t) -> ssize_t as real {
        cancel::cancellation_point();
        let mut tail = IovCursor::new(iov, iovcnt);
        read(fd, iov, iovcnt, At::Offset(offset), &mut |done| {
            let (p, n) = tail.tail_at(done, usize::MAX);
            // SAFETY: the unread part of the caller's iovecs.
            unsafe { real(fd, p, n, offset + done as off_t) }
        })
        // SAFETY: forwarding the caller's arguments.
        .unwrap_or_else(|| unsafe { real(fd, iov, iovcnt, offset) })
    }
}

alias! {
    /// `preadv64`: the same call on 64-bit Linux.
    fn preadv64(fd: c_int, iov: *const iovec, iovcnt: c_int, offset: off_t) -> ssize_t = preadv
}

hook! {
    /// `pwrite(2)`.
    fn pwrite(fd: c_int, buf: *const c_void, count: size_t, offset: off_t) -> ssize_t as real {
        cancel::cancellation_point();
        // SAFETY: forwarding the caller's arguments.
        let mut call = || unsafe { real(fd, buf, count, offset) };
        write(fd, count, &mut call).unwrap_or_else(call)
    }
}

alias! {
    /// `pwrite64`: the same call on 64-bit Linux.
    fn pwrite64(fd: c_int, buf: *const c_void, count: size_t, offset: off_t) -> ssize_t = pwrite
}

hook! {
    /// `pwritev(2)`.
    fn pwritev(fd: c_int, iov: *const iovec, iovcnt: c_int, offset: off_t) -> ssize_t as real {
        cancel::cancellation_point();
        // SAFETY: forwarding the caller's arguments.
        let mut call = || unsafe { real(fd, iov, iovcnt, offset) };
        match iov_total(iov, iovcnt) {
            Some(len) => write(fd, len, &mut call).unwrap_or_else(call),
            None => call(),
        }
    }
}

alias! {
    /// `pwritev64`: the same call on 64-bit Linux.
    fn pwritev64(fd: c_int, iov: *const iovec, iovcnt: c_int, offset: off_t) -> ssize_t = pwritev
}

/// fsync and fdatasync wait for the disk whatever the fd: on the pool from a
/// coroutine unless file offloading is off.
fn sync(call: impl FnOnce() -> c_int) -> c_int {
    cancel::cancellation_point();
    match coroutine_guard() {
        Some(guard) if config().offload_files != OffloadFiles::Off && !guard.trapped() => {
            // SAFETY: `call` only passes the caller's fd.
            unsafe { offloaded(&guard, &FILE, call) }
        }
        _ => call(),
    }
}

hook! {
    /// `fsync(2)`.
    fn fsync(fd: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's argument.
        sync(|| unsafe { real(fd) })
    }
}

hook! {
    /// `fdatasync(2)`.
    fn fdatasync(fd: c_int) -> c_int as real {
        // SAFETY: forwarding the caller's argument.
        sync(|| unsafe { real(fd) })
    }
}

/// `openat2` with these resolve flags: with RESOLVE_CACHED, a lookup the
/// page cache must serve (EAGAIN otherwise).
fn openat2(dirfd: c_int, path: *const c_char, flags: c_int, resolve: u64) -> c_int {
    let how = OpenHow {
        flags: flags as c_uint as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: the caller's path; `how` is a live open_how of the size passed.
    unsafe {
        crate::sys::raw_syscall!(
            libc::SYS_openat2,
            dirfd,
            path,
            &how,
            std::mem::size_of::<OpenHow>(),
        ) as c_int
    }
}

/// True if the kernel's open of `path` cannot wait once the lookup is done:
/// the user asked for O_NONBLOCK or a directory, or a cached lookup finds a
/// regular file, directory, symlink or memory device (or nothing). A FIFO waits for its peer,
/// a device may wait (a modem line for its carrier): those go to the pool.
/// The look is an `O_PATH` open, which reaches neither a FIFO's nor a driver's
/// open, so it has no effect another process could see.
/// `resolve` is the probe's `openat2` resolve flags: RESOLVE_CACHED, or 0 for
/// a trapped open, which may wait for the disk but not for a peer.
fn open_cannot_wait(dirfd: c_int, path: *const c_char, flags: c_int, resolve: u64) -> bool {
    if flags & (libc::O_NONBLOCK | libc::O_DIRECTORY | libc::O_PATH) != 0 {
        return true;
    }
    let probe = libc::O_PATH | libc::O_CLOEXEC | (flags & libc::O_NOFOLLOW);
    let fd = openat2(dirfd, path, probe, resolve);
    if fd < 0 {
        // ENOENT: the open gives ENOENT at once too; so does any refusal of
        // an uncached lookup.
        return resolve == 0 || errno() == libc::ENOENT;
    }
    // SAFETY: stat is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into `st`.
    let ok = unsafe { crate::sys::raw_syscall!(libc::SYS_fstat, fd, &mut st) } == 0;
    // The O_PATH fd just opened goes by raw system call: our `close` hook has
    // nothing to forget.
    sys::raw_close(fd);
    ok && match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR | libc::S_IFLNK => true,
        // The memory devices (/dev/null, /dev/zero, /dev/urandom…) open at once.
        libc::S_IFCHR => libc::major(st.st_rdev) == MEM_MAJOR,
        _ => false,
    }
}

/// The major number of the memory character devices (devices.txt).
const MEM_MAJOR: libc::c_uint = 1;

/// An open that `auto` may make inline: the page cache holds every path
/// component, it neither creates nor truncates (which wait for the journal),
/// and it cannot wait in the kernel (`open_cannot_wait`). Some(result) if
/// that settled it: the fd, or ENOENT from a cached negative entry; None to
/// make the real call on the pool.
fn open_cached(dirfd: c_int, path: *const c_char, flags: c_int) -> Option<c_int> {
    if flags & (libc::O_CREAT | libc::O_TRUNC) != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        return None;
    }
    let saved = errno();
    if !open_cannot_wait(dirfd, path, flags, RESOLVE_CACHED) {
        set_errno(saved);
        return None;
    }
    let fd = openat2(dirfd, path, flags, RESOLVE_CACHED);
    if fd >= 0 {
        set_errno(saved);
    }
    // Other refusals (EAGAIN: needs I/O; EINVAL: flags openat2 rejects but
    // openat ignores; ENOSYS: older kernels) are settled by the real call.
    (fd >= 0 || errno() == libc::ENOENT).then_some(fd as c_int)
}

/// Every open (a cancellation point): inline, via the cache, or on the pool,
/// then recorded.
fn open_with(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    call: impl FnOnce() -> c_int,
) -> c_int {
    cancel::cancellation_point();
    let fd = match coroutine_guard().map(|g| (g, config().offload_files)) {
        None | Some((_, OffloadFiles::Off)) => call(),
        // glibc's own opens (malloc's /proc/sys/vm/overcommit_memory under
        // an arena's lock, the loader's under its lock) run here, unless
        // the open waits for a peer (a FIFO), which is worth a park.
        Some((guard, _)) if guard.trapped() => {
            let saved = errno();
            if open_cannot_wait(dirfd, path, flags, 0) {
                set_errno(saved);
                call()
            } else {
                set_errno(saved);
                // SAFETY: `call` uses the caller's path, alive across the call.
                unsafe { offloaded(&guard, &FILE, call) }
            }
        }
        Some((guard, mode)) => match (mode == OffloadFiles::Auto)
            .then(|| open_cached(dirfd, path, flags))
            .flatten()
        {
            Some(fd) => fd,
            // SAFETY: `call` uses the caller's path, alive across the call.
            None => unsafe { offloaded(&guard, &FILE, call) },
        },
    };
    if fd >= 0 {
        let e = errno();
        fdtable::opened(fd);
        set_errno(e);
    }
    fd
}

hook! {
    /// `open(2)`, variadic in C: see `hook!` on the fixed `mode` argument.
    fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        open_with(libc::AT_FDCWD, path, flags, || unsafe { real(path, flags, mode) })
    }
}

alias! {
    /// `open64`: the same call on 64-bit Linux.
    fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int = open
}
alias! {
    /// glibc's exported alias of `open`.
    fn __open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int = open
}
alias! {
    /// glibc's exported alias of `open64`.
    fn __open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int = open
}

hook! {
    /// `openat(2)`, variadic in C.
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        open_with(dirfd, path, flags, || unsafe { real(dirfd, path, flags, mode) })
    }
}

alias! {
    /// `openat64`: the same call on 64-bit Linux.
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int = openat
}

hook! {
    /// `creat(2)`: always creates, so never inline under `auto`.
    fn creat(path: *const c_char, mode: c_uint) -> c_int as real {
        let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
        // SAFETY: forwarding the caller's arguments.
        open_with(libc::AT_FDCWD, path, flags, || unsafe { real(path, mode) })
    }
}

alias! {
    /// `creat64`: the same call on 64-bit Linux.
    fn creat64(path: *const c_char, mode: c_uint) -> c_int = creat
}

/// `_FORTIFY_SOURCE`'s opens take no mode and abort on O_CREAT/O_TMPFILE:
/// those go straight to the real check.
fn refused_by_fortify(flags: c_int) -> bool {
    flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE
}

hook! {
    /// glibc's fortified `open`.
    fn __open_2(path: *const c_char, flags: c_int) -> c_int as real {
        if refused_by_fortify(flags) {
            // SAFETY: the real check aborts, as it should.
            return unsafe { real(path, flags) };
        }
        // SAFETY: forwarding the caller's arguments.
        open_with(libc::AT_FDCWD, path, flags, || unsafe { real(path, flags) })
    }
}

alias! {
    /// glibc's fortified `open64`.
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int = __open_2
}

hook! {
    /// glibc's fortified `openat`.
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int as real {
        if refused_by_fortify(flags) {
            // SAFETY: the real check aborts, as it should.
            return unsafe { real(dirfd, path, flags) };
        }
        // SAFETY: forwarding the caller's arguments.
        open_with(dirfd, path, flags, || unsafe { real(dirfd, path, flags) })
    }
}

alias! {
    /// glibc's fortified `openat64`.
    fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int = __openat_2
}
