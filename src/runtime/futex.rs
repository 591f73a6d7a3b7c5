//! futex(2) for coroutines: a wait parks the coroutine, not its thread, on the
//! parking lot keyed by the word's address (the kernel keys its queues the same
//! way), and a wake finds parked coroutines before it asks the kernel for the
//! rest. This is what glibc's internal locks (a `FILE` lock, malloc's arena
//! locks, the dynamic loader's) and Rust's `std::sync` wait with; the system
//! call reaches us trapped by Syscall User Dispatch or through `syscall()`.
//!
//! | op | in a coroutine | elsewhere |
//! |----|----------------|-----------|
//! | `FUTEX_WAIT`, `FUTEX_WAIT_BITSET` | parks (`wait`) | the kernel's |
//! | `FUTEX_WAKE`, `FUTEX_WAKE_BITSET` | parked coroutines first, the rest of the count to the kernel (`wake`) | same |
//! | `FUTEX_REQUEUE`, `FUTEX_CMP_REQUEUE` | the kernel's, then every coroutine parked on `uaddr` wakes | same |
//! | `FUTEX_WAKE_OP` | the kernel's, then up to `val` coroutines on `uaddr` and `val2` on `uaddr2` wake | same |
//! | PI ops, `FUTEX_WAIT_REQUEUE_PI`, anything else | the kernel's: blocks the thread | the kernel's |
//!
//! Requeueing a parked coroutine would move it to another key behind its
//! back (its timeout would then dequeue from the wrong queue), so the requeue
//! ops wake instead: futex callers must accept spurious wake-ups, and glibc's
//! condition variables stopped requeueing in 2.25. WAKE_OP (glibc's old
//! condvar) cannot tell us whether its condition held, so it wakes as if it
//! had. PI locks are co-owned by the kernel (it boosts the owner's thread);
//! green threads' PI mutexes are glibc's already.
//!
//! `FUTEX_PRIVATE_FLAG` does not matter in the lot (one process). The kernel
//! keys a private and a shared futex differently, so `call` passes the op's
//! flag on to the kernel, and `wake` told neither wakes kernel waiters of both.
//!
//! **Wakes the lot never sees.** A waker that is not trapped — a native thread,
//! an offload thread, a coroutine of a thread without dispatch — makes a kernel
//! FUTEX_WAKE that finds nobody: the coroutine is in the lot, not in the
//! kernel. Every futex protocol changes the word before it wakes, so a parked
//! coroutine re-reads its word on a backoff (`FIRST_RECHECK` doubling up to
//! `MAX_RECHECK`, longer when many wait, see `slowest_recheck`) and returns 0 —
//! a legal spurious wake-up — once it differs. A
//! word that changed and changed back (A-B-A) before a re-check loses that
//! wake, exactly as when a native waiter is preempted between reading the word
//! and entering FUTEX_WAIT: every correct protocol survives it (a lock word back
//! at "contended" promises another wake; condvar and semaphore words count).
//! Chosen over a relay thread in the kernel (one `futex_waitv` of up to 128
//! words, re-armed at every park): that makes each park a kick of another
//! thread (two system calls and a context switch) to speed up only the rare
//! untrapped wake, which the re-check delivers within `MAX_RECHECK` (measured:
//! a native store seen after a median 0.7 ms by a waiter parked for 0–1 ms, 2.5
//! ms parked for 100 ms). A re-check is a timer and a load; measured, 1000
//! coroutines parked with a 5 ms cap cost 17% of a core, hence the cap grows
//! with the number of waiters (1000 waiters: 100 ms, 1.6% of a core, as for
//! one waiter).
//!
//! A signal handler that runs on the thread ends a wait with EINTR as the
//! kernel's does: always for a timed wait, for an untimed one only if the
//! handler lacks SA_RESTART (else the wait goes on, and a word that changed
//! meanwhile gives EAGAIN, as the restarted call would). Cancellation and an
//! enclosing `timeout()` do not end a futex wait (the lock code above us could
//! not unwind). A coroutine waiting until a `CLOCK_REALTIME` deadline does not
//! follow later jumps of that clock.

use std::cell::Cell;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::time::{Duration, Instant};

use libc::{EAGAIN, EINTR, EINVAL, ETIMEDOUT, c_int, c_long, timespec};

use super::scheduler::{Breaks, current_task, in_coroutine, without_parking};
use super::{Wake, parking};
use crate::sys::futex::call as kernel;
use crate::sys::time::timespec_after;
use crate::sys::{deadline_after, deadline_at, timespec_duration};

/// First re-check of a parked waiter's word, for a wake the lot did not see.
const FIRST_RECHECK: Duration = Duration::from_micros(100);
/// Slowest re-check: the longest an untrapped wake waits to be noticed.
const MAX_RECHECK: Duration = Duration::from_millis(5);
/// Coroutines parked in `wait`, which share `RECHECKS_PER_SECOND`.
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Roughly the most re-checks a second all waiters together make once parked
/// for long (a rate at which they cost ≈ 2% of a core).
const RECHECKS_PER_SECOND: u32 = 10_000;

/// The slowest re-check: `MAX_RECHECK`, or longer so that the waiters together
/// stay near `RECHECKS_PER_SECOND`.
fn slowest_recheck() -> Duration {
    let waiting = u32::try_from(WAITING.load(Relaxed)).unwrap_or(u32::MAX);
    MAX_RECHECK.max(Duration::from_secs(1) / RECHECKS_PER_SECOND * waiting)
}

const CMD_MASK: c_int = !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);

/// Waits while the word at `uaddr` holds `expected`, until `deadline`, for a
/// wake whose bitset shares a bit with `bitset`. Ok on a wake (maybe spurious);
/// Err(EAGAIN) if the word did not hold `expected`, ETIMEDOUT, EINTR, EINVAL
/// (misaligned word, empty bitset), EFAULT (unreadable word). Outside a
/// coroutine this is the kernel's private FUTEX_WAIT_BITSET (`call` keeps a
/// shared op shared).
pub(crate) fn wait(
    uaddr: *const u32,
    expected: u32,
    deadline: Option<Instant>,
    bitset: u32,
) -> Result<(), i32> {
    if bitset == 0 || !uaddr.is_aligned() {
        return Err(EINVAL);
    }
    if !may_park() {
        return kernel_wait(uaddr, expected, deadline, bitset, libc::FUTEX_PRIVATE_FLAG);
    }
    // The kernel reads the word once for us: an address it cannot read fails
    // with EFAULT as natively instead of faulting in our load. A deadline at
    // the clock's epoch makes it return at once.
    let epoch = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let op = libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG;
    // SAFETY: `epoch` is a live absolute timespec; the kernel checks `uaddr`.
    match unsafe { kernel(uaddr, op, expected, &epoch, std::ptr::null(), bitset) } {
        Err(ETIMEDOUT) => {}
        // For that instant this thread was a kernel waiter: a wake that found
        // it there counted it as woken, so the wake is ours to return.
        Ok(_) => return Ok(()),
        Err(e) => return Err(e),
    }
    // SAFETY: the kernel just read this aligned word; futex words are accessed
    // atomically by every party.
    let word = unsafe { &*uaddr.cast::<AtomicU32>() };
    let mut pause = FIRST_RECHECK;
    WAITING.fetch_add(1, Relaxed);
    let _waiting = Counted;
    // Until the first park, a changed word is EAGAIN; after, a wake.
    let mut parked_once = false;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(ETIMEDOUT);
        }
        let recheck = Some(Instant::now() + pause).filter(|_| !tests::no_recheck(uaddr));
        let until = match (deadline, recheck) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        };
        let changed = Cell::new(false);
        super::scheduler::label(&const { super::Label::new("futex", super::Family::Futex) });
        let wake = parking::park_on_masked(uaddr as usize, until, Breaks::Signal, bitset, || {
            changed.set(word.load(SeqCst) != expected);
            !changed.get()
        });
        if changed.get() {
            return if parked_once { Ok(()) } else { Err(EAGAIN) };
        }
        parked_once = true;
        match wake {
            Wake::TimedOut => {
                if word.load(SeqCst) != expected {
                    tests::rescued(uaddr);
                    return Ok(());
                }
                pause = (pause * 2).min(slowest_recheck());
            }
            Wake::Interrupted { restart } => {
                if !restart || deadline.is_some() {
                    return Err(EINTR);
                }
                parked_once = false;
            }
            _ => return Ok(()),
        }
    }
}

/// In a coroutine, and not inside `park_as`: there a wait is for one of our
/// own locks (a contended shard of the lot, reaching us through `syscall`),
/// whose holder never parks; a second park would corrupt the first.
fn may_park() -> bool {
    in_coroutine() && current_task().is_some_and(|t| !t.in_park.get())
}

/// Takes a waiter off `WAITING` however `wait` returns.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Relaxed);
    }
}

/// Wakes up to `n` waiters on `uaddr` whose bitset shares a bit with `bitset`:
/// one thread in the kernel first (the kernel always gets a wake), then
/// parked coroutines, longest-waiting first, then threads in the kernel again
/// (`kernel_wake`). Returns how many woke, at most `n`. Like the kernel, `n`
/// below 1 still wakes one.
pub(crate) fn wake(uaddr: *const u32, n: i32, bitset: u32, private: Option<bool>) -> i32 {
    without_parking(|| wake_now(uaddr, n, bitset, private))
}

fn wake_now(uaddr: *const u32, n: i32, bitset: u32, private: Option<bool>) -> i32 {
    let n = n.max(1);
    // One thread may wait twice on one word: a coroutine parked in the lot,
    // and the thread's own code blocked in the kernel under it (the park's
    // bookkeeping calling malloc, whose arena lock is the word). Waking only
    // the coroutine would leave both asleep, so the kernel always gets at
    // least one wake (a spurious one at worst, which its waiters accept), and
    // gets it first: that thread may hold the lot's queue lock while it
    // waits (`parking::enqueue` allocating), so a wake that took the queue
    // lock first would wait for it forever (measured: the stdio chat on two
    // workers hung so, each thread waiting for the other).
    let first = kernel_wake(uaddr, 1, bitset, private);
    let woken =
        first + parking::unpark_matching(uaddr as usize, (n - first) as usize, bitset) as i32;
    if woken >= n {
        return n;
    }
    woken + kernel_wake(uaddr, n - woken, bitset, private)
}

/// Wakes up to `n` threads waiting in the kernel on `uaddr`: private or shared
/// as `private` says or, if not known (None), first private then, for what
/// is left, shared. Returns how many woke.
fn kernel_wake(uaddr: *const u32, n: i32, bitset: u32, private: Option<bool>) -> i32 {
    let mut left = n;
    for flag in [libc::FUTEX_PRIVATE_FLAG, 0] {
        if left == 0 || private.is_some_and(|p| p != (flag != 0)) {
            continue;
        }
        let op = libc::FUTEX_WAKE_BITSET | flag;
        // SAFETY: FUTEX_WAKE_BITSET only uses the address as a key.
        let r = unsafe {
            kernel(
                uaddr,
                op,
                left as u32,
                std::ptr::null(),
                std::ptr::null(),
                bitset,
            )
        };
        left -= r.map_or(0, |r| r as i32);
    }
    n - left
}

/// Converts a futex op's timeout to a deadline: FUTEX_WAIT's is relative,
/// FUTEX_WAIT_BITSET's absolute on CLOCK_MONOTONIC, or CLOCK_REALTIME with
/// `FUTEX_CLOCK_REALTIME`. Null is never; a timespec the kernel refuses is
/// EINVAL.
pub(crate) fn deadline_from(op: c_int, timeout: *const timespec) -> Result<Option<Instant>, i32> {
    // SAFETY: null or the caller's readable timespec, as the kernel requires.
    let Some(ts) = (unsafe { timeout.as_ref() }) else {
        return Ok(None);
    };
    let valid = timespec_duration(ts).ok_or(EINVAL)?;
    if op & CMD_MASK == libc::FUTEX_WAIT {
        return Ok(Some(deadline_after(valid)));
    }
    let clock = if op & libc::FUTEX_CLOCK_REALTIME != 0 {
        libc::CLOCK_REALTIME
    } else {
        libc::CLOCK_MONOTONIC
    };
    deadline_at(clock, ts)
}

/// The whole futex(2) call, as the table at the top says: the result the
/// kernel would return (woken count, 0) or its errno.
///
/// # Safety
/// The arguments are the caller's futex(2) arguments: whatever the kernel would
/// read for `op` must be readable (the words themselves are checked).
pub(crate) unsafe fn call(
    uaddr: *mut u32,
    op: c_int,
    val: u32,
    timeout: *const timespec,
    uaddr2: *mut u32,
    val3: u32,
) -> Result<c_long, i32> {
    let cmd = op & CMD_MASK;
    let private = Some(op & libc::FUTEX_PRIVATE_FLAG != 0);
    let realtime = op & libc::FUTEX_CLOCK_REALTIME != 0;
    // SAFETY: forwarding the caller's own arguments.
    let forward = || unsafe { kernel(uaddr, op, val, timeout, uaddr2, val3) };
    match cmd {
        libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET if may_park() => {
            let bitset = if cmd == libc::FUTEX_WAIT {
                libc::FUTEX_BITSET_MATCH_ANY as u32
            } else {
                val3
            };
            wait(uaddr, val, deadline_from(op, timeout)?, bitset).map(|()| 0)
        }
        libc::FUTEX_WAKE | libc::FUTEX_WAKE_BITSET if !realtime => {
            let bitset = if cmd == libc::FUTEX_WAKE {
                libc::FUTEX_BITSET_MATCH_ANY as u32
            } else {
                val3
            };
            if bitset == 0 {
                return Err(EINVAL);
            }
            Ok(wake(uaddr, val as i32, bitset, private).into())
        }
        libc::FUTEX_REQUEUE | libc::FUTEX_CMP_REQUEUE if !realtime => {
            let r = forward()?;
            Ok(r + without_parking(|| parking::unpark_all(uaddr as usize)) as c_long)
        }
        libc::FUTEX_WAKE_OP if !realtime => {
            let r = forward()?;
            let n2 = timeout as usize;
            let woken = without_parking(|| {
                parking::unpark_matching(uaddr as usize, val as usize, u32::MAX)
                    + parking::unpark_matching(uaddr2 as usize, n2, u32::MAX)
            });
            Ok(r + woken as c_long)
        }
        _ => forward(),
    }
}

/// A kernel wait with an absolute monotonic deadline (the `Instant` clock).
fn kernel_wait(
    uaddr: *const u32,
    expected: u32,
    deadline: Option<Instant>,
    bitset: u32,
    flag: c_int,
) -> Result<(), i32> {
    let ts = deadline.map(|d| {
        timespec_after(
            libc::CLOCK_MONOTONIC,
            d.saturating_duration_since(Instant::now()),
        )
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const timespec);
    // SAFETY: `ts_ptr` is null or a live absolute timespec; the kernel checks
    // the word's address.
    unsafe {
        kernel(
            uaddr,
            libc::FUTEX_WAIT_BITSET | flag,
            expected,
            ts_ptr,
            std::ptr::null(),
            bitset,
        )
    }
    .map(|_| ())
}

#[cfg(not(test))]
mod tests {
    #[inline(always)]
    pub(super) fn no_recheck(_: *const u32) -> bool {
        false
    }
    #[inline(always)]
    pub(super) fn rescued(_: *const u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Runtime, join_all, spawn};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
    use std::thread;

    const ANY: u32 = u32::MAX;

    /// The word whose waiters never re-check, so that a lost wake hangs.
    static NO_RECHECK: AtomicUsize = AtomicUsize::new(0);
    /// The words whose waits a re-check ended (it saw the word changed).
    static RESCUED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

    pub(super) fn no_recheck(uaddr: *const u32) -> bool {
        NO_RECHECK.load(SeqCst) == uaddr as usize
    }

    pub(super) fn rescued(uaddr: *const u32) {
        RESCUED.lock().unwrap().push(uaddr as usize);
    }

    fn ptr(w: &AtomicU32) -> *const u32 {
        w.as_ptr()
    }

    /// FUTEX_WAKE by a bare `syscall` instruction: a waker no hook and no
    /// dispatch sees, as glibc's internal unlock on a native thread.
    fn untrapped_wake(w: &AtomicU32, n: i32) -> i64 {
        let r: i64;
        // SAFETY: futex(2) FUTEX_WAKE only uses the address as a key; the
        // registers the kernel clobbers are declared.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_futex => r,
                in("rdi") w.as_ptr(),
                in("rsi") libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                in("rdx") n,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        r
    }

    /// Runs this thread's coroutines until `n` wait on `w` (at most 10 s).
    fn until_parked(w: &AtomicU32, n: usize) {
        let end = Instant::now() + Duration::from_secs(10);
        while parking::waiters(ptr(w) as usize) < n {
            assert!(Instant::now() < end, "{n} coroutines never parked");
            crate::yield_now();
        }
    }

    /// Waits, outside any coroutine, until `cond` holds or `limit` passes.
    fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let end = Instant::now() + limit;
        while !cond() {
            if Instant::now() > end {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn a_coroutine_waits_parked_and_a_coroutine_wakes_it() {
        let word = Arc::new(AtomicU32::new(0));
        let ticks = Arc::new(AtomicUsize::new(0));
        let (w, t) = (word.clone(), ticks.clone());
        let waiter = spawn(move || {
            let r = wait(ptr(&w), 0, None, ANY);
            (r, t.load(SeqCst))
        })
        .unwrap();
        let (w, t) = (word.clone(), ticks.clone());
        let ticker = spawn(move || {
            for _ in 0..5 {
                t.fetch_add(1, SeqCst);
                crate::yield_now();
            }
            w.store(1, SeqCst);
            wake(ptr(&w), 1, ANY, None)
        })
        .unwrap();
        let woken = ticker.join().unwrap();
        // The waiter's thread ran the ticker while it waited.
        assert_eq!(waiter.join().unwrap(), (Ok(()), 5));
        assert_eq!(woken, 1);
    }

    #[test]
    fn a_changed_word_is_eagain_inside_and_outside() {
        let word = AtomicU32::new(7);
        assert_eq!(wait(ptr(&word), 8, None, ANY), Err(EAGAIN));
        let word = Arc::new(word);
        let w = word.clone();
        let inside = spawn(move || wait(ptr(&w), 8, None, ANY)).unwrap();
        assert_eq!(inside.join().unwrap(), Err(EAGAIN));
        let misaligned = (word.as_ptr() as usize + 1) as *const u32;
        assert_eq!(wait(misaligned, 7, None, ANY), Err(EINVAL));
        assert_eq!(wait(ptr(&word), 7, None, 0), Err(EINVAL));
        let bad = spawn(|| wait(8 as *const u32, 0, None, ANY)).unwrap();
        assert_eq!(bad.join().unwrap(), Err(libc::EFAULT));
    }

    #[test]
    fn a_deadline_is_etimedout_inside_and_outside_and_others_run_meanwhile() {
        let word = Arc::new(AtomicU32::new(0));
        let soon = || Some(Instant::now() + Duration::from_millis(30));
        let start = Instant::now();
        assert_eq!(wait(ptr(&word), 0, soon(), ANY), Err(ETIMEDOUT));
        assert!(start.elapsed() >= Duration::from_millis(30));
        let ticks = Arc::new(AtomicUsize::new(0));
        let w = word.clone();
        let waiter = spawn(move || {
            let start = Instant::now();
            (wait(ptr(&w), 0, soon(), ANY), start.elapsed())
        })
        .unwrap();
        let t = ticks.clone();
        let ticker = spawn(move || {
            while !waiter.is_finished() {
                t.fetch_add(1, SeqCst);
                crate::sleep(Duration::from_millis(1));
            }
            waiter.join().unwrap()
        })
        .unwrap();
        let (r, waited) = ticker.join().unwrap();
        assert_eq!(r, Err(ETIMEDOUT));
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(ticks.load(SeqCst) >= 5);
        // A deadline already past still reads the word first, as the kernel.
        assert_eq!(wait(ptr(&word), 1, Some(Instant::now()), ANY), Err(EAGAIN));
    }

    #[test]
    fn an_untrapped_kernel_wake_reaches_a_parked_coroutine_through_the_recheck() {
        let word = Arc::new(AtomicU32::new(0));
        let parked = Arc::new(AtomicBool::new(false));
        let (w, p) = (word.clone(), parked.clone());
        let waiter = spawn(move || {
            p.store(true, SeqCst);
            let start = Instant::now();
            (wait(ptr(&w), 0, None, ANY), start.elapsed())
        })
        .unwrap();
        let w = word.clone();
        let native = thread::spawn(move || {
            assert!(eventually(Duration::from_secs(10), || parked.load(SeqCst)));
            thread::sleep(Duration::from_millis(20));
            w.store(1, SeqCst);
            // The kernel has nobody to wake: the coroutine is in the lot.
            untrapped_wake(&w, 1)
        });
        let (r, waited) = waiter.join().unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(native.join().unwrap(), 0);
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(RESCUED.lock().unwrap().contains(&(word.as_ptr() as usize)));
    }

    #[test]
    fn a_native_thread_calling_wake_finds_a_kernel_waiter_then_parked_coroutines() {
        let word = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let w = word.clone();
                spawn(move || wait(ptr(&w), 0, None, ANY)).unwrap()
            })
            .collect();
        until_parked(&word, 3);
        // A native thread blocked in the kernel on the same word.
        let w = word.clone();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let in_kernel = thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            wait(ptr(&w), 0, None, ANY)
        });
        let stat = format!("/proc/self/task/{}/stat", tid_rx.recv().unwrap());
        // Asleep (state S) once in the kernel's wait: it does nothing else.
        let asleep = || {
            let s = std::fs::read_to_string(&stat).unwrap_or_default();
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('S'))
        };
        assert!(eventually(Duration::from_secs(10), asleep));
        word.store(1, SeqCst);
        let w = word.clone();
        let (first, rest) = thread::spawn(move || {
            (
                wake(ptr(&w), 2, ANY, None),
                wake(ptr(&w), i32::MAX, ANY, None),
            )
        })
        .join()
        .unwrap();
        // The kernel's wake (always sent, first) took the thread, then one
        // coroutine; the count stays within what was asked; the second wake
        // found the two coroutines left.
        assert_eq!(first, 2);
        assert_eq!(in_kernel.join().unwrap(), Ok(()));
        assert_eq!(rest, 2);
        assert!(join_all(waiters).into_iter().all(|r| r.unwrap() == Ok(())));
    }

    #[test]
    fn a_wake_only_reaches_waiters_whose_bitset_it_shares() {
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let odd = spawn(move || wait(ptr(&w), 0, None, 0b01)).unwrap();
        let w = word.clone();
        let even = spawn(move || wait(ptr(&w), 0, None, 0b10)).unwrap();
        until_parked(&word, 2);
        assert_eq!(wake(ptr(&word), i32::MAX, 0b10, None), 1);
        assert!(even.join().unwrap().is_ok());
        assert!(!odd.is_finished());
        assert_eq!(wake(ptr(&word), i32::MAX, 0b01, None), 1);
        assert!(odd.join().unwrap().is_ok());
    }

    #[test]
    fn a_wake_from_one_worker_reaches_a_coroutine_parked_on_the_other() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let waiter = rt
            .spawn(move || (thread::current().id(), wait(ptr(&w), 0, None, ANY)))
            .unwrap();
        let w = word.clone();
        let waker = rt
            .spawn(move || {
                while wake(ptr(&w), 1, ANY, None) == 0 {
                    crate::sleep(Duration::from_millis(1));
                }
                thread::current().id()
            })
            .unwrap();
        let waker_thread = waker.join().unwrap();
        let (waiter_thread, r) = waiter.join().unwrap();
        assert_eq!(r, Ok(()));
        assert_ne!(waker_thread, waiter_thread);
    }

    /// Drepper's futex mutex ("Futexes are tricky", mutex #2): 0 free, 1
    /// locked, 2 locked with waiters.
    fn lock(w: &AtomicU32) {
        if w.compare_exchange(0, 1, SeqCst, SeqCst).is_ok() {
            return;
        }
        while w.swap(2, SeqCst) != 0 {
            let _ = wait(ptr(w), 2, None, ANY);
        }
    }

    fn unlock(w: &AtomicU32, untrapped: bool) {
        if w.swap(0, SeqCst) == 2 {
            if untrapped {
                untrapped_wake(w, 1);
            } else {
                wake(ptr(w), 1, ANY, None);
            }
        }
    }

    /// Increments by load and store under `lock`: an increment lost means two
    /// holders at once; a lost wake hangs (bounded below).
    fn contend(untrapped_native: bool) {
        const COROUTINES: usize = 8;
        const NATIVE: usize = 2;
        const ROUNDS: u64 = 2000;
        let rt = Runtime::builder().workers(2).build().unwrap();
        let word = Arc::new(AtomicU32::new(0));
        let count = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let body = |untrapped: bool| {
            let (w, c, d) = (word.clone(), count.clone(), done.clone());
            move || {
                for i in 0..ROUNDS {
                    lock(&w);
                    let v = c.load(SeqCst);
                    // Long enough a hold for others to contend.
                    for _ in 0..200 {
                        std::hint::spin_loop();
                    }
                    c.store(v + 1, SeqCst);
                    if i % 8 == 0 {
                        thread::yield_now();
                    }
                    unlock(&w, untrapped);
                }
                d.fetch_add(1, SeqCst);
            }
        };
        let hs: Vec<_> = (0..COROUTINES)
            .map(|_| rt.spawn(body(false)).unwrap())
            .collect();
        let natives: Vec<_> = (0..NATIVE)
            .map(|_| thread::spawn(body(untrapped_native)))
            .collect();
        let all = COROUTINES + NATIVE;
        let finished = eventually(Duration::from_secs(60), || done.load(SeqCst) == all);
        assert!(
            finished,
            "{} of {all} done: a wake was lost",
            done.load(SeqCst)
        );
        join_all(hs);
        natives.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(count.load(SeqCst), all as u64 * ROUNDS);
    }

    #[test]
    fn a_lock_contended_by_coroutines_and_native_threads_excludes_and_finishes() {
        contend(false);
        contend(true);
    }

    /// Two parties hand a turn back and forth `rounds` times through one word
    /// (each waits for its turn, then passes it and wakes): every wake that
    /// is lost hangs both, since nothing else ever wakes them. No re-checks.
    fn ping_pong(
        rounds: u32,
        a: impl FnOnce(Box<dyn FnOnce() + Send>),
        b: impl FnOnce(Box<dyn FnOnce() + Send>),
    ) {
        let word = Arc::new(AtomicU32::new(0));
        NO_RECHECK.store(word.as_ptr() as usize, SeqCst);
        let done = Arc::new(AtomicUsize::new(0));
        let party = |me: u32| -> Box<dyn FnOnce() + Send> {
            let (w, d) = (word.clone(), done.clone());
            Box::new(move || {
                for round in 0..rounds {
                    let turn = round * 2 + me;
                    loop {
                        let seen = w.load(SeqCst);
                        if seen == turn {
                            break;
                        }
                        let _ = wait(ptr(&w), seen, None, ANY);
                    }
                    w.store(turn + 1, SeqCst);
                    wake(ptr(&w), 1, ANY, None);
                }
                d.fetch_add(1, SeqCst);
            })
        };
        a(party(0));
        b(party(1));
        let finished = eventually(Duration::from_secs(60), || done.load(SeqCst) == 2);
        NO_RECHECK.store(0, SeqCst);
        assert!(finished, "stuck at {}: a wake was lost", word.load(SeqCst));
    }

    #[test]
    fn a_hand_off_between_workers_and_to_a_native_thread_loses_no_wake() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let on_rt = |f: Box<dyn FnOnce() + Send>| drop(rt.spawn(f).unwrap());
        ping_pong(3000, on_rt, on_rt);
        let native = |f: Box<dyn FnOnce() + Send>| drop(thread::spawn(f));
        ping_pong(3000, on_rt, native);
    }

    /// futex(2) through `call`, as the hooks make it.
    fn futex(
        w: &AtomicU32,
        op: c_int,
        val: u32,
        ts: Option<&timespec>,
        w2: Option<&AtomicU32>,
        val3: u32,
    ) -> Result<c_long, i32> {
        let ts = ts.map_or(std::ptr::null(), |t| t as *const timespec);
        let w2 = w2.map_or(std::ptr::null_mut(), |w| w.as_ptr());
        // SAFETY: live words and an optional live timespec.
        unsafe { call(w.as_ptr(), op, val, ts, w2, val3) }
    }

    const PRIVATE: c_int = libc::FUTEX_PRIVATE_FLAG;

    /// Parks `n` coroutines on `word` (expecting 0) and lets them queue.
    fn park_some(word: &Arc<AtomicU32>, n: usize) -> Vec<crate::JoinHandle<Result<c_long, i32>>> {
        let hs = (0..n)
            .map(|_| {
                let w = word.clone();
                spawn(move || futex(&w, libc::FUTEX_WAIT | PRIVATE, 0, None, None, 0)).unwrap()
            })
            .collect();
        until_parked(word, n);
        hs
    }

    #[test]
    fn call_times_out_relative_and_absolute_waits_on_either_clock() {
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let h = spawn(move || {
            let rel = timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            let start = Instant::now();
            let r = futex(&w, libc::FUTEX_WAIT | PRIVATE, 0, Some(&rel), None, 0);
            assert!(start.elapsed() >= Duration::from_millis(20));
            let mut now = timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes one timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
            let abs = timespec {
                tv_sec: now.tv_sec,
                tv_nsec: now.tv_nsec,
            };
            let op = libc::FUTEX_WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME | PRIVATE;
            let past = futex(&w, op, 0, Some(&abs), None, ANY);
            let bad = timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000_000,
            };
            let invalid = futex(&w, libc::FUTEX_WAIT | PRIVATE, 0, Some(&bad), None, 0);
            let no_bits = futex(&w, libc::FUTEX_WAIT_BITSET | PRIVATE, 0, None, None, 0);
            (r, past, invalid, no_bits)
        })
        .unwrap();
        let out = (Err(ETIMEDOUT), Err(ETIMEDOUT), Err(EINVAL), Err(EINVAL));
        assert_eq!(h.join().unwrap(), out);
        // The same answers from the kernel, outside.
        let rel = timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        assert_eq!(
            futex(&word, libc::FUTEX_WAIT | PRIVATE, 0, Some(&rel), None, 0),
            Err(ETIMEDOUT)
        );
        let bad = timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000_000,
        };
        assert_eq!(
            futex(&word, libc::FUTEX_WAIT | PRIVATE, 0, Some(&bad), None, 0),
            Err(EINVAL)
        );
    }

    #[test]
    fn call_requeue_checks_the_word_then_wakes_every_parked_coroutine() {
        let word = Arc::new(AtomicU32::new(0));
        let other = AtomicU32::new(0);
        let hs = park_some(&word, 3);
        let op = libc::FUTEX_CMP_REQUEUE | PRIVATE;
        // A changed word: EAGAIN, and nobody woke.
        let requeue_all = std::ptr::without_provenance::<timespec>(100);
        // SAFETY: CMP_REQUEUE reads no timespec (the argument is a count).
        let r = unsafe { call(word.as_ptr(), op, 1, requeue_all, other.as_ptr(), 7) };
        assert_eq!(r, Err(EAGAIN));
        assert!(hs.iter().all(|h| !h.is_finished()));
        // Wake one, requeue the rest: here they all wake, spuriously.
        // SAFETY: CMP_REQUEUE reads no timespec (the argument is a count).
        let r = unsafe { call(word.as_ptr(), op, 1, requeue_all, other.as_ptr(), 0) };
        assert_eq!(r, Ok(3));
        assert!(join_all(hs).into_iter().all(|r| r.unwrap() == Ok(0)));
    }

    #[test]
    fn call_wake_op_wakes_coroutines_on_both_words() {
        let (a, b) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let on_a = park_some(&a, 2);
        let on_b = park_some(&b, 1);
        // FUTEX_OP_SET 5 on b, wake b's waiters if its old value was 0.
        let op_set_b = (1 << 28) | (5 << 12);
        let one = std::ptr::without_provenance::<timespec>(1);
        // SAFETY: WAKE_OP reads no timespec (the argument is a count).
        let r = unsafe {
            call(
                a.as_ptr(),
                libc::FUTEX_WAKE_OP | PRIVATE,
                2,
                one,
                b.as_ptr(),
                op_set_b,
            )
        };
        assert_eq!(r, Ok(3));
        assert_eq!(b.load(SeqCst), 5);
        assert!(
            join_all(on_a.into_iter().chain(on_b))
                .into_iter()
                .all(|r| r.unwrap() == Ok(0))
        );
    }

    #[test]
    fn call_keeps_a_shared_wake_shared_and_forwards_what_it_does_not_emulate() {
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        // A native waiter on the shared (not private) key.
        let shared = thread::spawn(move || futex(&w, libc::FUTEX_WAIT, 0, None, None, 0));
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            futex(&word, libc::FUTEX_WAKE | PRIVATE, 1, None, None, 0),
            Ok(0)
        );
        assert_eq!(futex(&word, libc::FUTEX_WAKE, 1, None, None, 0), Ok(1));
        assert_eq!(shared.join().unwrap(), Ok(0));
        // A priority-inheritance lock is the kernel's: it writes our thread id.
        let pi = AtomicU32::new(0);
        assert_eq!(
            futex(&pi, libc::FUTEX_TRYLOCK_PI | PRIVATE, 0, None, None, 0),
            Ok(0)
        );
        // SAFETY: gettid has no preconditions.
        assert_eq!(pi.load(SeqCst), unsafe { libc::gettid() } as u32);
        assert_eq!(futex(&word, 99, 0, None, None, 0), Err(libc::ENOSYS));
    }

    static EINTR_SEEN: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn count(_: c_int) {
        EINTR_SEEN.fetch_add(1, SeqCst);
    }

    fn handle(sig: c_int, flags: c_int) {
        // SAFETY: a zeroed sigaction with an empty mask and a handler that
        // only counts.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = count as *const () as libc::sighandler_t;
            act.sa_flags = flags;
            libc::sigemptyset(&mut act.sa_mask);
            assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
        }
    }

    /// Signals `thread` every 10 ms until `stop`, at most 10 s; how many sent.
    fn keep_signalling(thread: libc::pthread_t, sig: c_int, stop: &AtomicBool) -> usize {
        let mut sent = 0;
        while !stop.load(SeqCst) && sent < 1000 {
            // SAFETY: `thread` lives until `stop` is set.
            assert_eq!(unsafe { libc::pthread_kill(thread, sig) }, 0);
            sent += 1;
            thread::sleep(Duration::from_millis(10));
        }
        sent
    }

    #[test]
    fn a_signal_handler_interrupts_a_wait_as_it_interrupts_the_kernels() {
        let plain = libc::SIGRTMIN() + 5;
        let restarting = libc::SIGRTMIN() + 6;
        handle(plain, 0);
        handle(restarting, libc::SA_RESTART);
        // SAFETY: no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        let word = Arc::new(AtomicU32::new(0));
        let run = |sig: c_int, deadline: Option<Duration>, outside: bool| {
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            let w = word.clone();
            let call = move || {
                let r = wait(ptr(&w), 0, deadline.map(|d| Instant::now() + d), ANY);
                s.store(true, SeqCst);
                r
            };
            let st = stop.clone();
            let signaller = thread::spawn(move || keep_signalling(me as libc::pthread_t, sig, &st));
            let r = if outside {
                call()
            } else {
                spawn(call).unwrap().join().unwrap()
            };
            stop.store(true, SeqCst);
            (r, signaller.join().unwrap())
        };
        // Without SA_RESTART, or with a timeout, a handler ends the wait.
        for outside in [true, false] {
            assert_eq!(
                run(plain, None, outside).0,
                Err(EINTR),
                "outside: {outside}"
            );
            let timed = Some(Duration::from_secs(10));
            assert_eq!(
                run(restarting, timed, outside).0,
                Err(EINTR),
                "outside: {outside}"
            );
        }
        // With SA_RESTART and no timeout the wait goes on until the deadline of
        // the test's own waker: handlers ran and the wait was still there.
        let w = word.clone();
        let waker = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            w.store(1, SeqCst);
            wake(ptr(&w), 1, ANY, None)
        });
        let before = EINTR_SEEN.load(SeqCst);
        let (r, sent) = run(restarting, None, false);
        assert_eq!(r, Ok(()));
        assert_eq!(waker.join().unwrap(), 1);
        assert!(
            sent >= 5 && EINTR_SEEN.load(SeqCst) - before >= 5,
            "{sent} signals"
        );
    }
}
