//! Races on a coroutine's outcome: `kill` from other OS threads against the
//! coroutine's start and completion, and joiners on other threads against its
//! completion. Every join gives the value or `Killed`, never hangs, and gives
//! `Killed` exactly when a kill came before completion.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use patchall::Killed;

/// Small deterministic xorshift: the runs differ by timing, not by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs `f` on its own thread and fails if it has not finished in `limit`:
/// a lost wake-up or cancellation shows as a failure, not a hung test run.
fn within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => t.join().unwrap(),
        // The thread panicked: report its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(t.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("still running after {limit:?}"),
    }
}

/// A body's value that counts its drops: each must be dropped exactly once,
/// by whoever joins or, if the coroutine was killed, by the runtime.
struct Tracked {
    round: u64,
    /// A kill had returned when the body ended: it came before completion.
    kill_seen: bool,
    dropped: Arc<AtomicUsize>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, SeqCst);
    }
}

#[test]
fn kills_from_other_threads_race_start_and_completion() {
    within(Duration::from_secs(60), || {
        let rt = patchall::Runtime::builder().workers(1).build().unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let created = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (mut values, mut killed, mut never_ran) = (0, 0, 0);
        let start = Instant::now();
        for round in 0..4000 {
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
            let work = rng.below(4);
            // Some rounds kill only after the end: the kill must change nothing.
            let kill_late = work != 3 && rng.below(4) == 0;
            let ran = Arc::new(AtomicBool::new(false));
            let kill_returned = Arc::new(AtomicBool::new(false));
            let (r, k, c, d) = (
                ran.clone(),
                kill_returned.clone(),
                created.clone(),
                dropped.clone(),
            );
            let h = rt
                .spawn(move || {
                    r.store(true, SeqCst);
                    match work {
                        0 => {}
                        1 => patchall::yield_now(),
                        2 => patchall::sleep(Duration::from_micros(20)),
                        // Only a kill ends this early.
                        _ => patchall::sleep(Duration::from_secs(20)),
                    }
                    c.fetch_add(1, SeqCst);
                    Tracked {
                        round,
                        kill_seen: k.load(SeqCst),
                        dropped: d,
                    }
                })
                .unwrap();
            if kill_late {
                while !h.is_finished() {
                    std::thread::yield_now();
                }
            }
            // Some killer found it unfinished just before its kill: needed for
            // any kill to come before completion.
            let unfinished_at_a_kill = AtomicBool::new(false);
            let killers = 1 + rng.below(2);
            let spins: Vec<u64> = (0..killers).map(|_| rng.below(3000)).collect();
            let round_start = Instant::now();
            std::thread::scope(|s| {
                for &n in &spins {
                    let (h, seen, k) = (&h, &unfinished_at_a_kill, &kill_returned);
                    s.spawn(move || {
                        for _ in 0..n {
                            std::hint::spin_loop();
                        }
                        if !h.is_finished() {
                            seen.store(true, SeqCst);
                        }
                        h.kill();
                        k.store(true, SeqCst);
                    });
                }
            });
            match h.join() {
                Ok(t) => {
                    assert_eq!(t.round, round);
                    assert!(
                        !t.kill_seen,
                        "round {round}: a kill returned before the body ended, yet join gave the value"
                    );
                    values += 1;
                }
                Err(e) => {
                    assert!(
                        e.is::<Killed>(),
                        "round {round}: a payload other than Killed"
                    );
                    assert!(
                        unfinished_at_a_kill.load(SeqCst) && !kill_late,
                        "round {round}: killed after it had finished"
                    );
                    killed += 1;
                    never_ran += usize::from(!ran.load(SeqCst));
                }
            }
            assert!(
                round_start.elapsed() < Duration::from_secs(10),
                "round {round}: the kill did not end the body's sleep"
            );
        }
        // Waited-for rounds give values; 20 s sleeps can only end killed.
        assert!(values > 0 && killed > 0, "values {values}, killed {killed}");
        assert_eq!(
            created.load(SeqCst),
            dropped.load(SeqCst),
            "every body's value is dropped exactly once"
        );
        eprintln!("values {values}, killed {killed} (never ran: {never_ran})");
    });
}

#[test]
fn joins_from_other_threads_never_miss_the_completion() {
    within(Duration::from_secs(60), || {
        let rt = patchall::Runtime::builder().workers(1).build().unwrap();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let start = Instant::now();
        let mut joined = 0;
        for _ in 0..2000 {
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
            let mut handles: Vec<_> = (0..10u64)
                .map(|i| {
                    let (yields, spins) = (rng.below(3), rng.below(5000));
                    rt.spawn(move || {
                        for _ in 0..yields {
                            patchall::yield_now();
                        }
                        // Ends around when the joiner registers.
                        for _ in 0..spins {
                            std::hint::spin_loop();
                        }
                        i
                    })
                    .unwrap()
                })
                .collect();
            // Half joined by a coroutine here (parking), half by this plain
            // thread (driving its scheduler), while the worker completes them.
            let parked = handles.split_off(5);
            let joiner = patchall::spawn(move || {
                parked
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
            .unwrap();
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), i as u64);
            }
            assert_eq!(joiner.join().unwrap(), [5, 6, 7, 8, 9]);
            joined += 10;
        }
        assert!(joined > 0);
    });
}

#[test]
fn handles_dropped_on_another_thread_race_completion() {
    within(Duration::from_secs(60), || {
        let rt = patchall::Runtime::builder().workers(1).build().unwrap();
        let mut rng = Rng(0x94d0_49bb_1331_11eb);
        let created = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        for round in 0..20_000 {
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
            let (c, d, spins) = (created.clone(), dropped.clone(), rng.below(2000));
            let h = rt
                .spawn(move || {
                    for _ in 0..spins {
                        std::hint::spin_loop();
                    }
                    c.fetch_add(1, SeqCst);
                    Tracked {
                        round,
                        kill_seen: false,
                        dropped: d,
                    }
                })
                .unwrap();
            // Detached before it starts, while it runs, or after it ended:
            // either side may be the packet's last owner.
            for _ in 0..rng.below(4000) {
                std::hint::spin_loop();
            }
            drop(h);
        }
        drop(rt); // stops the worker once it has run what it was sent
        assert_eq!(
            created.load(SeqCst),
            dropped.load(SeqCst),
            "every detached body's value is dropped exactly once"
        );
        assert!(created.load(SeqCst) > 0);
    });
}

#[test]
fn a_joiner_killed_while_it_waits_still_gets_the_value() {
    within(Duration::from_secs(60), || {
        let rt = patchall::Runtime::builder().workers(1).build().unwrap();
        let go = Arc::new(AtomicBool::new(false));
        let g = go.clone();
        let inner = rt
            .spawn(move || {
                while !g.load(SeqCst) {
                    patchall::sleep(Duration::from_millis(1));
                }
                7
            })
            .unwrap();
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        let joiner = patchall::spawn(move || {
            let v = inner.join();
            *g.lock().unwrap() = Some(v.map_err(|_| "inner failed"));
        })
        .unwrap();
        patchall::yield_now(); // the joiner parks in join
        // join is not interrupted: woken by the kill, the joiner waits again,
        // registering anew.
        joiner.kill();
        patchall::yield_now();
        assert!(got.lock().unwrap().is_none());
        go.store(true, SeqCst);
        assert!(joiner.join().unwrap_err().is::<Killed>());
        assert_eq!(*got.lock().unwrap(), Some(Ok(7)));
    });
}
