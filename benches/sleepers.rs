//! How many sleeping coroutines fit at once, and what each costs.
//!
//! ```text
//! cargo bench --bench sleepers                              # guarded, 60,000
//! PATCHALL_STACKS=dense cargo bench --bench sleepers        # dense, 1,000,000
//! cargo bench --bench sleepers -- 100000                    # any count
//! cargo bench --bench sleepers -- max                       # until spawn fails
//! ```
//!
//! Spawns N coroutines that each park in a one-hour `patchall::sleep`, lets every
//! one of them run up to its park, then reports how many are parked, the resident
//! memory (`VmRSS`) and memory mappings (`/proc/self/maps` lines) they added, and
//! exits: the sleepers are abandoned, not woken.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use patchall::StackMode;

static PARKED: AtomicUsize = AtomicUsize::new(0);
/// Bounds for `max`: far beyond the targets; resident memory is checked every
/// `RSS_CHECK_EVERY` spawns so that a runaway cannot exhaust a shared machine.
const MAX_TRIES: usize = 1 << 24;
const MAX_RSS_KIB: u64 = 12 << 20;
const RSS_CHECK_EVERY: usize = 1 << 14;

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .count()
}

fn read_sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let cfg = patchall::config();
    let default_n = match cfg.stack_mode {
        StackMode::Guarded => 60_000,
        StackMode::Dense => 1_000_000,
    };
    // `cargo bench` passes `--bench`; the first bare word is the count.
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (target, until_full) = match arg.as_deref() {
        None => (default_n, false),
        Some("max") => (MAX_TRIES, true),
        Some(n) => (n.replace('_', "").parse().expect("a count or `max`"), false),
    };
    println!(
        "mode {:?}, stack {} KiB, vm.max_map_count {}, target {}",
        cfg.stack_mode,
        cfg.stack_size / 1024,
        read_sysctl("max_map_count"),
        if until_full {
            "max".to_string()
        } else {
            target.to_string()
        }
    );

    // The scheduler and its reactor exist before the baseline is taken.
    patchall::spawn(|| ()).unwrap().join().unwrap();
    let rss0 = vm_rss_kib();
    let maps0 = mappings();

    let start = Instant::now();
    let mut handles = Vec::with_capacity(if until_full { 1 << 20 } else { target });
    let mut failure = None;
    while handles.len() < target {
        if handles.len() % RSS_CHECK_EVERY == 0 && vm_rss_kib() > MAX_RSS_KIB {
            println!("stopped: VmRSS above {} GiB", MAX_RSS_KIB >> 20);
            break;
        }
        match patchall::spawn(|| {
            PARKED.fetch_add(1, Ordering::Relaxed);
            patchall::sleep(Duration::from_secs(3600));
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let spawned = handles.len();
    let spawn_time = start.elapsed();
    // One pass of the scheduler: every new coroutine runs until it parks.
    patchall::yield_now();
    let park_time = start.elapsed() - spawn_time;
    let parked = PARKED.load(Ordering::Relaxed);
    let rss = vm_rss_kib().saturating_sub(rss0);
    let maps = mappings().saturating_sub(maps0);

    println!("spawned {spawned}, parked and live {parked}");
    if let Some(e) = &failure {
        println!("spawn #{} failed: {e}", spawned + 1);
    }
    println!(
        "spawn {:.0} ns each, first run to park {:.0} ns each",
        spawn_time.as_nanos() as f64 / spawned.max(1) as f64,
        park_time.as_nanos() as f64 / spawned.max(1) as f64,
    );
    println!(
        "VmRSS +{} MiB, {:.1} KiB per coroutine",
        rss / 1024,
        rss as f64 / spawned.max(1) as f64
    );
    println!(
        "mappings +{maps} ({:.4} per coroutine), {} in all",
        maps as f64 / spawned.max(1) as f64,
        maps0 + maps
    );
    let reached = parked == spawned && (until_full || spawned == target);
    // The sleepers are abandoned: exiting does not wait an hour for them.
    std::process::exit(if reached { 0 } else { 1 });
}
