//! futex(2) on this process's own words, for the code that waits outside the
//! runtime (a native thread on one of our pthread objects, a join of a green
//! thread from a native one) and for the futex emulation's kernel side. The
//! caller's errno is left as it was: these calls are ours, not the program's.

use std::time::Duration;

use libc::{EINTR, ETIMEDOUT, c_int, c_long, clockid_t, timespec};

use super::{errno, set_errno, to_timespec};

/// futex(2) itself, by raw system call (never our `syscall` hook, never
/// trapped): the result, or the errno it failed with.
///
/// # Safety
/// As for the system call: what `op` reads must be readable or fault-checked
/// by the kernel.
pub(crate) unsafe fn call(
    uaddr: *const u32,
    op: c_int,
    val: u32,
    timeout: *const timespec,
    uaddr2: *const u32,
    val3: u32,
) -> Result<c_long, c_int> {
    let saved = errno();
    // SAFETY: the caller's contract.
    let r =
        unsafe { crate::sys::raw_syscall!(libc::SYS_futex, uaddr, op, val, timeout, uaddr2, val3) };
    let e = errno();
    set_errno(saved);
    if r < 0 { Err(e) } else { Ok(r) }
}

/// How long a `wait` may last.
#[derive(Clone, Copy)]
pub(crate) enum Until<'a> {
    /// Until woken.
    Woken,
    /// At most this long (FUTEX_WAIT's relative timeout, on CLOCK_MONOTONIC).
    For(Duration),
    /// Until the clock (CLOCK_REALTIME or CLOCK_MONOTONIC) reads this time.
    At(clockid_t, &'a timespec),
}

/// Blocks the OS thread while the private futex word at `word` holds
/// `expected`, until woken (maybe spuriously) or `until`. Err(ETIMEDOUT) or
/// Err(EINTR) (a signal handler ran); Ok on a wake-up, or at once if the word
/// did not hold `expected`.
///
/// # Safety
/// `word` is a live, 4-byte aligned word of this process.
pub(crate) unsafe fn wait(word: *const u32, expected: u32, until: Until) -> Result<(), c_int> {
    let private = libc::FUTEX_PRIVATE_FLAG;
    let any = libc::FUTEX_BITSET_MATCH_ANY as u32;
    let relative;
    let (op, ts) = match until {
        Until::Woken => (libc::FUTEX_WAIT_BITSET | private, std::ptr::null()),
        Until::For(d) => {
            relative = to_timespec(d);
            (libc::FUTEX_WAIT | private, &relative as *const timespec)
        }
        Until::At(clock, abs) => {
            let realtime = if clock == libc::CLOCK_REALTIME {
                libc::FUTEX_CLOCK_REALTIME
            } else {
                0
            };
            (
                libc::FUTEX_WAIT_BITSET | private | realtime,
                abs as *const timespec,
            )
        }
    };
    // SAFETY: the caller's live word; `ts` is null or a timespec of the kind
    // `op` names, alive across the call.
    match unsafe { call(word, op, expected, ts, std::ptr::null(), any) } {
        Err(e @ (ETIMEDOUT | EINTR)) => Err(e),
        _ => Ok(()),
    }
}

/// Wakes up to `n` threads of this process futex-waiting on `addr`; true if
/// one woke. The memory may already be gone: the kernel only uses the address
/// as a key, as with glibc's unlock.
pub(crate) fn wake(addr: usize, n: i32) -> bool {
    let op = libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG;
    // SAFETY: FUTEX_WAKE reads no memory; any address is acceptable.
    let r = unsafe {
        call(
            addr as *const u32,
            op,
            n as u32,
            std::ptr::null(),
            std::ptr::null(),
            0,
        )
    };
    r.is_ok_and(|woken| woken > 0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn wait_returns_at_once_when_the_word_differs_and_times_out_otherwise() {
        let word = AtomicU32::new(1);
        // SAFETY: a live, aligned word of ours.
        assert_eq!(unsafe { wait(word.as_ptr(), 0, Until::Woken) }, Ok(()));
        let t = Instant::now();
        set_errno(12345);
        // SAFETY: as above.
        let r = unsafe { wait(word.as_ptr(), 1, Until::For(Duration::from_millis(20))) };
        assert_eq!(r, Err(ETIMEDOUT));
        assert_eq!(errno(), 12345, "the failed system call's errno is not left");
        assert!(t.elapsed() >= Duration::from_millis(20));
        let past = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        for clock in [libc::CLOCK_MONOTONIC, libc::CLOCK_REALTIME] {
            // SAFETY: as above.
            let r = unsafe { wait(word.as_ptr(), 1, Until::At(clock, &past)) };
            assert_eq!(r, Err(ETIMEDOUT));
        }
    }

    #[test]
    fn wake_ends_a_wait() {
        let word = Arc::new(AtomicU32::new(0));
        assert!(!wake(word.as_ptr() as usize, 1));
        let w = word.clone();
        let waiter = std::thread::spawn(move || {
            while w.load(SeqCst) == 0 {
                // SAFETY: a live, aligned word shared through the Arc.
                let _ = unsafe { wait(w.as_ptr(), 0, Until::For(Duration::from_secs(10))) };
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        word.store(1, SeqCst);
        let t = Instant::now();
        while !waiter.is_finished() {
            wake(word.as_ptr() as usize, i32::MAX);
            std::thread::yield_now();
        }
        waiter.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
