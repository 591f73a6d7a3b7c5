//! The offload pool against inline calls: what a call costs a coroutine when it
//! runs on a pool thread (the coroutine parks, a pool thread makes the call,
//! its completion wakes the scheduler) compared with making it on the spot.
//! The numbers choose `PATCHALL_OFFLOAD_FILES=auto`'s rules (file.rs).
//!
//! ```text
//! cargo bench --bench offload            # all
//! cargo bench --bench offload -- pread   # those whose name contains "pread"
//! ```
//!
//! The file mode is read once per process, so the benchmark runs itself once
//! per mode (`off`, `always`, `auto`); `off` in a coroutine is the inline cost.
//! Every file lives in the page cache (written, then read once): the cost of
//! the disk itself is not measured, only what offloading adds. Each case runs
//! once to warm up, then five timed samples; it prints the median and the best
//! in nanoseconds per operation.

use std::ffi::CString;
use std::hint::black_box;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SAMPLES: usize = 5;
const MODE_VAR: &str = "PATCHALL_OFFLOAD_BENCH_CHILD";
const FILE_SIZE: usize = 16 << 20;

fn filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

/// Median and best of `SAMPLES` runs of `run(iters)`, printed in ns/op.
fn measure(name: &str, iters: u64, mut run: impl FnMut(u64) -> Duration) {
    if filter().is_some_and(|f| !name.contains(&f)) {
        return;
    }
    run(iters);
    let mut ns: Vec<f64> = (0..SAMPLES)
        .map(|_| run(iters).as_nanos() as f64 / iters as f64)
        .collect();
    ns.sort_by(f64::total_cmp);
    println!(
        "{name:<52} {:>10.1} ns/op (best {:.1}, {iters} ops x {SAMPLES})",
        ns[SAMPLES / 2],
        ns[0]
    );
}

/// Runs `op` `iters` times in one coroutine; the time it took there.
fn in_coroutine(iters: u64, op: impl Fn(u64) + Send + Sync + Copy + 'static) -> Duration {
    patchall::spawn(move || {
        let start = Instant::now();
        for i in 0..iters {
            op(i);
        }
        start.elapsed()
    })
    .unwrap()
    .join()
    .unwrap()
}

/// Runs `op` `iters` times on this plain thread.
fn on_thread(iters: u64, op: impl Fn(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        op(i);
    }
    start.elapsed()
}

fn getaddrinfo_localhost(_: u64) {
    let node = c"localhost";
    // SAFETY: zeroed hints are valid; only the family is set.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_INET;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res = std::ptr::null_mut();
    // SAFETY: valid strings and hints; the list is freed below.
    let r = unsafe { libc::getaddrinfo(node.as_ptr(), std::ptr::null(), &hints, &mut res) };
    assert_eq!(r, 0, "getaddrinfo(localhost) failed");
    // SAFETY: the list getaddrinfo returned.
    unsafe { libc::freeaddrinfo(res) };
}

fn dns() {
    measure(
        "getaddrinfo(localhost, /etc/hosts): plain thread",
        2000,
        |n| on_thread(n, getaddrinfo_localhost),
    );
    measure("getaddrinfo(localhost, /etc/hosts): coroutine", 2000, |n| {
        in_coroutine(n, getaddrinfo_localhost)
    });
}

/// The benchmark's files, in the page cache.
struct Files {
    data: CString,
    scratch: CString,
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn prepare(dir: &Path) -> Files {
    let data = dir.join("data");
    let bytes: Vec<u8> = (0..FILE_SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(&data, &bytes).unwrap();
    // Read once: every later read is served from the page cache.
    assert_eq!(std::fs::read(&data).unwrap().len(), FILE_SIZE);
    let scratch = dir.join("scratch");
    std::fs::write(&scratch, &bytes[..1 << 20]).unwrap();
    Files {
        data: cpath(&data),
        scratch: cpath(&scratch),
    }
}

fn open(path: &CString, flags: i32) -> i32 {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    assert!(fd >= 0, "open failed");
    fd
}

/// `size`-byte preads walking through the cached file.
fn pread_case(mode: &str, fd: i32, size: usize, iters: u64) {
    let op = move |i: u64| {
        let mut buf = vec![0u8; size];
        let offset = (i as usize * size) % (FILE_SIZE - size);
        // SAFETY: reading into a buffer of `size` bytes.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), size, offset as i64) };
        assert_eq!(n as usize, size);
        black_box(&buf);
    };
    let label = |where_: &str| format!("pread {} KiB cached: {where_}", size >> 10);
    if mode == "off" {
        measure(&label("plain thread"), iters, |n| on_thread(n, op));
    }
    measure(&label(&format!("coroutine, files={mode}")), iters, |n| {
        in_coroutine(n, op)
    });
}

/// `size`-byte pwrites to the start of the scratch file (page cache only).
fn pwrite_case(mode: &str, fd: i32, size: usize, iters: u64) {
    let op = move |_: u64| {
        let buf = vec![7u8; size];
        // SAFETY: writing from a buffer of `size` bytes.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), size, 0) };
        assert_eq!(n as usize, size);
    };
    let label = format!(
        "pwrite {} KiB to the page cache: coroutine, files={mode}",
        size >> 10
    );
    measure(&label, iters, |n| in_coroutine(n, op));
}

/// The smallest job: `fsync(-1)` fails with EBADF at once, and is offloaded
/// in every mode but `off`. Back to back, and after 1 ms of idleness (longer
/// than either side spins: both have gone to sleep), timing only the call.
fn round_trip(mode: &str) {
    let noop = |_: u64| {
        // SAFETY: fsync of an invalid fd only fails.
        assert_eq!(unsafe { libc::fsync(-1) }, -1);
    };
    measure(
        &format!("no-op (fsync(-1)), back to back: coroutine, files={mode}"),
        20_000,
        |n| in_coroutine(n, noop),
    );
    measure(
        &format!("no-op after 1 ms idle: coroutine, files={mode}"),
        300,
        |n| {
            patchall::spawn(move || {
                let mut total = Duration::ZERO;
                for i in 0..n {
                    patchall::sleep(Duration::from_millis(1));
                    let start = Instant::now();
                    noop(i);
                    total += start.elapsed();
                }
                total
            })
            .unwrap()
            .join()
            .unwrap()
        },
    );
}

fn files(mode: &str, dir: &Path) {
    round_trip(mode);
    let f = prepare(dir);
    let data = open(&f.data, libc::O_RDONLY);
    let scratch = open(&f.scratch, libc::O_WRONLY);
    for (size, iters) in [(4 << 10, 20_000), (64 << 10, 5_000), (1 << 20, 500)] {
        pread_case(mode, data, size, iters);
    }
    for (size, iters) in [
        (4 << 10, 20_000),
        (64 << 10, 5_000),
        (256 << 10, 1_000),
        (1 << 20, 300),
    ] {
        pwrite_case(mode, scratch, size, iters);
    }
    let path: &'static CString = Box::leak(Box::new(f.data.clone()));
    let open_close = move |_: u64| {
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(open(path, libc::O_RDONLY)) };
    };
    measure(
        &format!("open+close, cached path: coroutine, files={mode}"),
        5_000,
        |n| in_coroutine(n, open_close),
    );
    let sync = move |_: u64| {
        let buf = [1u8; 4096];
        // SAFETY: a 4 KiB write from a local buffer, then a flush.
        unsafe {
            libc::pwrite(scratch, buf.as_ptr().cast(), buf.len(), 0);
            assert_eq!(libc::fdatasync(scratch), 0);
        }
    };
    measure(
        &format!("pwrite 4 KiB + fdatasync: coroutine, files={mode}"),
        200,
        |n| in_coroutine(n, sync),
    );
    println!(
        "(calls offloaded in this run: {})",
        patchall::offloaded_calls()
    );
}

fn main() {
    if let Ok(mode) = std::env::var(MODE_VAR) {
        let dir = PathBuf::from(std::env::var("PATCHALL_OFFLOAD_BENCH_DIR").unwrap());
        files(&mode, &dir);
        return;
    }
    dns();
    let dir = std::env::temp_dir().join(format!("patchall-bench-offload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    for mode in ["off", "always", "auto"] {
        let status = Command::new(&exe)
            .args(std::env::args().skip(1))
            .env(MODE_VAR, mode)
            .env("PATCHALL_OFFLOAD_FILES", mode)
            .env("PATCHALL_OFFLOAD_BENCH_DIR", &dir)
            .status()
            .unwrap();
        assert!(status.success(), "the {mode} run failed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
