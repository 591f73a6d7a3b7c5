//! The cost of a hooked call outside coroutines: `read`/`recv` through our hook
//! against the same libc function called directly (found with
//! `dlsym(RTLD_NEXT)`, which is what the hook forwards to), on the same fd, in
//! the same run. The call is made on a non-blocking socket with nothing to read,
//! so the kernel answers EAGAIN at once and the syscall is as cheap as it gets.
//!
//! ```text
//! cargo bench --bench hooks
//! ```

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Calls per sample; `HOOKS_ITERS` lowers it for a run under callgrind.
fn iters() -> u64 {
    std::env::var("HOOKS_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000)
}
const SAMPLES: usize = 9;

type ReadFn = unsafe extern "C" fn(i32, *mut libc::c_void, usize) -> isize;
type RecvFn = unsafe extern "C" fn(i32, *mut libc::c_void, usize, i32) -> isize;

fn next_symbol(name: &std::ffi::CStr) -> usize {
    // SAFETY: a NUL-terminated name; dlsym has no other preconditions.
    let addr = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    assert_ne!(addr, 0, "libc defines {name:?}");
    addr
}

/// Median ns per call of `call`, over SAMPLES runs of ITERS calls.
fn time(mut call: impl FnMut()) -> f64 {
    let mut ns: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters() {
                call();
            }
            start.elapsed().as_nanos() as f64 / iters() as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    ns[SAMPLES / 2]
}

fn main() {
    // Naming the crate links it, and with it the hooks that replace libc's
    // `read`/`recv` in this binary (an rlib nobody names is not linked at all).
    assert!(!patchall::in_coroutine());
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("non-blocking");
    let fd = a.as_raw_fd();
    let mut buf = [0u8; 64];
    let p = buf.as_mut_ptr().cast::<libc::c_void>();

    // SAFETY: the addresses are libc's definitions of these very functions.
    let real_read: ReadFn = unsafe { std::mem::transmute(next_symbol(c"read")) };
    let real_recv: RecvFn = unsafe { std::mem::transmute(next_symbol(c"recv")) };

    println!("hooked call outside coroutines vs the real libc call (EAGAIN on an empty socket)");
    for round in 0..2 {
        // SAFETY (all four): reading at most 64 bytes into `buf`.
        let hooked_read = time(|| unsafe {
            black_box(libc::read(black_box(fd), p, 64));
        });
        let raw_read = time(|| unsafe {
            black_box(real_read(black_box(fd), p, 64));
        });
        let hooked_recv = time(|| unsafe {
            black_box(libc::recv(black_box(fd), p, 64, 0));
        });
        let raw_recv = time(|| unsafe {
            black_box(real_recv(black_box(fd), p, 64, 0));
        });
        if round == 0 {
            continue; // warm-up: page faults, dlsym caches, CPU frequency
        }
        for (name, hooked, raw) in [
            ("read", hooked_read, raw_read),
            ("recv", hooked_recv, raw_recv),
        ] {
            println!(
                "{name}: hooked {hooked:.1} ns, real {raw:.1} ns, extra {:+.1} ns (target <= 5 ns)",
                hooked - raw
            );
        }
    }
}
