//! Shared by the hook tests: a ticker that proves a coroutine parked instead of
//! blocking its thread, both faces of a data call (through our hook, or the raw
//! system call that bypasses it), and the scenarios every data call must pass.
#![allow(dead_code)] // each test crate uses part of it

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

/// A call's result as the kernel reports it: a count, or errno.
pub type Outcome = Result<usize, i32>;

pub fn outcome(r: isize) -> Outcome {
    if r < 0 { Err(errno()) } else { Ok(r as usize) }
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Which way a call is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    /// Through libc's name, hence through our hook.
    Hooked,
    /// `syscall(SYS_…)`, which no hook sees: the kernel's own answer.
    Raw,
}

/// A data call that fills a buffer from an fd (read, readv, recv…).
pub type ReadFn = fn(Face, i32, &mut [u8]) -> Outcome;
/// A data call that writes a buffer to an fd (write, writev, send…).
pub type WriteFn = fn(Face, i32, &[u8]) -> Outcome;
/// Makes a connected (reader, writer) pair; `nonblocking` as the user's wish.
pub type PairFn = fn(nonblocking: bool) -> (i32, i32);

/// Runs `call` in a coroutine while a ticker coroutine on the same thread counts.
/// Returns the call's value and how many ticks happened while it ran: zero means
/// the call blocked the thread instead of parking.
pub fn in_coroutine<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> (T, usize) {
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (t, s) = (ticks.clone(), stop.clone());
    let ticker = patchall::spawn(move || {
        while !s.load(SeqCst) {
            t.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    let t = ticks.clone();
    let worker = patchall::spawn(move || {
        let before = t.load(SeqCst);
        let value = call();
        (value, t.load(SeqCst) - before)
    })
    .unwrap();
    let result = worker.join();
    stop.store(true, SeqCst);
    ticker.join().unwrap();
    result.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Runs `f` on a plain thread after `ms` milliseconds.
pub fn after(ms: u64, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        f();
    })
}

pub fn close(fd: i32) {
    // SAFETY: closing an fd the test owns.
    unsafe { libc::close(fd) };
}

/// The file status flags as the kernel has them (the hooks may hide O_NONBLOCK).
pub fn raw_getfl(fd: i32) -> i32 {
    // SAFETY: a raw fcntl system call that only reads the fd's flags.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) as i32 }
}

/// A number that is never an open fd here (above RLIMIT_NOFILE, 20,000), so no
/// test running in parallel can make it valid.
pub const BAD_FD: i32 = 999_999;

/// A byte pattern whose period (251) never lines up with buffer sizes, so a
/// lost, repeated or reordered chunk shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Writes everything with the raw system call (a peer that no hook touches).
pub fn raw_write_all(fd: i32, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: the pointer and length describe the live slice.
        let n = unsafe { libc::syscall(libc::SYS_write, fd, data.as_ptr(), data.len()) };
        assert!(n > 0, "peer write failed: {}", errno());
        data = &data[n as usize..];
    }
}

/// Fills a non-blocking fd until the kernel says EAGAIN.
pub fn fill(fd: i32) {
    let chunk = [0u8; 65536];
    loop {
        // SAFETY: writing from a local buffer.
        let n = unsafe { libc::syscall(libc::SYS_write, fd, chunk.as_ptr(), chunk.len()) };
        if n < 0 {
            assert_eq!(errno(), libc::EAGAIN);
            return;
        }
    }
}

/// Every scenario a reading call must pass, on pairs made by `pair`.
pub fn check_reader(name: &str, read: ReadFn, pair: PairFn) {
    // Inside: parks until data arrives, other coroutines run meanwhile.
    let (r, w) = pair(false);
    let peer = after(30, move || raw_write_all(w, b"hello"));
    let ((got, buf), ticks) = in_coroutine(move || {
        let mut buf = [0u8; 16];
        (read(Face::Hooked, r, &mut buf), buf)
    });
    peer.join().unwrap();
    assert_eq!(got, Ok(5), "{name}: data");
    assert_eq!(&buf[..5], b"hello", "{name}: bytes");
    assert!(
        ticks > 0,
        "{name}: the thread blocked while waiting for data"
    );

    // Inside: a second call finds what is left without waiting for a new edge.
    raw_write_all(w, b"0123456789");
    let ((a, b), _) = in_coroutine(move || {
        let mut x = [0u8; 4];
        let mut y = [0u8; 16];
        let a = read(Face::Hooked, r, &mut x).map(|n| x[..n].to_vec());
        let b = read(Face::Hooked, r, &mut y).map(|n| y[..n].to_vec());
        (a, b)
    });
    assert_eq!(a, Ok(b"0123".to_vec()), "{name}: first part");
    assert_eq!(b, Ok(b"456789".to_vec()), "{name}: the rest, already there");

    // Inside: parks until the peer closes, then end of file.
    let peer = after(30, move || close(w));
    let (got, ticks) = in_coroutine(move || read(Face::Hooked, r, &mut [0u8; 16]));
    peer.join().unwrap();
    assert_eq!(got, Ok(0), "{name}: end of file");
    assert!(
        ticks > 0,
        "{name}: the thread blocked while waiting for EOF"
    );
    // Outside, at EOF: as the kernel.
    assert_eq!(
        read(Face::Hooked, r, &mut [0u8; 16]),
        read(Face::Raw, r, &mut [0u8; 16]),
        "{name}: EOF outside"
    );
    close(r);

    // EBADF, both faces.
    let bad = BAD_FD;
    let (inside, _) = in_coroutine(move || read(Face::Hooked, bad, &mut [0u8; 4]));
    assert_eq!(inside, Err(libc::EBADF), "{name}: EBADF inside");
    assert_eq!(read(Face::Hooked, bad, &mut [0u8; 4]), Err(libc::EBADF));
    assert_eq!(read(Face::Raw, bad, &mut [0u8; 4]), Err(libc::EBADF));

    // The user's non-blocking fd: EAGAIN at once, inside as outside.
    let (r, w) = pair(true);
    let (inside, _) = in_coroutine(move || read(Face::Hooked, r, &mut [0u8; 4]));
    assert_eq!(
        inside,
        Err(libc::EAGAIN),
        "{name}: the user's O_NONBLOCK inside"
    );
    assert_eq!(read(Face::Hooked, r, &mut [0u8; 4]), Err(libc::EAGAIN));
    assert_eq!(read(Face::Raw, r, &mut [0u8; 4]), Err(libc::EAGAIN));
    close(r);
    close(w);

    // Outside with data ready: the same bytes and count as the raw call.
    let (r, w) = pair(false);
    raw_write_all(w, b"abcdefgh");
    let mut hooked = [0u8; 5];
    let mut raw = [0u8; 5];
    assert_eq!(read(Face::Hooked, r, &mut hooked), Ok(5), "{name}: outside");
    assert_eq!(read(Face::Raw, r, &mut raw), Ok(3), "{name}: raw rest");
    assert_eq!((&hooked, &raw[..3]), (b"abcde", &b"fgh"[..]));

    // An fd a coroutine used (we may have made it non-blocking) still blocks a
    // plain thread until data comes, never EAGAIN.
    let ((), _) = in_coroutine(move || {
        let peer = after(10, move || raw_write_all(w, b"x"));
        assert_eq!(read(Face::Hooked, r, &mut [0u8; 1]), Ok(1));
        peer.join().unwrap();
    });
    let peer = after(50, move || raw_write_all(w, b"late"));
    let mut buf = [0u8; 8];
    assert_eq!(
        read(Face::Hooked, r, &mut buf),
        Ok(4),
        "{name}: plain thread"
    );
    assert_eq!(&buf[..4], b"late");
    peer.join().unwrap();
    close(r);
    close(w);
}

/// Reads everything until EOF with the raw system call, slowly.
fn slow_drain(fd: i32) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
        assert!(n >= 0, "drain failed: {}", errno());
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n as usize]);
        std::thread::sleep(Duration::from_micros(300));
    }
}

/// Every scenario a writing call must pass, on pairs made by `pair`.
pub fn check_writer(name: &str, write: WriteFn, pair: PairFn) {
    // Inside: a large write to a slow reader parks as often as needed and
    // completes with every byte in order while other coroutines run.
    const BIG: usize = 8 << 20;
    let (r, w) = pair(false);
    let reader = std::thread::spawn(move || slow_drain(r));
    let (sent, ticks) = in_coroutine(move || write(Face::Hooked, w, &pattern(BIG)));
    close(w);
    let got = reader.join().unwrap();
    assert_eq!(sent, Ok(BIG), "{name}: large write");
    assert!(
        got == pattern(BIG),
        "{name}: {} bytes arrived, not in order",
        got.len()
    );
    assert!(
        ticks > 0,
        "{name}: the thread blocked during the large write"
    );
    close(r);

    // EPIPE once the reader is gone, both faces (SIGPIPE is ignored here).
    // SAFETY: ignoring SIGPIPE, as Rust programs do, so EPIPE is reported.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let (r, w) = pair(false);
    close(r);
    let (inside, _) = in_coroutine(move || write(Face::Hooked, w, b"x"));
    assert_eq!(inside, Err(libc::EPIPE), "{name}: EPIPE inside");
    assert_eq!(write(Face::Hooked, w, b"x"), Err(libc::EPIPE));
    assert_eq!(write(Face::Raw, w, b"x"), Err(libc::EPIPE));
    close(w);

    // EBADF, both faces.
    let bad = BAD_FD;
    let (inside, _) = in_coroutine(move || write(Face::Hooked, bad, b"x"));
    assert_eq!(inside, Err(libc::EBADF), "{name}: EBADF inside");
    assert_eq!(write(Face::Hooked, bad, b"x"), Err(libc::EBADF));
    assert_eq!(write(Face::Raw, bad, b"x"), Err(libc::EBADF));

    // The user's non-blocking fd, full: EAGAIN at once, inside as outside.
    let (r, w) = pair(true);
    fill(w);
    let (inside, _) = in_coroutine(move || write(Face::Hooked, w, b"x"));
    assert_eq!(
        inside,
        Err(libc::EAGAIN),
        "{name}: the user's O_NONBLOCK inside"
    );
    assert_eq!(write(Face::Hooked, w, b"x"), Err(libc::EAGAIN));
    assert_eq!(write(Face::Raw, w, b"x"), Err(libc::EAGAIN));
    close(r);
    close(w);

    // Outside, small writes: the same count as the raw call, bytes in order.
    let (r, w) = pair(false);
    assert_eq!(write(Face::Hooked, w, b"abc"), Ok(3), "{name}: outside");
    assert_eq!(write(Face::Raw, w, b"def"), Ok(3));
    let mut buf = [0u8; 6];
    // SAFETY: reading into a local buffer.
    let n = unsafe { libc::syscall(libc::SYS_read, r, buf.as_mut_ptr(), 6) };
    assert_eq!((n, &buf), (6, b"abcdef"));

    // Used by a coroutine, then a plain thread's large write still completes
    // (it blocks as the user expects instead of failing with EAGAIN).
    let ((), _) = in_coroutine(move || assert_eq!(write(Face::Hooked, w, b"x"), Ok(1)));
    let reader = std::thread::spawn(move || slow_drain(r));
    let data = pattern(1 << 20);
    assert_eq!(
        write(Face::Hooked, w, &data),
        Ok(data.len()),
        "{name}: plain thread"
    );
    close(w);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len() + 1);
    assert!(
        got[0] == b'x' && got[1..] == data[..],
        "{name}: plain thread bytes"
    );
    close(r);
}

/// read(2), through the hook or as the raw system call.
pub fn read(face: Face, fd: i32, buf: &mut [u8]) -> Outcome {
    outcome(match face {
        // SAFETY: the buffer is live and writable for its length.
        Face::Hooked => unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: as above, by the raw system call.
        Face::Raw => unsafe {
            libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) as isize
        },
    })
}

/// recv(2) with `flags`.
pub fn recv_flags(face: Face, fd: i32, buf: &mut [u8], flags: libc::c_int) -> Outcome {
    let (p, n) = (buf.as_mut_ptr(), buf.len());
    outcome(match face {
        // SAFETY: the buffer is live and writable for its length.
        Face::Hooked => unsafe { libc::recv(fd, p.cast(), n, flags) },
        // SAFETY: as above; recv(2) is recvfrom(2) without an address.
        Face::Raw => unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                fd,
                p,
                n,
                flags,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            ) as isize
        },
    })
}

pub fn recv(face: Face, fd: i32, buf: &mut [u8]) -> Outcome {
    recv_flags(face, fd, buf, 0)
}
