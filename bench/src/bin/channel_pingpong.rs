//! Channel ping-pong in one run (issue 7): patchall's channel between two
//! coroutines on one thread, tokio's mpsc between two tasks on a current_thread
//! runtime, and std's mpsc between two threads. One round trip = a send on one
//! channel and the echo received on another.
//!
//! `cargo run --release -p patchall-bench --bin channel_pingpong [ROUNDS]`

use std::time::{Duration, Instant};

fn patchall_coroutines(rounds: u64) -> Duration {
    let (to_b, from_a) = patchall::sync::bounded::<u64>(1);
    let (to_a, from_b) = patchall::sync::bounded::<u64>(1);
    let start = Instant::now();
    let b = patchall::spawn(move || {
        while let Ok(v) = from_a.recv() {
            if to_a.send(v + 1).is_err() {
                break;
            }
        }
    })
    .expect("spawn");
    let a = patchall::spawn(move || {
        let mut v = 0;
        for _ in 0..rounds {
            to_b.send(v).expect("send");
            v = from_b.recv().expect("recv");
        }
        v
    })
    .expect("spawn");
    assert_eq!(a.join().expect("join"), rounds);
    b.join().expect("join");
    start.elapsed()
}

fn tokio_tasks(rounds: u64) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (to_b, mut from_a) = tokio::sync::mpsc::channel::<u64>(1);
        let (to_a, mut from_b) = tokio::sync::mpsc::channel::<u64>(1);
        let start = Instant::now();
        let b = tokio::spawn(async move {
            while let Some(v) = from_a.recv().await {
                if to_a.send(v + 1).await.is_err() {
                    break;
                }
            }
        });
        let mut v = 0;
        for _ in 0..rounds {
            to_b.send(v).await.expect("send");
            v = from_b.recv().await.expect("recv");
        }
        assert_eq!(v, rounds);
        drop(to_b);
        b.await.expect("join");
        start.elapsed()
    })
}

fn std_threads(rounds: u64) -> Duration {
    let (to_b, from_a) = std::sync::mpsc::sync_channel::<u64>(1);
    let (to_a, from_b) = std::sync::mpsc::sync_channel::<u64>(1);
    let start = Instant::now();
    let b = std::thread::spawn(move || {
        while let Ok(v) = from_a.recv() {
            if to_a.send(v + 1).is_err() {
                break;
            }
        }
    });
    let mut v = 0;
    for _ in 0..rounds {
        to_b.send(v).expect("send");
        v = from_b.recv().expect("recv");
    }
    assert_eq!(v, rounds);
    drop(to_b);
    b.join().expect("join");
    start.elapsed()
}

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let thread_rounds = (rounds / 4).max(1);
    // Warm-up, then the measured runs, all in this one process.
    patchall_coroutines(rounds / 10);
    tokio_tasks(rounds / 10);
    std_threads(thread_rounds / 10);
    let per = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
    let p = per(patchall_coroutines(rounds), rounds);
    let t = per(tokio_tasks(rounds), rounds);
    let s = per(std_threads(thread_rounds), thread_rounds);
    println!("patchall bounded(1), 2 coroutines, 1 thread: {p:>9.1} ns per round trip");
    println!("tokio mpsc(1), 2 tasks, current_thread:      {t:>9.1} ns per round trip");
    println!("std sync_channel(1), 2 threads:              {s:>9.1} ns per round trip");
    println!(
        "ratios: tokio/patchall {:.2}x, std/patchall {:.1}x",
        t / p,
        s / p
    );
}
