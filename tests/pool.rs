//! `Pool` bounds concurrency, keeps `map` results in order; `spawn_later` waits.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchall::Pool;

#[test]
fn a_pool_never_exceeds_its_size() {
    for spawner_in_coroutine in [false, true] {
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (n, m) = (now.clone(), max.clone());
        let run = move || {
            let pool = Pool::new(3);
            let hs: Vec<_> = (0..30u64)
                .map(|i| {
                    let (now, max) = (n.clone(), m.clone());
                    pool.spawn(move || {
                        max.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
                        patchall::sleep(Duration::from_millis(1 + i % 3));
                        patchall::yield_now();
                        now.fetch_sub(1, SeqCst);
                    })
                    .unwrap()
                })
                .collect();
            assert!(pool.free_count() < 3);
            pool.join();
            assert_eq!(pool.free_count(), 3);
            hs.into_iter().all(|h| h.is_finished())
        };
        let all_done = if spawner_in_coroutine {
            patchall::spawn(run).unwrap().join().unwrap()
        } else {
            run()
        };
        assert!(all_done, "join returned before every coroutine finished");
        assert_eq!(max.load(SeqCst), 3, "in coroutine: {spawner_in_coroutine}");
        assert_eq!(now.load(SeqCst), 0);
    }
}

#[test]
fn map_returns_results_in_item_order() {
    let pool = Pool::new(4);
    let finish_order = Arc::new(Mutex::new(Vec::new()));
    let f = finish_order.clone();
    let out = pool
        .map((0..8u64).rev(), move |i| {
            patchall::sleep(Duration::from_millis(2 * i));
            f.lock().unwrap().push(i);
            i * 10
        })
        .unwrap();
    assert_eq!(out, [70, 60, 50, 40, 30, 20, 10, 0]);
    // They did not finish in item order: the order came from map.
    assert_ne!(*finish_order.lock().unwrap(), [7, 6, 5, 4, 3, 2, 1, 0]);
}

#[test]
fn map_resumes_a_panic_after_every_item_finished() {
    let pool = Pool::new(2);
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.map(0..6, move |i| {
            patchall::yield_now();
            d.fetch_add(1, SeqCst);
            assert_ne!(i, 1, "item 1 fails");
        })
    }));
    assert!(r.is_err());
    assert_eq!(done.load(SeqCst), 6);
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn a_killed_pool_coroutine_frees_its_slot() {
    let pool = Pool::new(1);
    let h = pool
        .spawn(|| patchall::sleep(Duration::from_secs(3600)))
        .unwrap();
    h.kill(); // before it started: its body never runs, its slot comes back
    assert!(h.join().unwrap_err().is::<patchall::Killed>());
    assert_eq!(pool.free_count(), 1);
    assert_eq!(pool.spawn(|| 1).unwrap().join().unwrap(), 1);
}

#[test]
fn spawn_later_runs_after_the_delay_and_others_meanwhile() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let l = log.clone();
    let late = patchall::spawn_later(Duration::from_millis(40), move || {
        l.lock().unwrap().push("late");
        start.elapsed()
    })
    .unwrap();
    let l = log.clone();
    let now = patchall::spawn(move || l.lock().unwrap().push("now")).unwrap();
    now.join().unwrap();
    let waited = late.join().unwrap();
    assert!(waited >= Duration::from_millis(40), "{waited:?}");
    assert_eq!(*log.lock().unwrap(), ["now", "late"]);
}
