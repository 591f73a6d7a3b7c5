//! sleep, usleep, nanosleep, clock_nanosleep: both faces.
//!
//! This binary links patchall, so `libc::nanosleep`, `std::thread::sleep`… reach
//! the hooks; libc's own definitions are found with `dlsym(RTLD_NEXT)`.

mod waits;

use waits::{HANDLED, clear_errno, errno, keep_signalling, real, restarting_signal, ticker};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libc::{c_int, clockid_t, timespec};

type NanosleepFn = unsafe extern "C" fn(*const timespec, *mut timespec) -> c_int;
type ClockNanosleepFn =
    unsafe extern "C" fn(clockid_t, c_int, *const timespec, *mut timespec) -> c_int;

unsafe extern "C" {
    /// glibc's exported alias, hooked too.
    fn __nanosleep(req: *const timespec, rem: *mut timespec) -> c_int;
}

fn ts(sec: i64, nsec: i64) -> timespec {
    timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// A sleep to make: (result, `rem` after the call).
type Call = fn() -> (c_int, (i64, i64));

/// `rem` as the caller left it, to see whether a call wrote it.
const SENTINEL: (i64, i64) = (7, 7);

fn pair(t: &timespec) -> (i64, i64) {
    (t.tv_sec, t.tv_nsec)
}

fn clock_now(clock: clockid_t) -> Duration {
    let mut t = ts(0, 0);
    // SAFETY: clock_gettime writes one timespec.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut t) }, 0);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn every_sleep_call_parks_only_its_coroutine() {
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tick = ticker(ticks.clone(), stop.clone());
    const MS: u64 = 60;
    let sleeps: Vec<(&str, Duration, Call)> = vec![
        ("nanosleep", Duration::from_millis(MS), || {
            let mut rem = ts(SENTINEL.0, SENTINEL.1);
            // SAFETY: valid request and rem.
            let r = unsafe { libc::nanosleep(&ts(0, MS as i64 * 1_000_000), &mut rem) };
            (r, pair(&rem))
        }),
        ("__nanosleep", Duration::from_millis(MS), || {
            let mut rem = ts(SENTINEL.0, SENTINEL.1);
            // SAFETY: valid request and rem.
            let r = unsafe { __nanosleep(&ts(0, MS as i64 * 1_000_000), &mut rem) };
            (r, pair(&rem))
        }),
        ("clock_nanosleep", Duration::from_millis(MS), || {
            let mut rem = ts(SENTINEL.0, SENTINEL.1);
            let req = ts(0, MS as i64 * 1_000_000);
            // SAFETY: valid request and rem.
            let r = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &req, &mut rem) };
            (r, pair(&rem))
        }),
        ("usleep", Duration::from_millis(MS), || {
            // SAFETY: no pointers.
            (unsafe { libc::usleep(MS as u32 * 1000) }, SENTINEL)
        }),
        ("thread::sleep", Duration::from_millis(MS), || {
            std::thread::sleep(Duration::from_millis(MS));
            (0, SENTINEL)
        }),
        ("sleep", Duration::from_secs(1), || {
            // SAFETY: no pointers.
            (unsafe { libc::sleep(1) } as c_int, SENTINEL)
        }),
    ];
    let handles: Vec<_> = sleeps
        .into_iter()
        .map(|(name, wanted, call)| {
            let ticks = ticks.clone();
            patchall::spawn(move || {
                let (t0, start) = (ticks.load(SeqCst), Instant::now());
                let (r, rem) = call();
                (
                    name,
                    wanted,
                    r,
                    rem,
                    start.elapsed(),
                    ticks.load(SeqCst) - t0,
                )
            })
            .unwrap()
        })
        .collect();
    for h in handles {
        let (name, wanted, r, rem, took, ticked) = h.join().unwrap();
        assert_eq!(r, 0, "{name}");
        assert_eq!(rem, SENTINEL, "{name}: rem is not written on success");
        assert!(took >= wanted, "{name} slept {took:?} < {wanted:?}");
        assert!(
            took < wanted + Duration::from_secs(5),
            "{name} took {took:?}"
        );
        // Blocking the thread would have frozen the ticker, which shares it.
        assert!(ticked >= 3, "{name}: ticker ran {ticked} times meanwhile");
    }
    stop.store(true, SeqCst);
    tick.join().unwrap();
}

#[test]
fn absolute_sleeps_on_each_clock_wake_in_deadline_order() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tick = ticker(ticks.clone(), stop.clone());
    let plan = [
        (libc::CLOCK_REALTIME, 80u64),
        (libc::CLOCK_MONOTONIC, 20),
        (libc::CLOCK_BOOTTIME, 60),
        (libc::CLOCK_TAI, 40),
    ];
    let handles: Vec<_> = plan
        .into_iter()
        .map(|(clock, ms)| {
            let target = clock_now(clock) + Duration::from_millis(ms);
            let order = order.clone();
            let ticks = ticks.clone();
            patchall::spawn(move || {
                let t0 = ticks.load(SeqCst);
                let req = ts(target.as_secs() as i64, target.subsec_nanos().into());
                // SAFETY: valid request, no rem (absolute sleeps never write it).
                let r = unsafe {
                    libc::clock_nanosleep(clock, libc::TIMER_ABSTIME, &req, std::ptr::null_mut())
                };
                let woke = clock_now(clock);
                order.lock().unwrap().push(ms);
                (r, woke >= target, ticks.load(SeqCst) - t0)
            })
            .unwrap()
        })
        .collect();
    for h in handles {
        let (r, late_enough, ticked) = h.join().unwrap();
        assert_eq!(r, 0);
        assert!(late_enough, "woke before the clock reached the target");
        assert!(ticked >= 3, "ticker ran {ticked} times meanwhile");
    }
    stop.store(true, SeqCst);
    tick.join().unwrap();
    assert_eq!(*order.lock().unwrap(), [20, 40, 60, 80]);
}

#[test]
fn a_zero_or_past_sleep_lets_the_others_run_once() {
    let log = Arc::new(Mutex::new(String::new()));
    let sleeper = {
        let log = log.clone();
        patchall::spawn(move || {
            let mut results = Vec::new();
            for _ in 0..3 {
                log.lock().unwrap().push('s');
                // SAFETY: a valid request; no remainder is asked for.
                results.push(unsafe { libc::nanosleep(&ts(0, 0), std::ptr::null_mut()) });
                log.lock().unwrap().push('s');
                // SAFETY: a valid request in the past; no remainder is asked for.
                results.push(unsafe {
                    libc::clock_nanosleep(
                        libc::CLOCK_MONOTONIC,
                        libc::TIMER_ABSTIME,
                        &ts(0, 0),
                        std::ptr::null_mut(),
                    )
                });
            }
            results
        })
        .unwrap()
    };
    let other = {
        let log = log.clone();
        patchall::spawn(move || {
            for _ in 0..6 {
                log.lock().unwrap().push('o');
                patchall::yield_now();
            }
        })
        .unwrap()
    };
    assert_eq!(sleeper.join().unwrap(), [0; 6]);
    other.join().unwrap();
    let log = log.lock().unwrap();
    // Timers fire after the run queue's round, so "oo" may happen; "ss" may not.
    assert!(
        !log.contains("ss"),
        "no other coroutine ran between sleeps: {log}"
    );
    assert_eq!(log.matches('o').count(), 6, "{log}");
}

/// Every request the kernel refuses, with (result, errno) of nanosleep-style calls
/// and the returned error number of clock_nanosleep.
fn refused(nanosleep: NanosleepFn, clock_nanosleep: ClockNanosleepFn) -> Vec<(c_int, i32)> {
    let bad = [ts(0, 1_000_000_000), ts(0, -1), ts(-1, 0)];
    let mut out = Vec::new();
    let mut ns = |req: *const timespec| {
        let mut rem = ts(SENTINEL.0, SENTINEL.1);
        clear_errno();
        // SAFETY: a valid or null request, a valid rem.
        let r = unsafe { nanosleep(req, &mut rem) };
        out.push((r, errno()));
        assert_eq!(pair(&rem), SENTINEL);
    };
    for req in &bad {
        ns(req);
    }
    ns(std::ptr::null());
    let clocks = [
        libc::CLOCK_MONOTONIC,
        libc::CLOCK_REALTIME,
        libc::CLOCK_TAI,
        libc::CLOCK_BOOTTIME,
    ];
    for clock in clocks {
        for flags in [0, libc::TIMER_ABSTIME] {
            for req in &bad {
                // SAFETY: a valid request pointer, no rem.
                let r = unsafe { clock_nanosleep(clock, flags, req, std::ptr::null_mut()) };
                out.push((r, 0));
            }
            // SAFETY: a null request: the kernel reports EFAULT.
            let r =
                unsafe { clock_nanosleep(clock, flags, std::ptr::null(), std::ptr::null_mut()) };
            out.push((r, 0));
        }
    }
    // Clocks that cannot sleep, or not this way; a valid 1 ns request.
    let unsleepable = [
        12345,
        -1,
        libc::CLOCK_THREAD_CPUTIME_ID,
        libc::CLOCK_MONOTONIC_RAW,
        libc::CLOCK_MONOTONIC_COARSE,
        libc::CLOCK_REALTIME_COARSE,
    ];
    for clock in unsleepable {
        // SAFETY: a valid request, no rem.
        let r = unsafe { clock_nanosleep(clock, 0, &ts(0, 1), std::ptr::null_mut()) };
        out.push((r, 0));
    }
    // A CPU-time clock with a bad request.
    // SAFETY: a valid request pointer, no rem.
    let r = unsafe {
        clock_nanosleep(
            libc::CLOCK_PROCESS_CPUTIME_ID,
            0,
            &bad[0],
            std::ptr::null_mut(),
        )
    };
    out.push((r, 0));
    out
}

#[test]
fn refused_requests_fail_as_libc_does_inside_and_outside() {
    let expected = refused(real(c"nanosleep"), real(c"clock_nanosleep"));
    // Sanity: these really are errors, of the kinds the kernel gives.
    assert!(expected[..3].iter().all(|&e| e == (-1, libc::EINVAL)));
    assert_eq!(expected[3], (-1, libc::EFAULT));
    assert!(expected[4..].iter().all(|&(r, _)| r > 0));
    assert_eq!(refused(libc::nanosleep, libc::clock_nanosleep), expected);
    let inside = patchall::spawn(|| refused(libc::nanosleep, libc::clock_nanosleep)).unwrap();
    assert_eq!(inside.join().unwrap(), expected);
    let alias = patchall::spawn(|| refused(__nanosleep, libc::clock_nanosleep)).unwrap();
    assert_eq!(alias.join().unwrap(), expected);
}

#[test]
fn outside_a_coroutine_sleeps_are_libcs() {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let coroutine = patchall::spawn(move || flag.store(true, SeqCst)).unwrap();
    let calls: [(&str, Call); 4] = [
        ("nanosleep", || {
            let mut rem = ts(SENTINEL.0, SENTINEL.1);
            // SAFETY: valid request and rem.
            let r = unsafe { libc::nanosleep(&ts(0, 2_000_000), &mut rem) };
            (r, pair(&rem))
        }),
        ("clock_nanosleep", || {
            let mut rem = ts(SENTINEL.0, SENTINEL.1);
            // SAFETY: valid request and rem.
            let r = unsafe {
                libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts(0, 2_000_000), &mut rem)
            };
            (r, pair(&rem))
        }),
        ("usleep", || {
            // SAFETY: no pointers.
            (unsafe { libc::usleep(2000) }, SENTINEL)
        }),
        ("thread::sleep", || {
            std::thread::sleep(Duration::from_millis(2));
            (0, SENTINEL)
        }),
    ];
    for (name, call) in calls {
        let start = Instant::now();
        assert_eq!(call(), (0, SENTINEL), "{name}");
        assert!(start.elapsed() >= Duration::from_millis(2), "{name}");
    }
    // libc's own, for comparison: success leaves rem alone there too.
    let nanosleep: NanosleepFn = real(c"nanosleep");
    let mut rem = ts(SENTINEL.0, SENTINEL.1);
    // SAFETY: valid request and rem.
    assert_eq!(unsafe { nanosleep(&ts(0, 1000), &mut rem) }, 0);
    assert_eq!(pair(&rem), SENTINEL);
    // A plain thread's sleep only sleeps: it does not run this thread's coroutines.
    assert!(!ran.load(SeqCst));
    coroutine.join().unwrap();
    assert!(ran.load(SeqCst));
}

/// What an interrupted sleep gave: (result, errno, whole seconds in `rem` or
/// None if `rem` was left alone).
type Interrupted = (i64, i32, Option<u64>);

/// The time left, to the nearest second: a signal that lands as the call starts
/// leaves exactly 5 s, one that lands a little later 4.98 s; both mean "about 5".
fn rem_secs(rem: &timespec) -> Option<u64> {
    (pair(rem) != SENTINEL).then_some(rem.tv_sec as u64 + u64::from(rem.tv_nsec >= 500_000_000))
}

type LongSleep = fn() -> Interrupted;

/// Five-second sleeps, each to be cut short by a signal.
const LONG_SLEEPS: [(&str, LongSleep); 5] = [
    ("nanosleep", || {
        let mut rem = ts(SENTINEL.0, SENTINEL.1);
        clear_errno();
        // SAFETY: valid request and rem.
        let r = unsafe { libc::nanosleep(&ts(5, 0), &mut rem) };
        (r.into(), errno(), rem_secs(&rem))
    }),
    ("clock_nanosleep", || {
        let mut rem = ts(SENTINEL.0, SENTINEL.1);
        clear_errno();
        // SAFETY: valid request and rem.
        let r = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts(5, 0), &mut rem) };
        (r.into(), errno(), rem_secs(&rem))
    }),
    ("clock_nanosleep(TIMER_ABSTIME)", || {
        let target = clock_now(libc::CLOCK_REALTIME) + Duration::from_secs(5);
        let req = ts(target.as_secs() as i64, target.subsec_nanos().into());
        let mut rem = ts(SENTINEL.0, SENTINEL.1);
        clear_errno();
        // SAFETY: valid request and rem.
        let r = unsafe {
            libc::clock_nanosleep(libc::CLOCK_REALTIME, libc::TIMER_ABSTIME, &req, &mut rem)
        };
        (r.into(), errno(), rem_secs(&rem))
    }),
    ("usleep", || {
        clear_errno();
        // SAFETY: no pointers.
        let r = unsafe { libc::usleep(5_000_000) };
        (r.into(), errno(), None)
    }),
    ("sleep", || {
        clear_errno();
        // SAFETY: no pointers.
        let r = unsafe { libc::sleep(5) };
        (r.into(), errno(), None)
    }),
];

#[test]
fn a_signal_ends_a_sleep_with_eintr_and_the_time_left_as_outside() {
    let sig = restarting_signal();
    // Outside: a plain thread blocked in the real calls, one after the other.
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let finished = done.clone();
    let blocked = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        let out: Vec<Interrupted> = LONG_SLEEPS
            .iter()
            .map(|(_, call)| {
                let r = call();
                finished.fetch_add(1, SeqCst);
                r
            })
            .collect();
        out
    });
    keep_signalling(rx.recv().unwrap(), sig, &done, LONG_SLEEPS.len());
    let outside = blocked.join().unwrap();
    assert_eq!(
        outside,
        [
            (-1, libc::EINTR, Some(5)),
            (libc::EINTR.into(), 0, Some(5)),
            (libc::EINTR.into(), 0, None),
            (-1, libc::EINTR, None),
            (4, libc::EINTR, None),
        ]
    );

    // Inside: every call parked at once on this thread; a sibling signals it.
    let done = Arc::new(AtomicUsize::new(0));
    let sleepers: Vec<_> = LONG_SLEEPS
        .iter()
        .map(|&(name, call)| {
            let done = done.clone();
            patchall::spawn(move || {
                let r = call();
                done.fetch_add(1, SeqCst);
                (name, r)
            })
            .unwrap()
        })
        .collect();
    // std's sleep goes on with the time left after EINTR: it still lasts.
    let std_sleep = patchall::spawn(|| {
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
        start.elapsed()
    })
    .unwrap();
    let handled = HANDLED.load(SeqCst);
    let done2 = done.clone();
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let signaller =
        patchall::spawn(move || keep_signalling(me, sig, &done2, LONG_SLEEPS.len())).unwrap();
    for (h, want) in sleepers.into_iter().zip(&outside) {
        let (name, got) = h.join().unwrap();
        assert_eq!(got, *want, "{name}");
    }
    signaller.join().unwrap();
    assert!(std_sleep.join().unwrap() >= Duration::from_millis(100));
    assert!(HANDLED.load(SeqCst) > handled);
}
