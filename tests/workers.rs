//! Many cores: placement, no migration, joins across workers, cross-worker wakes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

#[test]
fn coroutines_spread_over_workers_and_never_migrate() {
    let rt = patchall::Runtime::builder().workers(2).build().unwrap();
    let hs: Vec<_> = (0..200)
        .map(|i| {
            rt.spawn(move || {
                let first = thread_id();
                for round in 0..5 {
                    if (i + round) % 2 == 0 {
                        patchall::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    assert_eq!(thread_id(), first, "coroutine {i} moved to another thread");
                }
                first
            })
            .unwrap()
        })
        .collect();
    let threads: HashSet<u64> = patchall::join_all(hs)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(threads.len(), 2, "both workers ran coroutines");
    assert!(
        !threads.contains(&thread_id()),
        "none ran on the spawning thread"
    );
}

#[test]
fn a_coroutine_joins_one_on_another_worker() {
    let rt = patchall::Runtime::builder().workers(2).build().unwrap();
    let handle = rt.handle();
    let outer = rt
        .spawn(move || {
            let here = thread_id();
            // The other worker is the less loaded one now: this one runs `outer`.
            let inner = handle
                .spawn(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    thread_id()
                })
                .unwrap();
            (here, inner.join().unwrap())
        })
        .unwrap();
    let (a, b) = outer.join().unwrap();
    assert_ne!(a, b, "the inner coroutine ran on the other worker");
}

#[test]
fn a_million_cross_worker_handoffs_lose_nothing() {
    // Two coroutines on two workers pass a token back and forth through a pair of
    // one-slot mailboxes; each handoff is a cross-thread wake-up.
    const ROUNDS: u64 = 500_000;
    let rt = patchall::Runtime::builder().workers(2).build().unwrap();
    let ping = Arc::new(Slot::default());
    let pong = Arc::new(Slot::default());
    let (p1, q1) = (ping.clone(), pong.clone());
    let a = rt
        .spawn(move || {
            let mut sum = 0;
            for i in 0..ROUNDS {
                p1.put(i);
                sum += q1.take();
            }
            (sum, thread_id())
        })
        .unwrap();
    let b = rt
        .spawn(move || {
            for _ in 0..ROUNDS {
                let v = ping.take();
                pong.put(v + 1);
            }
            thread_id()
        })
        .unwrap();
    let (sum, ta) = a.join().unwrap();
    let tb = b.join().unwrap();
    assert_ne!(ta, tb, "the two coroutines ran on different workers");
    assert_eq!(sum, (1..=ROUNDS).sum::<u64>());
}

/// A one-value mailbox that yields while empty/full: what it checks is that every
/// value crosses between the workers exactly once (no lost or doubled handoff).
/// Lost *wake-ups* are checked by the channel tests, which park.
#[derive(Default)]
struct Slot {
    value: Mutex<Option<u64>>,
    puts: AtomicU64,
}

impl Slot {
    fn put(&self, v: u64) {
        loop {
            {
                let mut slot = self.value.lock().unwrap();
                if slot.is_none() {
                    *slot = Some(v);
                    self.puts.fetch_add(1, SeqCst);
                    return;
                }
            }
            patchall::yield_now();
        }
    }

    fn take(&self) -> u64 {
        loop {
            if let Some(v) = self.value.lock().unwrap().take() {
                return v;
            }
            patchall::yield_now();
        }
    }
}

#[test]
fn spawn_after_drop_is_refused_and_drop_does_not_hang() {
    let rt = patchall::Runtime::builder().workers(1).build().unwrap();
    let handle = rt.handle();
    let parked = rt
        .spawn(|| std::thread::sleep(Duration::from_secs(3600)))
        .unwrap();
    drop(rt);
    assert!(!parked.is_finished());
    assert!(handle.spawn(|| ()).is_err());
}
