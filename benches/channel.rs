//! Channel ping-pong: round trips between two coroutines on one thread through
//! `patchall::sync` channels, against `std::sync::mpsc` between two OS threads,
//! in the same run. Prints ns per round trip and the ratio.
//!
//! `cargo bench --bench channel` (ROUNDS=n to change the count).

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use patchall::sync::bounded;

/// Round trips through patchall channels of capacity `cap`, between two
/// coroutines of this thread.
fn coroutines(rounds: u64, cap: usize) -> Duration {
    let (ping_tx, ping_rx) = bounded::<u64>(cap);
    let (pong_tx, pong_rx) = bounded::<u64>(cap);
    let echo = patchall::spawn(move || {
        for v in &ping_rx {
            pong_tx.send(v).unwrap();
        }
    })
    .unwrap();
    let start = Instant::now();
    let driver = patchall::spawn(move || {
        for i in 0..rounds {
            ping_tx.send(i).unwrap();
            black_box(pong_rx.recv().unwrap());
        }
    })
    .unwrap();
    driver.join().unwrap();
    let took = start.elapsed();
    echo.join().unwrap();
    took
}

/// Round trips through patchall channels between two plain threads (each
/// blocks by driving its own scheduler, woken through its waker).
fn patchall_threads(rounds: u64) -> Duration {
    let (ping_tx, ping_rx) = bounded::<u64>(1);
    let (pong_tx, pong_rx) = bounded::<u64>(1);
    let echo = std::thread::spawn(move || {
        for v in &ping_rx {
            pong_tx.send(v).unwrap();
        }
    });
    let start = Instant::now();
    for i in 0..rounds {
        ping_tx.send(i).unwrap();
        black_box(pong_rx.recv().unwrap());
    }
    let took = start.elapsed();
    drop(ping_tx);
    echo.join().unwrap();
    took
}

/// Round trips through std::sync::mpsc between two OS threads.
fn std_threads(rounds: u64) -> Duration {
    let (ping_tx, ping_rx) = mpsc::channel::<u64>();
    let (pong_tx, pong_rx) = mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        for v in ping_rx {
            pong_tx.send(v).unwrap();
        }
    });
    let start = Instant::now();
    for i in 0..rounds {
        ping_tx.send(i).unwrap();
        black_box(pong_rx.recv().unwrap());
    }
    let took = start.elapsed();
    drop(ping_tx);
    echo.join().unwrap();
    took
}

fn ns_per(d: Duration, rounds: u64) -> f64 {
    d.as_nanos() as f64 / rounds as f64
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore arguments.
    let rounds: u64 = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // Warm up stacks, schedulers and threads.
    coroutines(rounds / 10, 1);
    std_threads(rounds / 10);

    let best = |f: &dyn Fn() -> Duration| (0..3).map(|_| f()).min().expect("three runs");
    let co1 = ns_per(best(&|| coroutines(rounds, 1)), rounds);
    let co0 = ns_per(best(&|| coroutines(rounds, 0)), rounds);
    let pt = ns_per(best(&|| patchall_threads(rounds / 4)), rounds / 4);
    let st = ns_per(best(&|| std_threads(rounds / 4)), rounds / 4);

    println!(
        "channel ping-pong, {rounds} round trips (threads: {}), best of 3",
        rounds / 4
    );
    println!("  patchall bounded(1), 2 coroutines, 1 thread : {co1:8.0} ns/round trip");
    println!("  patchall bounded(0), 2 coroutines, 1 thread : {co0:8.0} ns/round trip");
    println!("  patchall bounded(1), 2 plain threads        : {pt:8.0} ns/round trip");
    println!("  std::sync::mpsc::channel, 2 threads        : {st:8.0} ns/round trip");
    println!(
        "  std threads / patchall coroutines (bounded(1)): {:.1}x",
        st / co1
    );
}
