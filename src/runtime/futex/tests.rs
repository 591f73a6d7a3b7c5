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
    let start = Instant::now();
    let (r, sent) = run(restarting, None, false);
    // The waker's store ended it: through its wake (0); or, the waker
    // descheduled between its store and its wake (a loaded machine), through
    // a re-check that saw the store (0, a legal spurious wake) or a handler's
    // restart that found the word changed (EAGAIN, as the kernel's restarted
    // wait reports).
    assert!(matches!(r, Ok(()) | Err(EAGAIN)), "{r:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "the wait ended before the store"
    );
    waker.join().unwrap();
    assert!(
        sent >= 5 && EINTR_SEEN.load(SeqCst) - before >= 5,
        "{sent} signals"
    );
}
