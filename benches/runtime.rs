//! Runtime micro-benchmarks: yield round trip, spawn+join (against std threads),
//! timer insert and fire.
//!
//! ```text
//! cargo bench --bench runtime            # all
//! cargo bench --bench runtime -- yield   # those whose name contains "yield"
//! ```
//!
//! No framework: each benchmark runs once to warm up (pools, caches, page
//! faults), then five timed samples of a fixed number of operations; it prints
//! the median and the best sample in nanoseconds per operation.

use std::hint::black_box;
use std::time::{Duration, Instant};

const SAMPLES: usize = 5;

/// The median and best of `SAMPLES` runs of `run(iters)`, in ns per operation;
/// None if `name` does not match the command line's filter. `run` performs
/// `iters` operations and returns how long they took.
fn measure(name: &str, iters: u64, mut run: impl FnMut(u64) -> Duration) -> Option<f64> {
    // `cargo bench` passes `--bench`; the first bare word filters.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !name.contains(&f)) {
        return None;
    }
    run(iters);
    let mut ns: Vec<f64> = (0..SAMPLES)
        .map(|_| run(iters).as_nanos() as f64 / iters as f64)
        .collect();
    ns.sort_by(f64::total_cmp);
    let median = ns[SAMPLES / 2];
    println!(
        "{name:<44} {median:>10.1} ns/op (best {:.1}, {iters} ops x {SAMPLES})",
        ns[0]
    );
    Some(median)
}

/// `width` coroutines yield in turn `rounds` times each.
fn yield_ring(width: u64, rounds: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..width)
        .map(|_| {
            patchall::spawn(move || {
                for _ in 0..rounds {
                    patchall::yield_now();
                }
            })
            .unwrap()
        })
        .collect();
    patchall::join_all(handles);
    start.elapsed()
}

/// Two coroutines yield to each other `iters` times: one round trip is A -> B -> A.
fn yield_round_trip(iters: u64) -> Duration {
    yield_ring(2, iters)
}

/// 100 coroutines yield in turn: the scheduler's once-per-round work (polling,
/// timers, mail, the join condition) is shared by 100 switches. One op is one
/// yield, a switch out and back in.
fn yield_in_100(iters: u64) -> Duration {
    yield_ring(100, iters / 100)
}

/// A plain thread spawns a coroutine and joins it (driving the scheduler).
fn spawn_join_from_thread(iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        let h = patchall::spawn(move || black_box(i)).unwrap();
        black_box(h.join().unwrap());
    }
    start.elapsed()
}

/// A coroutine spawns a coroutine and joins it (parking until it is done).
fn spawn_join_from_coroutine(iters: u64) -> Duration {
    patchall::spawn(move || {
        let start = Instant::now();
        for i in 0..iters {
            let h = patchall::spawn(move || black_box(i)).unwrap();
            black_box(h.join().unwrap());
        }
        start.elapsed()
    })
    .unwrap()
    .join()
    .unwrap()
}

fn std_thread_spawn_join(iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(std::thread::spawn(move || black_box(i)).join().unwrap());
    }
    start.elapsed()
}

/// `SLEEPERS` coroutines each sleep 1 µs, over and over: with this many, every
/// deadline has passed by the time the scheduler looks, so each operation is a
/// timer insert, its expiry, the wake-up and the switches, never an idle wait.
const SLEEPERS: u64 = 1000;

fn timer_insert_fire(iters: u64) -> Duration {
    let rounds = iters / SLEEPERS;
    let start = Instant::now();
    let handles: Vec<_> = (0..SLEEPERS)
        .map(|_| {
            patchall::spawn(move || {
                for _ in 0..rounds {
                    patchall::sleep(Duration::from_micros(1));
                }
            })
            .unwrap()
        })
        .collect();
    patchall::join_all(handles);
    start.elapsed()
}

fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!("{cpu}; stacks {:?}", patchall::config().stack_mode);
    if let Some(rt) = measure(
        "yield round trip (2 coroutines)",
        2_000_000,
        yield_round_trip,
    ) {
        println!("  target <= 20 ns: {}", verdict(rt <= 20.0));
    }
    measure(
        "yield among 100 coroutines (per yield)",
        2_000_000,
        yield_in_100,
    );
    let sj = measure(
        "spawn+join, pooled stack (plain thread joins)",
        500_000,
        spawn_join_from_thread,
    );
    let sjc = measure(
        "spawn+join, pooled stack (coroutine joins)",
        500_000,
        spawn_join_from_coroutine,
    );
    if let Some(best) = sj.into_iter().chain(sjc).reduce(f64::min) {
        println!("  target <= 100 ns: {}", verdict(best <= 100.0));
    }
    if let Some(th) = measure("std::thread spawn+join", 5_000, std_thread_spawn_join) {
        for (who, ns) in [("plain thread", sj), ("coroutine", sjc)] {
            if let Some(ns) = ns {
                println!(
                    "  std::thread / coroutine spawn+join ({who} joins): {:.0}x",
                    th / ns
                );
            }
        }
    }
    measure(
        "sleep(1 us) x 1000 coroutines: timer insert+fire",
        2_000_000,
        timer_insert_fire,
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
