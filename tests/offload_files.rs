//! Regular files in coroutines: what may wait for the disk runs on the offload
//! pool (`PATCHALL_OFFLOAD_FILES`), every call gives the result and errno of
//! the call made outside a coroutine.
//!
//! The default mode (`auto`) is tested in this process; `always` and `off` in
//! a child process each (the mode is read once per process).

mod common;

use std::ffi::CString;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{TempDir, assert_passed, ignored_test, run};

/// A call's result: a count (or fd), or errno.
type Outcome = Result<usize, i32>;

fn outcome(r: isize) -> Outcome {
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(r as usize)
    }
}

/// How a call went in a coroutine: its outcome, whether a sibling coroutine
/// ran while it was in progress (it parked or yielded: it was offloaded), and
/// how many calls were offloaded meanwhile (process-wide).
struct Inside<T> {
    value: T,
    sibling_ran: bool,
    offloaded: u64,
}

/// Runs `call` in a coroutine next to a sibling that is queued just before
/// the call: the sibling runs during the call only if the call let go of the
/// thread.
fn inside<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Inside<T> {
    patchall::spawn(move || {
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let sibling = patchall::spawn(move || r.store(true, SeqCst)).unwrap();
        let before = patchall::offloaded_calls();
        let value = call();
        let offloaded = patchall::offloaded_calls() - before;
        let sibling_ran = ran.load(SeqCst);
        sibling.join().unwrap();
        Inside {
            value,
            sibling_ran,
            offloaded,
        }
    })
    .unwrap()
    .join()
    .unwrap()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn open(path: &CString, flags: i32) -> Outcome {
    // SAFETY: a NUL-terminated path.
    outcome(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) } as isize)
}

fn close(fd: usize) {
    // SAFETY: closing an fd the test opened.
    unsafe { libc::close(fd as i32) };
}

fn read(fd: usize, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    // SAFETY: reading into a buffer of `len` bytes.
    let n = outcome(unsafe { libc::read(fd as i32, buf.as_mut_ptr().cast(), len) })?;
    buf.truncate(n);
    Ok(buf)
}

fn pread(fd: usize, len: usize, offset: i64) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    // SAFETY: reading into a buffer of `len` bytes.
    let n = outcome(unsafe { libc::pread(fd as i32, buf.as_mut_ptr().cast(), len, offset) })?;
    buf.truncate(n);
    Ok(buf)
}

/// `len` bytes as two iovecs (3 bytes, then the rest), read or read at `offset`.
fn readv(fd: usize, len: usize, offset: Option<i64>) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let (a, b) = buf.split_at_mut(3.min(len));
    let iov = [a, b].map(|p| libc::iovec {
        iov_base: p.as_mut_ptr().cast(),
        iov_len: p.len(),
    });
    // SAFETY: both iovecs describe live parts of `buf`.
    let r = unsafe {
        match offset {
            None => libc::readv(fd as i32, iov.as_ptr(), 2),
            Some(o) => libc::preadv(fd as i32, iov.as_ptr(), 2, o),
        }
    };
    let n = outcome(r)?;
    buf.truncate(n);
    Ok(buf)
}

fn write(fd: usize, data: &[u8]) -> Outcome {
    // SAFETY: writing from a live buffer.
    outcome(unsafe { libc::write(fd as i32, data.as_ptr().cast(), data.len()) })
}

fn pwrite(fd: usize, data: &[u8], offset: i64) -> Outcome {
    // SAFETY: writing from a live buffer.
    outcome(unsafe { libc::pwrite(fd as i32, data.as_ptr().cast(), data.len(), offset) })
}

/// `data` as two iovecs, written or written at `offset`.
fn writev(fd: usize, data: &[u8], offset: Option<i64>) -> Outcome {
    let (a, b) = data.split_at(data.len() / 2);
    let iov = [a, b].map(|p| libc::iovec {
        iov_base: p.as_ptr() as *mut libc::c_void,
        iov_len: p.len(),
    });
    // SAFETY: the iovecs describe live parts of `data`.
    outcome(unsafe {
        match offset {
            None => libc::writev(fd as i32, iov.as_ptr(), 2),
            Some(o) => libc::pwritev(fd as i32, iov.as_ptr(), 2, o),
        }
    })
}

fn sync(fd: usize, data_only: bool) -> Outcome {
    // SAFETY: flushing an fd (or failing with EBADF/EINVAL).
    outcome(unsafe {
        if data_only {
            libc::fdatasync(fd as i32)
        } else {
            libc::fsync(fd as i32)
        }
    } as isize)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The file tests' fixture: a directory with a 6-byte file and a pipe.
struct Fixture {
    dir: TempDir,
    small: CString,
}

fn fixture(tag: &str) -> Fixture {
    let dir = TempDir::new(tag);
    let small = dir.path().join("small");
    std::fs::write(&small, b"abcdef").unwrap();
    Fixture {
        small: cpath(&small),
        dir,
    }
}

/// One scenario, made the same way twice: in a coroutine (with what that
/// coroutine saw) and on this plain thread. Asserts equal outcomes.
fn both_faces<T: PartialEq + std::fmt::Debug + Send + 'static>(
    what: &str,
    scenario: impl Fn() -> T + Send + Sync + 'static,
) -> Inside<T> {
    let scenario = Arc::new(scenario);
    let s = scenario.clone();
    let got = inside(move || s());
    let plain = scenario();
    assert_eq!(got.value, plain, "{what}: inside a coroutine vs outside");
    got
}

/// Every file call, both faces, in whatever mode this process runs. Returns
/// the calls that were offloaded, per scenario, for the caller to judge.
fn every_call(tag: &str) -> Vec<(&'static str, Inside<()>)> {
    let fx = Arc::new(fixture(tag));
    let mut seen = Vec::new();
    let mut check = |what: &'static str, r: Inside<()>| seen.push((what, r));
    let unit = |i: Inside<String>| Inside {
        value: (),
        sibling_ran: i.sibling_ran,
        offloaded: i.offloaded,
    };

    let f = fx.clone();
    check(
        "open, read to EOF, read at EOF",
        unit(both_faces("read", move || {
            let fd = open(&f.small, libc::O_RDONLY).unwrap();
            let r = format!("{:?} {:?} {:?}", read(fd, 4), read(fd, 10), read(fd, 10));
            close(fd);
            r
        })),
    );
    let f = fx.clone();
    check(
        "pread inside, at and past EOF",
        unit(both_faces("pread", move || {
            let fd = open(&f.small, libc::O_RDONLY).unwrap();
            let r = format!(
                "{:?} {:?} {:?} {:?} then read {:?}",
                pread(fd, 3, 2),
                pread(fd, 10, 6),
                pread(fd, 10, 100),
                pread(fd, 3, -1),
                read(fd, 2)
            );
            close(fd);
            r
        })),
    );
    let f = fx.clone();
    check(
        "readv, preadv",
        unit(both_faces("readv", move || {
            let fd = open(&f.small, libc::O_RDONLY).unwrap();
            let r = format!(
                "{:?} {:?} {:?}",
                readv(fd, 5, None),
                readv(fd, 5, None),
                readv(fd, 4, Some(1))
            );
            close(fd);
            r
        })),
    );
    let f = fx.clone();
    check(
        "errors: ENOENT, EISDIR, EBADF, ESPIPE",
        unit(both_faces("errors", move || {
            let missing = cpath(&f.dir.path().join("missing"));
            let dir = open(&cpath(f.dir.path()), libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
            let wronly = open(&f.small, libc::O_WRONLY).unwrap();
            let mut p = [0; 2];
            // SAFETY: pipe writes two fds.
            assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
            let r = format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                open(&missing, libc::O_RDONLY),
                read(dir, 4),
                read(wronly, 4),
                pread(p[0] as usize, 4, 0),
                sync(p[0] as usize, false),
                sync(999_999, true),
                write(dir, b"x")
            );
            for fd in [dir, wronly, p[0] as usize, p[1] as usize] {
                close(fd);
            }
            r
        })),
    );
    let f = fx.clone();
    check(
        "creat, small writes, fsync",
        unit(both_faces("small writes", move || {
            let path = cpath(&f.dir.path().join(format!("w-{}", tid())));
            // SAFETY: a NUL-terminated path.
            let fd = outcome(unsafe { libc::creat(path.as_ptr(), 0o600) } as isize).unwrap();
            let r = format!(
                "{:?} {:?} {:?} {:?} {:?} {:?}",
                write(fd, b"hello "),
                writev(fd, b"world!", None),
                pwrite(fd, b"HE", 0),
                writev(fd, b"LLo", Some(2)),
                sync(fd, false),
                sync(fd, true)
            );
            close(fd);
            let content = std::fs::read(Path::new(path.to_str().unwrap())).unwrap();
            std::fs::remove_file(path.to_str().unwrap()).unwrap();
            format!("{r} {:?}", String::from_utf8(content))
        })),
    );
    let f = fx.clone();
    check(
        "large writes (1 MiB)",
        unit(both_faces("large writes", move || {
            let path = cpath(&f.dir.path().join(format!("big-{}", tid())));
            let fd = open(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL).unwrap();
            let data = pattern(1 << 20);
            let r = format!(
                "{:?} {:?} {:?}",
                write(fd, &data),
                pwrite(fd, &data, 1 << 20),
                writev(fd, &data, Some(2 << 20))
            );
            close(fd);
            let content = std::fs::read(Path::new(path.to_str().unwrap())).unwrap();
            std::fs::remove_file(path.to_str().unwrap()).unwrap();
            assert!(content.len() == 3 << 20 && content.chunks(1 << 20).all(|c| c == data));
            r
        })),
    );
    seen
}

fn tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[test]
fn auto_mode_faces_and_what_runs_on_the_pool() {
    for (what, r) in every_call("auto") {
        match what {
            // Cached reads and opens of existing files stay inline.
            "open, read to EOF, read at EOF"
            | "pread inside, at and past EOF"
            | "readv, preadv" => {
                assert!(
                    !r.sibling_ran,
                    "{what}: offloaded under auto, though cached"
                )
            }
            // creat and fsync wait for the disk; large writes may.
            "creat, small writes, fsync" | "large writes (1 MiB)" => {
                assert!(r.sibling_ran, "{what}: nothing let the sibling run");
                assert!(r.offloaded >= 2, "{what}: {} calls offloaded", r.offloaded);
            }
            _ => {}
        }
    }
}

#[test]
fn always_mode_in_a_process_of_its_own() {
    let name = "always_mode_scenario";
    let mut cmd = ignored_test(name);
    cmd.env("PATCHALL_OFFLOAD_FILES", "always");
    assert_passed(name, &run(cmd));
}

#[test]
#[ignore = "run by always_mode_in_a_process_of_its_own"]
fn always_mode_scenario() {
    assert_eq!(
        patchall::config().offload_files,
        patchall::OffloadFiles::Always
    );
    for (what, r) in every_call("always") {
        assert!(r.sibling_ran, "{what}: not offloaded under always");
        assert!(
            r.offloaded >= 3,
            "{what}: only {} calls offloaded",
            r.offloaded
        );
    }
}

#[test]
fn off_mode_in_a_process_of_its_own() {
    let name = "off_mode_scenario";
    let mut cmd = ignored_test(name);
    cmd.env("PATCHALL_OFFLOAD_FILES", "off");
    assert_passed(name, &run(cmd));
}

#[test]
#[ignore = "run by off_mode_in_a_process_of_its_own"]
fn off_mode_scenario() {
    assert_eq!(
        patchall::config().offload_files,
        patchall::OffloadFiles::Off
    );
    for (what, r) in every_call("off") {
        assert!(
            !r.sibling_ran,
            "{what}: a file call let go of the thread under off"
        );
        assert_eq!(r.offloaded, 0, "{what}: offloaded under off");
    }
}

/// The fraction of `path`'s pages in the page cache.
fn resident(path: &Path) -> f64 {
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let page = 4096;
    // SAFETY: a private read-only mapping of the whole file, unmapped below;
    // mincore writes one byte per page into `vec`.
    unsafe {
        use std::os::fd::AsRawFd;
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        let mut vec = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
        vec.iter().filter(|&&b| b & 1 != 0).count() as f64 / vec.len() as f64
    }
}

#[test]
fn reading_a_large_uncached_file_does_not_stall_an_echo() {
    const SIZE: usize = 64 << 20;
    const CHUNK: usize = 1 << 20;
    let dir = TempDir::new("large");
    let path = dir.path().join("large");
    std::fs::write(&path, pattern(SIZE)).unwrap();
    {
        let f = std::fs::File::open(&path).unwrap();
        f.sync_all().unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(
            // Clean pages can be dropped from the page cache without privileges.
            // SAFETY: advice on an fd we own.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) },
            0
        );
    }
    let cached = resident(&path);
    assert!(
        cached < 0.5,
        "{:.0}% of the file is still cached: the test cannot show disk reads",
        cached * 100.0
    );

    // An echo over a socket pair: a coroutine echoes, another measures.
    let mut sv = [0; 2];
    assert_eq!(
        // SAFETY: socketpair writes two fds.
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
        0
    );
    let (near, far) = (sv[0] as usize, sv[1] as usize);
    let echo = patchall::spawn(move || {
        while let Ok(b) = read(far, 1) {
            if b.is_empty() || write(far, &b) != Ok(1) {
                break;
            }
        }
    })
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let trips = Arc::new(AtomicUsize::new(0));
    let (d, t) = (done.clone(), trips.clone());
    let client = patchall::spawn(move || {
        let mut worst = Duration::ZERO;
        while !d.load(SeqCst) {
            let start = Instant::now();
            assert_eq!(write(near, b"x"), Ok(1));
            assert_eq!(read(near, 1), Ok(b"x".to_vec()));
            worst = worst.max(start.elapsed());
            t.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(2));
        }
        close(near);
        worst
    })
    .unwrap();

    let before = patchall::offloaded_calls();
    let p = path.clone();
    let d = done.clone();
    // The pattern repeats every 251 bytes: any chunk is a slice of this.
    let expect = pattern(CHUNK + 251);
    let reader = patchall::spawn(move || {
        let start = Instant::now();
        let mut file = std::fs::File::open(&p).unwrap();
        {
            use std::os::fd::AsRawFd;
            // No readahead: each chunk comes from the disk when it is read,
            // not from the cache ahead of the reader, so every read shows
            // where it ran.
            // SAFETY: advice on an fd we own.
            let advice =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
            assert_eq!(advice, 0);
        }
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            let skew = total % 251;
            assert!(buf[..n] == expect[skew..skew + n], "wrong bytes at {total}");
            total += n;
        }
        d.store(true, SeqCst);
        (total, start.elapsed())
    })
    .unwrap();
    let (total, took) = reader.join().unwrap();
    let offloaded = patchall::offloaded_calls() - before;
    let worst = client.join().unwrap();
    echo.join().unwrap();
    close(far);
    let trips = trips.load(SeqCst);
    println!(
        "read {total} uncached bytes in {took:?}; {offloaded} calls offloaded; \
         {trips} echo round trips meanwhile, the slowest {worst:?}"
    );
    assert_eq!(total, SIZE);
    assert!(
        offloaded >= (SIZE / CHUNK / 2) as u64,
        "only {offloaded} reads ran on the pool"
    );
    assert!(
        trips >= 3,
        "the echo stalled: {trips} round trips in {took:?}"
    );
    assert!(
        worst < Duration::from_millis(250),
        "an echo round trip took {worst:?}"
    );
}

#[test]
fn auto_mode_opens_a_fifo_on_the_pool_and_dev_null_inline() {
    let dir = TempDir::new("fifo");
    let fifo = cpath(&dir.path().join("fifo"));
    // SAFETY: a NUL-terminated path in our own directory.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    // The reader's open waits for a writer that is a coroutine of the same
    // thread: only if the open leaves the thread can the writer open its end.
    let f = fifo.clone();
    let reader = patchall::spawn(move || {
        let before = patchall::offloaded_calls();
        let fd = open(&f, libc::O_RDONLY).unwrap();
        let offloaded = patchall::offloaded_calls() - before;
        let got = read(fd, 8);
        close(fd);
        (got, offloaded)
    })
    .unwrap();
    let f = fifo.clone();
    let writer = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(20));
        let fd = open(&f, libc::O_WRONLY).unwrap();
        assert_eq!(write(fd, b"fifo"), Ok(4));
        close(fd);
    })
    .unwrap();
    writer.join().unwrap();
    let (got, offloaded) = reader.join().unwrap();
    assert_eq!(got, Ok(b"fifo".to_vec()));
    assert!(offloaded >= 1, "the FIFO's open was not offloaded");
    // Both faces of what cannot wait: O_NONBLOCK on a FIFO (ENXIO for a writer
    // without a reader), and a memory device, which stays inline.
    let nb = |what, flags| {
        let f = fifo.clone();
        both_faces(what, move || {
            let r = open(&f, flags);
            if let Ok(fd) = r {
                close(fd);
            }
            r.map(|_| 0)
        })
    };
    let wr = nb(
        "FIFO O_WRONLY|O_NONBLOCK",
        libc::O_WRONLY | libc::O_NONBLOCK,
    );
    assert_eq!(wr.value, Err(libc::ENXIO));
    let rd = nb(
        "FIFO O_RDONLY|O_NONBLOCK",
        libc::O_RDONLY | libc::O_NONBLOCK,
    );
    assert_eq!(rd.value, Ok(0));
    let null = inside(|| open(&cpath(Path::new("/dev/null")), libc::O_RDONLY));
    assert!(!null.sibling_ran, "/dev/null's open was offloaded");
    close(null.value.unwrap());
}
