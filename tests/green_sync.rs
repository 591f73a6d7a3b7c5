//! Green-thread synchronisation: pthread mutexes, condvars, rwlocks, barriers and
//! semaphores park coroutines, not their OS thread, and keep per-coroutine
//! semantics; native threads share the same objects.
//!
//! Every test turns green mode on before touching a pthread object (the whole
//! binary runs with it on, as a preloaded program with PATCHALL_GREEN_THREADS=1).

mod common;
mod waits;

use std::cell::UnsafeCell;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libc::{EAGAIN, EBUSY, EDEADLK, EINVAL, EOVERFLOW, EPERM, ETIMEDOUT, c_int, timespec};
use patchall::hooks::pthread_sync as sync;

fn green() {
    patchall::hooks::green_threads::set_enabled(true);
}

/// A C synchronisation object shared by coroutines and threads.
struct Obj<T>(UnsafeCell<T>);

// SAFETY: the pthread objects are designed to be shared between threads; the
// tests only hand out raw pointers to them.
unsafe impl<T> Sync for Obj<T> {}
// SAFETY: as above.
unsafe impl<T> Send for Obj<T> {}

impl<T> Obj<T> {
    fn new(v: T) -> Arc<Obj<T>> {
        Arc::new(Obj(UnsafeCell::new(v)))
    }

    fn ptr(&self) -> *mut T {
        self.0.get()
    }
}

/// A counter only ever touched under a lock the test holds.
struct Unsync(UnsafeCell<u64>);
// SAFETY: every access happens with the test's mutex held.
unsafe impl Sync for Unsync {}

fn lock(m: &Obj<libc::pthread_mutex_t>) -> c_int {
    // SAFETY: a live, initialised mutex.
    unsafe { libc::pthread_mutex_lock(m.ptr()) }
}

fn unlock(m: &Obj<libc::pthread_mutex_t>) -> c_int {
    // SAFETY: as above.
    unsafe { libc::pthread_mutex_unlock(m.ptr()) }
}

fn trylock(m: &Obj<libc::pthread_mutex_t>) -> c_int {
    // SAFETY: as above.
    unsafe { libc::pthread_mutex_trylock(m.ptr()) }
}

fn now(clock: libc::clockid_t) -> timespec {
    let mut ts = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

fn after(clock: libc::clockid_t, d: Duration) -> timespec {
    let t = now(clock);
    let ns = t.tv_nsec as u64 + u64::from(d.subsec_nanos());
    timespec {
        tv_sec: t.tv_sec + d.as_secs() as libc::time_t + (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Counts while it runs: proof that the thread kept running coroutines.
struct Ticker {
    ticks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: patchall::JoinHandle<()>,
}

impl Ticker {
    fn start() -> Ticker {
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (ticks.clone(), stop.clone());
        let handle = patchall::spawn(move || {
            while !s.load(SeqCst) {
                t.fetch_add(1, SeqCst);
                patchall::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
        Ticker {
            ticks,
            stop,
            handle,
        }
    }

    fn ticks(&self) -> u64 {
        self.ticks.load(SeqCst)
    }

    fn stop(self) {
        self.stop.store(true, SeqCst);
        self.handle.join().unwrap();
    }
}

fn mutex_of_kind(kind: c_int) -> Arc<Obj<libc::pthread_mutex_t>> {
    let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
    // SAFETY: attribute and mutex are valid for the calls.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
        assert_eq!(libc::pthread_mutexattr_settype(&mut attr, kind), 0);
        assert_eq!(libc::pthread_mutex_init(m.ptr(), &attr), 0);
        libc::pthread_mutexattr_destroy(&mut attr);
    }
    m
}

#[test]
fn contention_parks_the_coroutine_not_the_thread() {
    green();
    let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
    let log = Arc::new(Mutex::new(Vec::new()));
    let ticker = Ticker::start();
    let holder = {
        let (m, log) = (m.clone(), log.clone());
        patchall::spawn(move || {
            assert_eq!(lock(&m), 0);
            log.lock().unwrap().push("holder locked");
            patchall::sleep(Duration::from_millis(60));
            log.lock().unwrap().push("holder unlocks");
            assert_eq!(unlock(&m), 0);
        })
        .unwrap()
    };
    let ticks = ticker.ticks.clone();
    let waiter = {
        let (m, log) = (m.clone(), log.clone());
        patchall::spawn(move || {
            let before = ticks.load(SeqCst);
            assert_eq!(trylock(&m), EBUSY);
            assert_eq!(lock(&m), 0);
            log.lock().unwrap().push("waiter locked");
            let during = ticks.load(SeqCst) - before;
            assert_eq!(unlock(&m), 0);
            during
        })
        .unwrap()
    };
    holder.join().unwrap();
    let ticks_while_waiting = waiter.join().unwrap();
    ticker.stop();
    assert_eq!(
        *log.lock().unwrap(),
        ["holder locked", "holder unlocks", "waiter locked"]
    );
    // 60 ms at one tick per ms; far fewer would mean the thread was blocked.
    assert!(
        ticks_while_waiting >= 10,
        "ticker ran {ticks_while_waiting} times"
    );
    // SAFETY: unlocked, no waiters.
    assert_eq!(unsafe { libc::pthread_mutex_destroy(m.ptr()) }, 0);
}

#[test]
fn a_recursive_mutex_belongs_to_one_coroutine() {
    green();
    for m in [
        Obj::new(libc::PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP),
        mutex_of_kind(libc::PTHREAD_MUTEX_RECURSIVE),
    ] {
        let b_locked = Arc::new(AtomicBool::new(false));
        let a = {
            let (m, b_locked) = (m.clone(), b_locked.clone());
            patchall::spawn(move || {
                assert_eq!(lock(&m), 0);
                assert_eq!(lock(&m), 0);
                assert_eq!(trylock(&m), 0);
                patchall::yield_now();
                patchall::yield_now();
                assert!(!b_locked.load(SeqCst));
                assert_eq!(unlock(&m), 0);
                assert_eq!(unlock(&m), 0);
                patchall::yield_now();
                assert!(!b_locked.load(SeqCst), "B got in while A still held once");
                assert_eq!(unlock(&m), 0);
                // A no longer owns it.
                assert_eq!(unlock(&m), EPERM);
            })
            .unwrap()
        };
        let b = {
            let (m, b_locked) = (m.clone(), b_locked.clone());
            patchall::spawn(move || {
                // Same OS thread as A, yet not the owner.
                assert_eq!(trylock(&m), EBUSY);
                assert_eq!(unlock(&m), EPERM);
                assert_eq!(lock(&m), 0);
                b_locked.store(true, SeqCst);
                assert_eq!(unlock(&m), 0);
            })
            .unwrap()
        };
        a.join().unwrap();
        b.join().unwrap();
        assert!(b_locked.load(SeqCst));
    }
}

#[test]
fn an_errorcheck_mutex_tells_coroutines_apart() {
    green();
    for m in [
        Obj::new(libc::PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP),
        mutex_of_kind(libc::PTHREAD_MUTEX_ERRORCHECK),
    ] {
        let a_locked = Arc::new(AtomicBool::new(false));
        let a = {
            let (m, a_locked) = (m.clone(), a_locked.clone());
            patchall::spawn(move || {
                assert_eq!(lock(&m), 0);
                assert_eq!(lock(&m), EDEADLK);
                assert_eq!(trylock(&m), EBUSY);
                a_locked.store(true, SeqCst);
                patchall::yield_now();
                patchall::yield_now();
                assert_eq!(unlock(&m), 0);
                assert_eq!(unlock(&m), EPERM);
            })
            .unwrap()
        };
        let b = {
            let (m, a_locked) = (m.clone(), a_locked.clone());
            patchall::spawn(move || {
                assert!(a_locked.load(SeqCst));
                assert_eq!(unlock(&m), EPERM);
                // Not a relock: B waits for A instead of getting EDEADLK.
                assert_eq!(lock(&m), 0);
                assert_eq!(unlock(&m), 0);
            })
            .unwrap()
        };
        a.join().unwrap();
        b.join().unwrap();
    }
}

#[test]
fn timedlock_times_out_and_clocklock_checks_its_clock() {
    green();
    let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
    let ticker = Ticker::start();
    let holder = {
        let m = m.clone();
        patchall::spawn(move || {
            assert_eq!(lock(&m), 0);
            patchall::sleep(Duration::from_millis(80));
            assert_eq!(unlock(&m), 0);
        })
        .unwrap()
    };
    let waiter = {
        let m = m.clone();
        patchall::spawn(move || {
            let bad = timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000_000,
            };
            // SAFETY: valid mutex and timespecs.
            unsafe {
                assert_eq!(libc::pthread_mutex_timedlock(m.ptr(), &bad), EINVAL);
                let past = timespec {
                    tv_sec: -1,
                    tv_nsec: 0,
                };
                assert_eq!(libc::pthread_mutex_timedlock(m.ptr(), &past), ETIMEDOUT);
                let start = Instant::now();
                let soon = after(libc::CLOCK_REALTIME, Duration::from_millis(20));
                assert_eq!(libc::pthread_mutex_timedlock(m.ptr(), &soon), ETIMEDOUT);
                assert!(start.elapsed() >= Duration::from_millis(15));
                let soon = after(libc::CLOCK_MONOTONIC, Duration::from_millis(10));
                assert_eq!(
                    sync::pthread_mutex_clocklock(m.ptr(), libc::CLOCK_PROCESS_CPUTIME_ID, &soon),
                    EINVAL
                );
                assert_eq!(
                    sync::pthread_mutex_clocklock(m.ptr(), libc::CLOCK_MONOTONIC, &soon),
                    ETIMEDOUT
                );
                let later = after(libc::CLOCK_MONOTONIC, Duration::from_secs(10));
                assert_eq!(
                    sync::pthread_mutex_clocklock(m.ptr(), libc::CLOCK_MONOTONIC, &later),
                    0
                );
            }
            assert_eq!(unlock(&m), 0);
        })
        .unwrap()
    };
    holder.join().unwrap();
    waiter.join().unwrap();
    assert!(ticker.ticks() >= 10);
    ticker.stop();
}

fn monotonic_cond() -> Arc<Obj<libc::pthread_cond_t>> {
    let c = Obj::new(libc::PTHREAD_COND_INITIALIZER);
    // SAFETY: valid attribute and condvar.
    unsafe {
        let mut attr: libc::pthread_condattr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_condattr_init(&mut attr), 0);
        assert_eq!(
            libc::pthread_condattr_setclock(&mut attr, libc::CLOCK_MONOTONIC),
            0
        );
        assert_eq!(libc::pthread_cond_init(c.ptr(), &attr), 0);
        libc::pthread_condattr_destroy(&mut attr);
    }
    c
}

#[test]
fn cond_signal_wakes_one_and_broadcast_wakes_all() {
    green();
    let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
    let c = Obj::new(libc::PTHREAD_COND_INITIALIZER);
    let tokens = Arc::new(Unsync(UnsafeCell::new(0)));
    let passed = Arc::new(AtomicU64::new(0));
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (m, c, tokens, passed) = (m.clone(), c.clone(), tokens.clone(), passed.clone());
            patchall::spawn(move || {
                assert_eq!(lock(&m), 0);
                // SAFETY: `tokens` is only touched with `m` held.
                while unsafe { *tokens.0.get() } == 0 {
                    // SAFETY: valid condvar, `m` held.
                    assert_eq!(unsafe { libc::pthread_cond_wait(c.ptr(), m.ptr()) }, 0);
                }
                // SAFETY: as above.
                unsafe { *tokens.0.get() -= 1 };
                passed.fetch_add(1, SeqCst);
                assert_eq!(unlock(&m), 0);
            })
            .unwrap()
        })
        .collect();
    let give = |n: u64, all: bool| {
        let (m, c, tokens) = (m.clone(), c.clone(), tokens.clone());
        patchall::spawn(move || {
            assert_eq!(lock(&m), 0);
            // SAFETY: `m` held.
            unsafe { *tokens.0.get() += n };
            // SAFETY: valid condvar.
            let r = unsafe {
                if all {
                    libc::pthread_cond_broadcast(c.ptr())
                } else {
                    libc::pthread_cond_signal(c.ptr())
                }
            };
            assert_eq!(r, 0);
            assert_eq!(unlock(&m), 0);
        })
        .unwrap()
        .join()
        .unwrap();
    };
    patchall::sleep(Duration::from_millis(10));
    assert_eq!(passed.load(SeqCst), 0);
    give(1, false);
    patchall::sleep(Duration::from_millis(10));
    assert_eq!(passed.load(SeqCst), 1);
    give(4, true);
    patchall::join_all(waiters);
    assert_eq!(passed.load(SeqCst), 5);
    // SAFETY: no waiters left.
    assert_eq!(unsafe { libc::pthread_cond_destroy(c.ptr()) }, 0);
}

#[test]
fn cond_timedwait_on_the_monotonic_clock() {
    green();
    let m = Obj::new(libc::PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP);
    let c = monotonic_cond();
    let ticker = Ticker::start();
    let ticks = ticker.ticks.clone();
    let (m2, c2) = (m.clone(), c.clone());
    let h = patchall::spawn(move || {
        assert_eq!(lock(&m2), 0);
        // SAFETY: valid objects; `m2` held throughout (the wait gives it back).
        unsafe {
            let bad = timespec {
                tv_sec: 0,
                tv_nsec: -1,
            };
            assert_eq!(
                libc::pthread_cond_timedwait(c2.ptr(), m2.ptr(), &bad),
                EINVAL
            );
            let before = ticks.load(SeqCst);
            let start = Instant::now();
            // A deadline on the monotonic clock: 30 ms from now.
            let at = after(libc::CLOCK_MONOTONIC, Duration::from_millis(30));
            assert_eq!(
                libc::pthread_cond_timedwait(c2.ptr(), m2.ptr(), &at),
                ETIMEDOUT
            );
            assert!(start.elapsed() >= Duration::from_millis(25));
            assert!(start.elapsed() < Duration::from_secs(5));
            assert!(ticks.load(SeqCst) - before >= 5);
            // The timeout came back with the mutex held: a relock is EDEADLK.
            assert_eq!(lock(&m2), EDEADLK);
            let at = after(libc::CLOCK_REALTIME, Duration::from_millis(20));
            assert_eq!(
                sync::pthread_cond_clockwait(c2.ptr(), m2.ptr(), libc::CLOCK_REALTIME, &at),
                ETIMEDOUT
            );
            // Signalled before its deadline: 0.
            let at = after(libc::CLOCK_MONOTONIC, Duration::from_secs(10));
            libc::pthread_cond_timedwait(c2.ptr(), m2.ptr(), &at)
        }
    })
    .unwrap();
    patchall::sleep(Duration::from_millis(100));
    assert_eq!(lock(&m), 0);
    // SAFETY: valid condvar.
    assert_eq!(unsafe { libc::pthread_cond_signal(c.ptr()) }, 0);
    assert_eq!(unlock(&m), 0);
    assert_eq!(h.join().unwrap(), 0);
    assert_eq!(
        unlock(&m),
        EPERM,
        "the waiter returned with the mutex, then exited"
    );
    ticker.stop();
}

#[test]
fn cond_wait_with_an_unowned_errorcheck_mutex_is_eperm() {
    green();
    let m = Obj::new(libc::PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP);
    let c = Obj::new(libc::PTHREAD_COND_INITIALIZER);
    // SAFETY: valid objects.
    assert_eq!(unsafe { libc::pthread_cond_wait(c.ptr(), m.ptr()) }, EPERM);
    // SAFETY: no waiter stayed behind.
    assert_eq!(unsafe { libc::pthread_cond_destroy(c.ptr()) }, 0);
}

/// glibc's `PTHREAD_RWLOCK_PREFER_*_NP` kinds (not in the libc crate).
const PREFER_READER: c_int = 0;
const PREFER_WRITER_NONRECURSIVE: c_int = 2;

/// An rwlock initialised by glibc with the given kind.
fn rwlock_of_kind(kind: c_int) -> Arc<Obj<libc::pthread_rwlock_t>> {
    let rw = Obj::new(libc::PTHREAD_RWLOCK_INITIALIZER);
    // SAFETY: an all-zero attr is a valid out-parameter for init; each call
    // gets valid pointers, and the attr is destroyed after use.
    unsafe {
        let mut attr: libc::pthread_rwlockattr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_rwlockattr_init(&mut attr), 0);
        assert_eq!(libc::pthread_rwlockattr_setkind_np(&mut attr, kind), 0);
        assert_eq!(libc::pthread_rwlock_init(rw.ptr(), &attr), 0);
        assert_eq!(libc::pthread_rwlockattr_destroy(&mut attr), 0);
    }
    rw
}

#[test]
fn rwlock_of_the_writer_preferring_kind_blocks_new_readers_while_writers_wait() {
    green();
    let rw = rwlock_of_kind(PREFER_WRITER_NONRECURSIVE);
    let log = Arc::new(Mutex::new(Vec::new()));
    let push = |log: &Arc<Mutex<Vec<&'static str>>>, s| log.lock().unwrap().push(s);
    let r1 = {
        let (rw, log) = (rw.clone(), log.clone());
        patchall::spawn(move || {
            // SAFETY: valid rwlock.
            assert_eq!(unsafe { libc::pthread_rwlock_rdlock(rw.ptr()) }, 0);
            push(&log, "r1 in");
            patchall::sleep(Duration::from_millis(40));
            push(&log, "r1 out");
            // SAFETY: held for reading.
            assert_eq!(unsafe { libc::pthread_rwlock_unlock(rw.ptr()) }, 0);
        })
        .unwrap()
    };
    let w = {
        let (rw, log) = (rw.clone(), log.clone());
        patchall::spawn(move || {
            // SAFETY: valid rwlock.
            unsafe {
                assert_eq!(libc::pthread_rwlock_trywrlock(rw.ptr()), EBUSY);
                let soon = after(libc::CLOCK_REALTIME, Duration::from_millis(5));
                assert_eq!(sync::pthread_rwlock_timedwrlock(rw.ptr(), &soon), ETIMEDOUT);
                assert_eq!(libc::pthread_rwlock_wrlock(rw.ptr()), 0);
                push(&log, "w in");
                assert_eq!(libc::pthread_rwlock_wrlock(rw.ptr()), EDEADLK);
                assert_eq!(libc::pthread_rwlock_rdlock(rw.ptr()), EDEADLK);
                patchall::sleep(Duration::from_millis(20));
                push(&log, "w out");
                assert_eq!(libc::pthread_rwlock_unlock(rw.ptr()), 0);
            }
        })
        .unwrap()
    };
    let r2 = {
        let (rw, log) = (rw.clone(), log.clone());
        patchall::spawn(move || {
            // Let the writer start waiting first.
            patchall::sleep(Duration::from_millis(15));
            // SAFETY: valid rwlock.
            unsafe {
                assert_eq!(libc::pthread_rwlock_tryrdlock(rw.ptr()), EBUSY);
                assert_eq!(libc::pthread_rwlock_rdlock(rw.ptr()), 0);
                push(&log, "r2 in");
                assert_eq!(libc::pthread_rwlock_unlock(rw.ptr()), 0);
            }
        })
        .unwrap()
    };
    patchall::join_all([r1, w, r2]);
    assert_eq!(
        *log.lock().unwrap(),
        ["r1 in", "r1 out", "w in", "w out", "r2 in"]
    );
    // SAFETY: unlocked; unlocking again is refused.
    unsafe {
        assert_eq!(libc::pthread_rwlock_unlock(rw.ptr()), EPERM);
        assert_eq!(libc::pthread_rwlock_destroy(rw.ptr()), 0);
    }
}

/// glibc's default kind lets readers in while a writer waits, so a thread that
/// holds a read lock may take it again (POSIX requires that readers may
/// recurse); the writer gets the lock when the last reader leaves. With
/// writers first this deadlocked: the second `rdlock` waited for the writer,
/// which waited for the first.
#[test]
fn rwlock_of_the_default_kind_lets_readers_recurse_while_a_writer_waits() {
    green();
    for rw in [
        Obj::new(libc::PTHREAD_RWLOCK_INITIALIZER),
        rwlock_of_kind(PREFER_READER),
    ] {
        let log = Arc::new(Mutex::new(Vec::new()));
        let push = |log: &Arc<Mutex<Vec<&'static str>>>, s| log.lock().unwrap().push(s);
        let reader = {
            let (rw, log) = (rw.clone(), log.clone());
            patchall::spawn(move || {
                // SAFETY: valid rwlock, unlocked as often as locked.
                unsafe {
                    assert_eq!(libc::pthread_rwlock_rdlock(rw.ptr()), 0);
                    push(&log, "r in");
                    // Let the writer start waiting.
                    patchall::sleep(Duration::from_millis(20));
                    // Timed, so that a deadlock fails the test instead of hanging it.
                    let soon = after(libc::CLOCK_REALTIME, Duration::from_secs(10));
                    let again = (
                        libc::pthread_rwlock_tryrdlock(rw.ptr()),
                        sync::pthread_rwlock_timedrdlock(rw.ptr(), &soon),
                    );
                    push(&log, "r again");
                    for r in [again.0, again.1] {
                        if r == 0 {
                            assert_eq!(libc::pthread_rwlock_unlock(rw.ptr()), 0);
                        }
                    }
                    patchall::sleep(Duration::from_millis(5));
                    push(&log, "r out");
                    assert_eq!(libc::pthread_rwlock_unlock(rw.ptr()), 0);
                    again
                }
            })
            .unwrap()
        };
        let writer = {
            let (rw, log) = (rw.clone(), log.clone());
            patchall::spawn(move || {
                // SAFETY: valid rwlock.
                unsafe {
                    assert_eq!(libc::pthread_rwlock_trywrlock(rw.ptr()), EBUSY);
                    assert_eq!(libc::pthread_rwlock_wrlock(rw.ptr()), 0);
                    push(&log, "w in");
                    assert_eq!(libc::pthread_rwlock_unlock(rw.ptr()), 0);
                }
            })
            .unwrap()
        };
        assert_eq!(
            reader.join().unwrap(),
            (0, 0),
            "read again while a writer waited"
        );
        writer.join().unwrap();
        assert_eq!(*log.lock().unwrap(), ["r in", "r again", "r out", "w in"]);
        // SAFETY: unlocked.
        assert_eq!(unsafe { libc::pthread_rwlock_destroy(rw.ptr()) }, 0);
    }
}

#[test]
fn rwlock_readers_share() {
    green();
    let rw = Obj::new(libc::PTHREAD_RWLOCK_INITIALIZER);
    let inside = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (rw, inside, most) = (rw.clone(), inside.clone(), most.clone());
            patchall::spawn(move || {
                // SAFETY: valid rwlock.
                assert_eq!(unsafe { libc::pthread_rwlock_rdlock(rw.ptr()) }, 0);
                let n = inside.fetch_add(1, SeqCst) + 1;
                most.fetch_max(n, SeqCst);
                patchall::sleep(Duration::from_millis(10));
                inside.fetch_sub(1, SeqCst);
                // SAFETY: held for reading.
                assert_eq!(unsafe { libc::pthread_rwlock_unlock(rw.ptr()) }, 0);
            })
            .unwrap()
        })
        .collect();
    patchall::join_all(hs);
    assert_eq!(most.load(SeqCst), 4);
}

#[test]
fn barrier_releases_each_round_with_one_serial_thread() {
    green();
    const N: usize = 4;
    const ROUNDS: usize = 3;
    let b = Obj::new(
        // SAFETY: an all-zero barrier is a valid out-parameter for init.
        unsafe { std::mem::zeroed::<libc::pthread_barrier_t>() },
    );
    assert_eq!(
        // SAFETY: valid barrier storage; no attribute.
        unsafe { libc::pthread_barrier_init(b.ptr(), std::ptr::null(), N as u32) },
        0
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    let hs: Vec<_> = (0..N)
        .map(|i| {
            let (b, log) = (b.clone(), log.clone());
            patchall::spawn(move || {
                let mut serial = 0;
                for round in 0..ROUNDS {
                    // Arrive at different times.
                    patchall::sleep(Duration::from_millis((i * 3) as u64));
                    log.lock().unwrap().push((round, "before"));
                    // SAFETY: valid barrier.
                    match unsafe { libc::pthread_barrier_wait(b.ptr()) } {
                        libc::PTHREAD_BARRIER_SERIAL_THREAD => serial += 1,
                        0 => {}
                        r => panic!("pthread_barrier_wait returned {r}"),
                    }
                    log.lock().unwrap().push((round, "after"));
                }
                serial
            })
            .unwrap()
        })
        .collect();
    let serials: usize = patchall::join_all(hs).into_iter().map(Result::unwrap).sum();
    assert_eq!(serials, ROUNDS, "exactly one serial thread per round");
    let log = log.lock().unwrap();
    for round in 0..ROUNDS {
        let last_before = log.iter().rposition(|&e| e == (round, "before")).unwrap();
        let first_after = log.iter().position(|&e| e == (round, "after")).unwrap();
        assert!(
            last_before < first_after,
            "round {round} let someone through early"
        );
    }
    // SAFETY: every waiter has returned.
    assert_eq!(unsafe { libc::pthread_barrier_destroy(b.ptr()) }, 0);
}

fn new_sem(value: u32) -> Arc<Obj<libc::sem_t>> {
    // SAFETY: zeroed storage is a valid out-parameter for sem_init.
    let s = Obj::new(unsafe { std::mem::zeroed::<libc::sem_t>() });
    // SAFETY: as above.
    assert_eq!(unsafe { libc::sem_init(s.ptr(), 0, value) }, 0);
    s
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn value(s: &Obj<libc::sem_t>) -> c_int {
    let mut v = -1;
    // SAFETY: valid semaphore and out-pointer.
    assert_eq!(unsafe { libc::sem_getvalue(s.ptr(), &mut v) }, 0);
    v
}

#[test]
fn semaphore_counts_and_times_out() {
    green();
    let s = new_sem(2);
    let ticker = Ticker::start();
    let ticks = ticker.ticks.clone();
    let s2 = s.clone();
    // The waiter says when it is about to block; the poster says when it posts.
    let (blocking, posted) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (blocking2, posted2) = (blocking.clone(), posted.clone());
    let h = patchall::spawn(move || {
        // SAFETY: valid semaphore and timespecs.
        unsafe {
            assert_eq!(libc::sem_trywait(s2.ptr()), 0);
            assert_eq!(libc::sem_wait(s2.ptr()), 0);
            assert_eq!(libc::sem_trywait(s2.ptr()), -1);
            assert_eq!(errno(), EAGAIN);
            let bad = timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000_000,
            };
            assert_eq!(libc::sem_timedwait(s2.ptr(), &bad), -1);
            assert_eq!(errno(), EINVAL);
            let before = ticks.load(SeqCst);
            let start = Instant::now();
            let at = after(libc::CLOCK_REALTIME, Duration::from_millis(30));
            assert_eq!(libc::sem_timedwait(s2.ptr(), &at), -1);
            assert_eq!(errno(), ETIMEDOUT);
            assert!(start.elapsed() >= Duration::from_millis(25));
            assert!(ticks.load(SeqCst) - before >= 5);
            let at = after(libc::CLOCK_MONOTONIC, Duration::from_millis(10));
            assert_eq!(
                sync::sem_clockwait(s2.ptr(), libc::CLOCK_MONOTONIC, &at),
                -1
            );
            assert_eq!(errno(), ETIMEDOUT);
            assert_eq!(
                sync::sem_clockwait(s2.ptr(), libc::CLOCK_PROCESS_CPUTIME_ID, &at),
                -1
            );
            assert_eq!(errno(), EINVAL);
            // Blocks until the poster below.
            blocking2.store(true, SeqCst);
            assert_eq!(libc::sem_wait(s2.ptr()), 0);
            posted2.load(SeqCst)
        }
    })
    .unwrap();
    let s3 = s.clone();
    let poster = patchall::spawn(move || {
        while !blocking.load(SeqCst) {
            patchall::sleep(Duration::from_millis(1));
        }
        // Long enough for the waiter to be parked in sem_wait.
        patchall::sleep(Duration::from_millis(30));
        posted.store(true, SeqCst);
        // SAFETY: valid semaphore.
        assert_eq!(unsafe { libc::sem_post(s3.ptr()) }, 0);
    })
    .unwrap();
    poster.join().unwrap();
    assert!(h.join().unwrap(), "sem_wait returned before the post");
    assert_eq!(value(&s), 0);
    ticker.stop();

    let full = new_sem(i32::MAX as u32);
    // SAFETY: valid semaphore.
    assert_eq!(unsafe { libc::sem_post(full.ptr()) }, -1);
    assert_eq!(errno(), EOVERFLOW);
    assert_eq!(value(&full), i32::MAX);
}

/// A real-time signal whose handler only counts, installed without SA_RESTART.
fn interrupting_signal() -> c_int {
    let sig = libc::SIGRTMIN() + 1;
    // SAFETY: a zeroed sigaction with an empty mask and a counting handler.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = waits::count as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
    }
    sig
}

/// What a `sem_wait` that signal handlers interrupt returns: on Linux,
/// glibc's futex wait gives EINTR after a handler without SA_RESTART and is
/// restarted after one with it (signal(7) lists `sem_wait` as never
/// restarted; the kernel restarts FUTEX_WAIT). The waiting thread is signalled
/// every 20 ms: until the wait ends (`restart` false; posted only if 10 s of
/// signals did not end it), or five times and then the semaphore is posted
/// (`restart` true). Returns the wait's result and errno, and how many
/// handlers ran.
fn interrupted_sem_wait(coroutine: bool, sig: c_int, restart: bool) -> (c_int, c_int, usize) {
    let s = new_sem(0);
    let (s1, s2) = (s.clone(), s.clone());
    let tid = Arc::new(AtomicU64::new(0));
    let t1 = tid.clone();
    let wait = move || {
        // SAFETY: gettid has no preconditions; valid semaphore.
        unsafe {
            t1.store(libc::gettid() as u64, SeqCst);
            let r = libc::sem_wait(s1.ptr());
            (r, if r == 0 { 0 } else { errno() })
        }
    };
    // Bounded: 500 rounds of 20 ms.
    let signal = move |nap: &dyn Fn(Duration), finished: &dyn Fn() -> bool| {
        while tid.load(SeqCst) == 0 {
            nap(Duration::from_millis(1));
        }
        for round in 0..500 {
            if finished() || (restart && round == 5) {
                break;
            }
            signal_thread(tid.load(SeqCst) as libc::pid_t, sig);
            nap(Duration::from_millis(20));
        }
        // Posted in the restart case, and to end a wait that no signal ended.
        if restart || !finished() {
            // SAFETY: valid semaphore.
            assert_eq!(unsafe { libc::sem_post(s2.ptr()) }, 0);
        }
    };
    let before = waits::HANDLED.load(SeqCst);
    let (r, e) = if coroutine {
        // A sibling on the same OS thread signals it while it waits.
        let waiter = Arc::new(patchall::spawn(wait).unwrap());
        let w = waiter.clone();
        patchall::spawn(move || signal(&patchall::sleep, &|| w.is_finished()))
            .unwrap()
            .join()
            .unwrap();
        Arc::into_inner(waiter).unwrap().join().unwrap()
    } else {
        let waiter = std::thread::spawn(wait);
        signal(&std::thread::sleep, &|| waiter.is_finished());
        waiter.join().unwrap()
    };
    let handled = waits::HANDLED.load(SeqCst) - before;
    assert_eq!(value(&s), 0, "the post, if any, was taken");
    (r, e, handled)
}

fn signal_thread(tid: libc::pid_t, sig: c_int) {
    assert_ne!(tid, 0, "the waiter has started");
    // SAFETY: tgkill to a thread of ours with a signal whose handler only counts.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig), 0);
    }
}

/// Taken by the tests that count handled signals: the count is process-wide.
static SIGNAL_TESTS: Mutex<()> = Mutex::new(());

/// A handler that ran before the call interrupts nothing: the kernel only
/// interrupts a wait in progress. (The scheduler notices handlers once a
/// round; a park that began after one, in the same round, was blamed for it.)
#[test]
fn a_signal_handled_before_sem_wait_does_not_interrupt_it() {
    let _serial = SIGNAL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    green();
    let sig = interrupting_signal();
    for coroutine in [false, true] {
        let s = new_sem(0);
        let (s1, s2) = (s.clone(), s.clone());
        let wait = move || {
            // SAFETY: gettid has no preconditions; valid semaphore.
            unsafe {
                signal_thread(libc::gettid(), sig);
                let r = libc::sem_wait(s1.ptr());
                (r, if r == 0 { 0 } else { errno() })
            }
        };
        let post = move || {
            // SAFETY: valid semaphore.
            assert_eq!(unsafe { libc::sem_post(s2.ptr()) }, 0);
        };
        let got = if coroutine {
            let waiter = patchall::spawn(wait).unwrap();
            patchall::spawn(move || {
                patchall::sleep(Duration::from_millis(100));
                post();
            })
            .unwrap()
            .join()
            .unwrap();
            waiter.join().unwrap()
        } else {
            let waiter = std::thread::spawn(wait);
            std::thread::sleep(Duration::from_millis(100));
            post();
            waiter.join().unwrap()
        };
        assert_eq!(got, (0, 0), "in a coroutine: {coroutine}");
    }
}

#[test]
fn sem_wait_interrupted_by_a_signal_handler_as_glibc() {
    let _serial = SIGNAL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    green();
    let plain = interrupting_signal();
    let restarting = waits::restarting_signal();
    for coroutine in [false, true] {
        // The native face first: what the coroutine must match.
        let (r, e, handled) = interrupted_sem_wait(coroutine, plain, false);
        assert_eq!(
            (r, e),
            (-1, libc::EINTR),
            "no SA_RESTART, in a coroutine: {coroutine}"
        );
        assert!(handled >= 1);
        let (r, _, handled) = interrupted_sem_wait(coroutine, restarting, true);
        assert_eq!(
            (r, handled),
            (0, 5),
            "SA_RESTART, in a coroutine: {coroutine}"
        );
    }
}

#[test]
fn semaphore_posts_wake_exactly_as_many() {
    green();
    let s = new_sem(0);
    let got = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..6)
        .map(|_| {
            let (s, got) = (s.clone(), got.clone());
            patchall::spawn(move || {
                // SAFETY: valid semaphore.
                assert_eq!(unsafe { libc::sem_wait(s.ptr()) }, 0);
                got.fetch_add(1, SeqCst);
            })
            .unwrap()
        })
        .collect();
    patchall::sleep(Duration::from_millis(5));
    for _ in 0..4 {
        // SAFETY: valid semaphore.
        assert_eq!(unsafe { libc::sem_post(s.ptr()) }, 0);
    }
    patchall::sleep(Duration::from_millis(20));
    assert_eq!(got.load(SeqCst), 4);
    // A native thread posts the last two.
    let s2 = s.clone();
    std::thread::spawn(move || {
        for _ in 0..2 {
            // SAFETY: valid semaphore.
            assert_eq!(unsafe { libc::sem_post(s2.ptr()) }, 0);
        }
    })
    .join()
    .unwrap();
    patchall::join_all(hs);
    assert_eq!(got.load(SeqCst), 6);
    assert_eq!(value(&s), 0);
}

#[test]
fn native_threads_and_coroutines_share_one_mutex() {
    green();
    const EACH: u64 = 10_000;
    const COROUTINES: u64 = 4;
    let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
    let counter = Arc::new(Unsync(UnsafeCell::new(0)));
    let start = Instant::now();
    let thread = {
        let (m, counter) = (m.clone(), counter.clone());
        std::thread::spawn(move || {
            for i in 0..EACH {
                assert_eq!(lock(&m), 0);
                // SAFETY: `m` held.
                unsafe { *counter.0.get() += 1 };
                if i % 1000 == 0 {
                    // Hold it a while: coroutines must park, then be woken by us.
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(unlock(&m), 0);
            }
        })
    };
    let hs: Vec<_> = (0..COROUTINES)
        .map(|c| {
            let (m, counter) = (m.clone(), counter.clone());
            patchall::spawn(move || {
                for i in 0..EACH {
                    assert_eq!(lock(&m), 0);
                    // SAFETY: `m` held.
                    unsafe { *counter.0.get() += 1 };
                    if (i + c) % 500 == 0 {
                        // Hold it across a switch: the native thread must
                        // futex-wait on a coroutine, and be woken by it.
                        patchall::yield_now();
                    }
                    assert_eq!(unlock(&m), 0);
                }
            })
            .unwrap()
        })
        .collect();
    patchall::join_all(hs);
    thread.join().unwrap();
    // SAFETY: every user has finished.
    assert_eq!(unsafe { *counter.0.get() }, EACH * (COROUTINES + 1));
    assert!(start.elapsed() < Duration::from_secs(60));
    // SAFETY: unlocked.
    assert_eq!(unsafe { libc::pthread_mutex_destroy(m.ptr()) }, 0);
}

#[test]
fn a_native_thread_waits_on_a_condvar_signalled_by_a_coroutine() {
    green();
    const ROUNDS: u64 = 2_000;
    let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
    let c = Obj::new(libc::PTHREAD_COND_INITIALIZER);
    let turn = Arc::new(Unsync(UnsafeCell::new(0)));
    let play = move |me: u64,
                     m: Arc<Obj<libc::pthread_mutex_t>>,
                     c: Arc<Obj<libc::pthread_cond_t>>,
                     turn: Arc<Unsync>| {
        for _ in 0..ROUNDS {
            assert_eq!(lock(&m), 0);
            // SAFETY: `turn` is only touched with `m` held.
            while unsafe { *turn.0.get() } % 2 != me {
                // SAFETY: valid condvar, `m` held.
                assert_eq!(unsafe { libc::pthread_cond_wait(c.ptr(), m.ptr()) }, 0);
            }
            // SAFETY: as above.
            unsafe { *turn.0.get() += 1 };
            // SAFETY: valid condvar.
            assert_eq!(unsafe { libc::pthread_cond_signal(c.ptr()) }, 0);
            assert_eq!(unlock(&m), 0);
        }
    };
    let thread = {
        let (m, c, turn) = (m.clone(), c.clone(), turn.clone());
        std::thread::spawn(move || play(1, m, c, turn))
    };
    let co = {
        let (m, c, turn) = (m.clone(), c.clone(), turn.clone());
        patchall::spawn(move || play(0, m, c, turn)).unwrap()
    };
    co.join().unwrap();
    thread.join().unwrap();
    // SAFETY: both players are done.
    assert_eq!(unsafe { *turn.0.get() }, 2 * ROUNDS);
}

#[test]
fn glibc_keeps_process_shared_and_robust_objects() {
    green();
    // SAFETY: valid attribute, mutex and semaphore storage.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
        assert_eq!(libc::pthread_mutex_init(m.ptr(), &attr), 0);
        assert_eq!(lock(&m), 0);
        // glibc's robust mutex records the owner's tid.
        assert_eq!(*m.ptr().cast::<i32>().add(2), libc::gettid());
        assert_eq!(unlock(&m), 0);
        assert_eq!(libc::pthread_mutex_destroy(m.ptr()), 0);
        // A destroyed mutex is glibc's again, which refuses it.
        assert_eq!(lock(&m), EINVAL);

        let s = Obj::new(std::mem::zeroed::<libc::sem_t>());
        assert_eq!(libc::sem_init(s.ptr(), 1, 1), 0);
        assert_eq!(libc::sem_wait(s.ptr()), 0);
        assert_eq!(libc::sem_trywait(s.ptr()), -1);
        assert_eq!(errno(), EAGAIN);
        assert_eq!(libc::sem_post(s.ptr()), 0);
        assert_eq!(value(&s), 1);
    }
}

fn run_with_timeout(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn c_pingpong_under_the_preload_reaches_the_exact_count() {
    let lib = common::preload_lib();
    let prog = common::c_program("green_pingpong");
    for (green, owner) in [("1", "patchall"), ("0", "glibc")] {
        let out = run_with_timeout(
            Command::new(&prog)
                .env("LD_PRELOAD", lib)
                .env("PATCHALL_GREEN_THREADS", green),
            Duration::from_secs(120),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "green={green}: {:?}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.trim(),
            format!("pingpong 200000 moves 200000 hits, mutex owned by {owner}")
        );
    }
}

#[test]
fn c11_mutex_and_condvar_are_green_too() {
    green();
    const THRD_SUCCESS: c_int = 0;
    const THRD_BUSY: c_int = 1;
    const THRD_TIMEDOUT: c_int = 4;
    let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
    let c = Obj::new(libc::PTHREAD_COND_INITIALIZER);
    let ticker = Ticker::start();
    let holder = {
        let m = m.clone();
        patchall::spawn(move || {
            // SAFETY: valid objects.
            unsafe {
                assert_eq!(sync::mtx_lock(m.ptr()), THRD_SUCCESS);
                patchall::sleep(Duration::from_millis(40));
                assert_eq!(sync::mtx_unlock(m.ptr()), THRD_SUCCESS);
            }
        })
        .unwrap()
    };
    let waiter = {
        let (m, c) = (m.clone(), c.clone());
        patchall::spawn(move || {
            // SAFETY: valid objects.
            unsafe {
                assert_eq!(sync::mtx_trylock(m.ptr()), THRD_BUSY);
                assert_eq!(sync::mtx_lock(m.ptr()), THRD_SUCCESS);
                let at = after(libc::CLOCK_REALTIME, Duration::from_millis(10));
                assert_eq!(sync::cnd_timedwait(c.ptr(), m.ptr(), &at), THRD_TIMEDOUT);
                assert_eq!(sync::mtx_unlock(m.ptr()), THRD_SUCCESS);
                sync::cnd_destroy(c.ptr());
            }
        })
        .unwrap()
    };
    patchall::join_all([holder, waiter]);
    assert!(ticker.ticks() >= 10);
    ticker.stop();
}

#[test]
fn a_plain_thread_waiting_on_its_own_coroutine_runs_it() {
    green();
    let m = Obj::new(libc::PTHREAD_MUTEX_INITIALIZER);
    let c = Obj::new(libc::PTHREAD_COND_INITIALIZER);
    let ready = Arc::new(Unsync(UnsafeCell::new(0)));
    let h = {
        let (m, c, ready) = (m.clone(), c.clone(), ready.clone());
        patchall::spawn(move || {
            assert_eq!(lock(&m), 0);
            patchall::sleep(Duration::from_millis(30));
            // SAFETY: `m` held.
            unsafe { *ready.0.get() = 1 };
            // SAFETY: valid condvar.
            assert_eq!(unsafe { libc::pthread_cond_signal(c.ptr()) }, 0);
            assert_eq!(unlock(&m), 0);
        })
        .unwrap()
    };
    // Let the coroutine take the mutex, then wait for it on this plain thread:
    // a futex wait here would never return, as the holder runs on this thread.
    patchall::yield_now();
    assert_eq!(trylock(&m), EBUSY);
    assert_eq!(lock(&m), 0);
    // SAFETY: `m` held; the flag was set before the holder unlocked.
    assert_eq!(unsafe { *ready.0.get() }, 1);
    assert_eq!(unlock(&m), 0);
    h.join().unwrap();

    // Same for a condvar wait on the plain thread.
    let h = {
        let (m, c, ready) = (m.clone(), c.clone(), ready.clone());
        patchall::spawn(move || {
            patchall::sleep(Duration::from_millis(20));
            assert_eq!(lock(&m), 0);
            // SAFETY: `m` held.
            unsafe { *ready.0.get() = 2 };
            // SAFETY: valid condvar.
            assert_eq!(unsafe { libc::pthread_cond_broadcast(c.ptr()) }, 0);
            assert_eq!(unlock(&m), 0);
        })
        .unwrap()
    };
    assert_eq!(lock(&m), 0);
    // SAFETY: `ready` is only touched with `m` held.
    while unsafe { *ready.0.get() } != 2 {
        // SAFETY: valid condvar, `m` held.
        assert_eq!(unsafe { libc::pthread_cond_wait(c.ptr(), m.ptr()) }, 0);
    }
    assert_eq!(unlock(&m), 0);
    h.join().unwrap();
}

#[test]
fn barrier_semaphore_and_rwlock_shared_with_native_threads() {
    green();
    const ROUNDS: usize = 300;
    // A barrier of two coroutines and one native thread.
    let b = Obj::new(
        // SAFETY: zeroed storage is a valid out-parameter for init.
        unsafe { std::mem::zeroed::<libc::pthread_barrier_t>() },
    );
    assert_eq!(
        // SAFETY: valid storage, no attribute.
        unsafe { libc::pthread_barrier_init(b.ptr(), std::ptr::null(), 3) },
        0
    );
    let arrive = |b: &Obj<libc::pthread_barrier_t>| {
        // SAFETY: valid barrier.
        match unsafe { libc::pthread_barrier_wait(b.ptr()) } {
            libc::PTHREAD_BARRIER_SERIAL_THREAD => 1,
            0 => 0,
            r => panic!("pthread_barrier_wait returned {r}"),
        }
    };
    let thread = {
        let b = b.clone();
        std::thread::spawn(move || (0..ROUNDS).map(|_| arrive(&b)).sum::<usize>())
    };
    let cos: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            patchall::spawn(move || (0..ROUNDS).map(|_| arrive(&b)).sum::<usize>()).unwrap()
        })
        .collect();
    let serial: usize = patchall::join_all(cos)
        .into_iter()
        .map(Result::unwrap)
        .sum::<usize>()
        + thread.join().unwrap();
    assert_eq!(serial, ROUNDS);
    // SAFETY: all have left.
    assert_eq!(unsafe { libc::pthread_barrier_destroy(b.ptr()) }, 0);

    // Semaphore ping-pong between a native thread and a coroutine.
    let ping = new_sem(1);
    let pong = new_sem(0);
    let hits = Arc::new(AtomicU64::new(0));
    let volley =
        |mine: Arc<Obj<libc::sem_t>>, theirs: Arc<Obj<libc::sem_t>>, hits: Arc<AtomicU64>| {
            move || {
                for _ in 0..ROUNDS {
                    // SAFETY: valid semaphores.
                    unsafe {
                        assert_eq!(libc::sem_wait(mine.ptr()), 0);
                        hits.fetch_add(1, SeqCst);
                        assert_eq!(libc::sem_post(theirs.ptr()), 0);
                    }
                }
            }
        };
    let thread = std::thread::spawn(volley(pong.clone(), ping.clone(), hits.clone()));
    patchall::spawn(volley(ping.clone(), pong.clone(), hits.clone()))
        .unwrap()
        .join()
        .unwrap();
    thread.join().unwrap();
    assert_eq!(hits.load(SeqCst), 2 * ROUNDS as u64);
    assert_eq!((value(&ping), value(&pong)), (1, 0));

    // A native writer keeps two halves equal; coroutine readers check them.
    let rw = Obj::new(libc::PTHREAD_RWLOCK_INITIALIZER);
    let pair = Arc::new(Obj::new((0u64, 0u64)));
    let writer = {
        let (rw, pair) = (rw.clone(), pair.clone());
        std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                // SAFETY: valid rwlock; `pair` is written only under the write lock.
                unsafe {
                    assert_eq!(libc::pthread_rwlock_wrlock(rw.ptr()), 0);
                    (*pair.ptr()).0 += 1;
                    std::thread::yield_now();
                    (*pair.ptr()).1 += 1;
                    assert_eq!(libc::pthread_rwlock_unlock(rw.ptr()), 0);
                }
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (rw, pair) = (rw.clone(), pair.clone());
            patchall::spawn(move || {
                for _ in 0..ROUNDS {
                    // SAFETY: valid rwlock; `pair` is read under the read lock.
                    unsafe {
                        assert_eq!(libc::pthread_rwlock_rdlock(rw.ptr()), 0);
                        let (a, b) = *pair.ptr();
                        patchall::yield_now();
                        assert_eq!(a, b);
                        assert_eq!(*pair.ptr(), (a, b));
                        assert_eq!(libc::pthread_rwlock_unlock(rw.ptr()), 0);
                    }
                }
            })
            .unwrap()
        })
        .collect();
    patchall::join_all(readers);
    writer.join().unwrap();
    // SAFETY: everyone is done.
    assert_eq!(unsafe { *pair.ptr() }, (ROUNDS as u64, ROUNDS as u64));
}
