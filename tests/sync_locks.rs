//! Event, Semaphore, Mutex, RwLock, Condvar: they park coroutines (others run
//! meanwhile), serve waiters in order, work across threads, poison as std.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use patchall::sync::{Condvar, Event, Mutex, RwLock, Semaphore};

type Log = Arc<StdMutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(StdMutex::new(Vec::new()))
}

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

#[test]
fn a_mutex_held_across_a_park_makes_others_park_not_the_thread() {
    let m = Arc::new(Mutex::new(0u32));
    let ticks = Arc::new(AtomicUsize::new(0));
    let (m1, t1) = (m.clone(), ticks.clone());
    let holder = patchall::spawn(move || {
        let mut g = m1.lock().unwrap();
        patchall::sleep(Duration::from_millis(20)); // holds the lock while parked
        *g += 1;
        t1.load(SeqCst)
    })
    .unwrap();
    let m2 = m.clone();
    let waiter = patchall::spawn(move || *m2.lock().unwrap()).unwrap();
    let t2 = ticks.clone();
    let ticker = patchall::spawn(move || {
        for _ in 0..5 {
            t2.fetch_add(1, SeqCst);
            patchall::yield_now();
        }
    })
    .unwrap();
    // The ticker ran while the holder slept and the waiter waited.
    assert_eq!(holder.join().unwrap(), 5);
    assert_eq!(waiter.join().unwrap(), 1);
    ticker.join().unwrap();
}

#[test]
fn mutex_waiters_get_the_lock_in_arrival_order() {
    let m = Arc::new(Mutex::new(Vec::new()));
    let first = m.lock().unwrap();
    let hs: Vec<_> = (0..5)
        .map(|i| {
            let m = m.clone();
            patchall::spawn(move || m.lock().unwrap().push(i)).unwrap()
        })
        .collect();
    patchall::yield_now(); // all five queue behind this thread's guard
    // A newcomer does not barge in ahead of them.
    drop(first);
    assert!(m.try_lock().is_err());
    patchall::join_all(hs);
    assert_eq!(*m.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[test]
fn a_mutex_counts_exactly_across_threads_and_coroutines() {
    let m = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..8)
                    .map(|_| {
                        let m = m.clone();
                        patchall::spawn(move || {
                            for i in 0..500 {
                                let mut g = m.lock().unwrap();
                                let v = *g;
                                if i % 7 == 0 {
                                    patchall::yield_now(); // a lost update would show
                                }
                                *g = v + 1;
                            }
                        })
                        .unwrap()
                    })
                    .collect();
                patchall::join_all(hs).into_iter().for_each(|r| r.unwrap());
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(*m.lock().unwrap(), 4 * 8 * 500);
}

#[test]
fn a_panicking_holder_poisons_as_std() {
    let m = Arc::new(Mutex::new(1));
    let m2 = m.clone();
    let h = patchall::spawn(move || {
        let _g = m2.lock().unwrap();
        panic!("holder fails");
    })
    .unwrap();
    assert!(h.join().is_err());
    assert!(m.is_poisoned());
    let g = m.lock().unwrap_err().into_inner();
    assert_eq!(*g, 1);
    drop(g);
    m.clear_poison();
    assert_eq!(*m.lock().unwrap(), 1);
    // A panicking writer poisons an RwLock too.
    let l = Arc::new(RwLock::new(0));
    let l2 = l.clone();
    let h = patchall::spawn(move || {
        let _w = l2.write().unwrap();
        panic!("writer fails");
    })
    .unwrap();
    assert!(h.join().is_err());
    assert!(l.is_poisoned());
    assert!(l.read().is_err());
}

#[test]
fn event_wakes_every_waiter_across_threads() {
    let e = Arc::new(Event::new());
    let woke = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (e, woke) = (e.clone(), woke.clone());
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        let (e, woke) = (e.clone(), woke.clone());
                        patchall::spawn(move || {
                            assert!(e.wait());
                            woke.fetch_add(1, SeqCst);
                        })
                        .unwrap()
                    })
                    .collect();
                patchall::join_all(hs).into_iter().for_each(|r| r.unwrap());
                // A plain thread waits too.
                assert!(e.wait());
                woke.fetch_add(1, SeqCst);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(woke.load(SeqCst), 0);
    e.set();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(woke.load(SeqCst), 3 * 4 + 3);
}

#[test]
fn event_wait_ends_false_on_kill_and_timeout() {
    let e = Arc::new(Event::new());
    let e2 = e.clone();
    let got = Arc::new(StdMutex::new(None));
    let g = got.clone();
    let h = patchall::spawn(move || {
        let r = e2.wait();
        *g.lock().unwrap() = Some(r);
    })
    .unwrap();
    patchall::yield_now();
    h.kill();
    assert!(h.join().unwrap_err().is::<patchall::Killed>());
    assert_eq!(*got.lock().unwrap(), Some(false));
    assert!(!e.wait_timeout(Duration::from_millis(5)));
    let mut inner = None;
    let r = patchall::timeout(Duration::from_millis(10), || inner = Some(e.wait()));
    assert_eq!((r, inner), (Err(patchall::Elapsed), Some(false)));
}

#[test]
fn semaphore_hands_permits_out_in_order_and_bounds_concurrency() {
    let sem = Arc::new(Semaphore::new(2));
    let log = log();
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..8)
        .map(|i| {
            let (sem, log, now, max) = (sem.clone(), log.clone(), now.clone(), max.clone());
            patchall::spawn(move || {
                let _p = sem.acquire();
                push(&log, format!("{i}"));
                max.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
                patchall::sleep(Duration::from_millis(1 + (i % 3)));
                now.fetch_sub(1, SeqCst);
            })
            .unwrap()
        })
        .collect();
    patchall::join_all(hs).into_iter().for_each(|r| r.unwrap());
    assert_eq!(max.load(SeqCst), 2);
    let order: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    assert_eq!(*log.lock().unwrap(), order);
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn a_waiting_writer_is_not_starved_by_later_readers() {
    let l = Arc::new(RwLock::new(0));
    let log = log();
    let r0 = l.read().unwrap(); // this thread reads
    let mut hs = Vec::new();
    {
        let (l, log) = (l.clone(), log.clone());
        hs.push(
            patchall::spawn(move || {
                *l.write().unwrap() += 1;
                push(&log, "writer");
            })
            .unwrap(),
        );
    }
    for i in 0..2 {
        let (l, log) = (l.clone(), log.clone());
        hs.push(
            patchall::spawn(move || {
                let v = *l.read().unwrap();
                push(&log, format!("reader{i}={v}"));
            })
            .unwrap(),
        );
    }
    patchall::yield_now(); // the writer waits for r0; the readers queue behind it
    assert!(log.lock().unwrap().is_empty());
    assert!(l.try_read().is_err());
    drop(r0);
    patchall::join_all(hs);
    assert_eq!(*log.lock().unwrap(), ["writer", "reader0=1", "reader1=1"]);
}

#[test]
fn readers_share_the_lock() {
    let l = Arc::new(RwLock::new(5));
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (l, inside, max) = (l.clone(), inside.clone(), max.clone());
            patchall::spawn(move || {
                let g = l.read().unwrap();
                max.fetch_max(inside.fetch_add(1, SeqCst) + 1, SeqCst);
                patchall::sleep(Duration::from_millis(5));
                inside.fetch_sub(1, SeqCst);
                *g
            })
            .unwrap()
        })
        .collect();
    let sum: i32 = patchall::join_all(hs).into_iter().map(Result::unwrap).sum();
    assert_eq!(sum, 20);
    assert_eq!(max.load(SeqCst), 4);
}

#[test]
fn condvar_queue_across_threads_loses_nothing() {
    const N: u64 = 20_000;
    let shared = Arc::new((Mutex::new((VecDeque::new(), false)), Condvar::new()));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        let shared = shared.clone();
                        patchall::spawn(move || {
                            let (m, cv) = &*shared;
                            let mut sum = 0u64;
                            loop {
                                let mut g = cv
                                    .wait_while(m.lock().unwrap(), |(q, done)| {
                                        q.is_empty() && !*done
                                    })
                                    .unwrap();
                                match g.0.pop_front() {
                                    Some(v) => sum += v,
                                    None => return sum,
                                }
                            }
                        })
                        .unwrap()
                    })
                    .collect();
                patchall::join_all(hs)
                    .into_iter()
                    .map(Result::unwrap)
                    .sum::<u64>()
            })
        })
        .collect();
    let (m, cv) = &*shared;
    for i in 1..=N {
        m.lock().unwrap().0.push_back(i);
        cv.notify_one();
    }
    m.lock().unwrap().1 = true;
    cv.notify_all();
    let total: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(total, N * (N + 1) / 2);
}

#[test]
fn condvar_wait_timeout_reports_timeout_and_notification() {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let (m, cv) = &*pair;
    let (g, r) = cv
        .wait_timeout(m.lock().unwrap(), Duration::from_millis(5))
        .unwrap();
    assert!(r.timed_out());
    drop(g);
    let p = pair.clone();
    let h = patchall::spawn(move || {
        let (m, cv) = &*p;
        let (g, r) = cv
            .wait_timeout(m.lock().unwrap(), Duration::from_secs(60))
            .unwrap();
        (*g, r.timed_out())
    })
    .unwrap();
    patchall::yield_now();
    *m.lock().unwrap() = true;
    cv.notify_one();
    assert_eq!(h.join().unwrap(), (true, false));
}
