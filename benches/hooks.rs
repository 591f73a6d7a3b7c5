//! The cost of a hooked call outside coroutines: `read`/`recv` through our hook
//! against the same libc function called directly (found with
//! `dlsym(RTLD_NEXT)`, which is what the hook forwards to), on the same fd, in
//! the same run. The call is made on a non-blocking socket with nothing to read,
//! so the kernel answers EAGAIN at once and the syscall is as cheap as it gets.
//!
//! ```text
//! cargo bench --bench hooks              # every case
//! cargo bench --bench hooks -- engaged   # cases whose name contains "engaged"
//! ```
//!
//! A few nanoseconds next to a syscall of a hundred or more cannot be seen by
//! timing the two calls one after the other on a shared machine: the load
//! changes between the two. So each case runs PAIRS pairs of short batches,
//! hooked and direct back to back (which goes first alternates), and reports
//! the distribution of the per-pair differences: their median, its 95 %
//! confidence interval and the interquartile range. An A/A case (the direct
//! call against itself) shows what the method reads when there is nothing to
//! find.
//!
//! Two states of the process: "fresh" (it never mapped a coroutine stack: the
//! state of every program that runs under the preload without spawning), and
//! "engaged" (after one coroutine ran; the hooks then also read a thread-local
//! and the fd table).
//!
//! `HOOKS_PAIRS` and `HOOKS_BATCH` change the counts; for an exact instruction
//! count per call, `scripts/hook-cost` runs this under callgrind with one pair.

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Instant;

type ReadFn = unsafe extern "C" fn(i32, *mut libc::c_void, usize) -> isize;
type RecvFn = unsafe extern "C" fn(i32, *mut libc::c_void, usize, i32) -> isize;

/// libc's own functions, as the hooks find them.
static LIBC: OnceLock<(ReadFn, RecvFn)> = OnceLock::new();

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn next_symbol(name: &std::ffi::CStr) -> usize {
    // SAFETY: a NUL-terminated name; dlsym has no other preconditions.
    let addr = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    assert_ne!(addr, 0, "libc defines {name:?}");
    addr
}

const LEN: usize = 64;

/// The measured loops, one function each so that callgrind can count each one's
/// instructions (`--inclusive=yes`). `buf` has room for LEN bytes.
#[inline(never)]
fn hooked_read(fd: i32, buf: *mut libc::c_void, n: usize) {
    for _ in 0..n {
        // SAFETY: at most LEN bytes into `buf`.
        black_box(unsafe { libc::read(black_box(fd), buf, LEN) });
    }
}

#[inline(never)]
fn libc_read(fd: i32, buf: *mut libc::c_void, n: usize) {
    let real = black_box(LIBC.get().expect("resolved in main").0);
    for _ in 0..n {
        // SAFETY: as above.
        black_box(unsafe { real(black_box(fd), buf, LEN) });
    }
}

#[inline(never)]
fn hooked_recv(fd: i32, buf: *mut libc::c_void, n: usize) {
    for _ in 0..n {
        // SAFETY: as above.
        black_box(unsafe { libc::recv(black_box(fd), buf, LEN, 0) });
    }
}

#[inline(never)]
fn libc_recv(fd: i32, buf: *mut libc::c_void, n: usize) {
    let real = black_box(LIBC.get().expect("resolved in main").1);
    for _ in 0..n {
        // SAFETY: as above.
        black_box(unsafe { real(black_box(fd), buf, LEN, 0) });
    }
}

type Loop = fn(i32, *mut libc::c_void, usize);

/// The `q`-quantile of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Runs `pairs` pairs of `batch` calls of `a` and `b` and prints the
/// distribution of (a - b) per call.
fn compare(name: &str, a: Loop, b: Loop, fd: i32, buf: *mut libc::c_void) {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !name.contains(&f)) {
        return;
    }
    let pairs = env_or("HOOKS_PAIRS", 200);
    let batch = env_or("HOOKS_BATCH", 10_000);
    let time = |f: Loop| {
        let start = Instant::now();
        f(fd, buf, batch);
        start.elapsed().as_nanos() as f64 / batch as f64
    };
    let (mut ta, mut tb, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let (x, y) = if i % 2 == 0 {
            let x = time(a);
            (x, time(b))
        } else {
            let y = time(b);
            (time(a), y)
        };
        ta.push(x);
        tb.push(y);
        diff.push(x - y);
    }
    for v in [&mut ta, &mut tb, &mut diff] {
        v.sort_by(f64::total_cmp);
    }
    // Order statistics bracketing the median with 95 % confidence (binomial,
    // normal approximation): ranks n/2 -+ 0.98 sqrt(n).
    let n = diff.len() as f64;
    let half = 0.98 * n.sqrt() / n;
    println!(
        "{name:<20} {:>8.1} {:>8.1} {:>+8.1} [{:+.1}, {:+.1}] {:>+8.1} .. {:<+8.1} {:>6.3}",
        quantile(&ta, 0.5),
        quantile(&tb, 0.5),
        quantile(&diff, 0.5),
        quantile(&diff, (0.5 - half).max(0.0)),
        quantile(&diff, (0.5 + half).min(1.0)),
        quantile(&diff, 0.25),
        quantile(&diff, 0.75),
        quantile(&ta, 0.5) / quantile(&tb, 0.5),
    );
}

fn main() {
    // Naming the crate links it, and with it the hooks that replace libc's
    // `read`/`recv` in this binary (an rlib nobody names is not linked at all).
    assert!(!patchall::in_coroutine());
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("non-blocking");
    let fd = a.as_raw_fd();
    let mut buf = [0u8; LEN];
    let p = buf.as_mut_ptr().cast::<libc::c_void>();

    // SAFETY: the addresses are libc's definitions of these very functions.
    LIBC.get_or_init(|| unsafe {
        (
            std::mem::transmute::<usize, ReadFn>(next_symbol(c"read")),
            std::mem::transmute::<usize, RecvFn>(next_symbol(c"recv")),
        )
    });
    // Warm-up outside the measured loops: the hooks resolve libc's address on
    // their first call (dlsym), which callgrind would otherwise count in.
    // SAFETY: at most LEN bytes into `buf`.
    unsafe {
        black_box(libc::read(fd, p, LEN));
        black_box(libc::recv(fd, p, LEN, 0));
    }

    println!(
        "hooked call outside coroutines vs libc's (EAGAIN on an empty socket), \
         ns per call; {} pairs of {} calls",
        env_or("HOOKS_PAIRS", 200),
        env_or("HOOKS_BATCH", 10_000),
    );
    println!(
        "{:<20} {:>8} {:>8} {:>8} {:<16} {:<18} {:>6}",
        "case (a vs b)", "a", "b", "a - b", "95% CI", "IQR of a - b", "a / b"
    );
    compare("A/A libc read", libc_read, libc_read, fd, p);
    compare("read, fresh", hooked_read, libc_read, fd, p);
    compare("recv, fresh", hooked_recv, libc_recv, fd, p);
    // One coroutine maps a stack: from now on the hooks look further.
    patchall::spawn(|| ()).expect("spawn").join().expect("join");
    compare("read, engaged", hooked_read, libc_read, fd, p);
    compare("recv, engaged", hooked_recv, libc_recv, fd, p);
}
