//! The blocking monitor (`PATCHALL_MONITOR`): a coroutine that holds its OS
//! thread past the threshold — a CPU loop, a call that blocks the thread
//! without parking — is reported once, with its symbolised stack; with the
//! monitor off a green program stays single-threaded.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Outcome, TempDir, assert_passed, c_program, ignored_test, preload_lib, run};

/// `program` as a green-threaded process under the preload, monitor at 100 ms.
fn monitored(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("LD_PRELOAD", preload_lib())
        .env("PATCHALL_GREEN_THREADS", "1")
        .env("PATCHALL_MONITOR", "100ms");
    c
}

/// The report headers (first lines) in `stderr`.
fn reports(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("patchall: coroutine "))
        .collect()
}

/// The milliseconds a header says the coroutine held its thread, checking
/// the header's shape: `patchall: coroutine <id> "<label>" held its thread for <ms> ms`.
fn held_ms(header: &str, label: &str) -> u64 {
    let rest = header
        .strip_prefix("patchall: coroutine ")
        .unwrap_or_else(|| panic!("{header}"));
    let (id, rest) = rest.split_once(' ').expect("an id");
    assert!(id.parse::<u64>().is_ok_and(|id| id > 0), "{header}");
    let rest = rest
        .strip_prefix(&format!("\"{label}\" held its thread for "))
        .unwrap_or_else(|| panic!("wanted label {label:?}: {header}"));
    rest.strip_suffix(" ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{header}"))
}

/// The stack lines that follow the first report header.
fn stack(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .skip_while(|l| !l.starts_with("patchall: coroutine "))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect()
}

#[test]
fn a_cpu_loop_in_a_green_thread_is_reported_once_by_its_static_start_routine() {
    let program = c_program("monitor_burn");
    let out = run(monitored(&program));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "burnt\n");
    let headers = reports(&out.stderr);
    assert_eq!(headers.len(), 1, "one report per stall: {out:?}");
    // `burn` is `static`: only the ELF symbol table names it.
    let ms = held_ms(headers[0], "burn");
    assert!((100..1000).contains(&ms), "{ms} ms: {}", out.stderr);
    let frames = stack(&out.stderr);
    assert!(
        frames
            .first()
            .is_some_and(|f| f.contains(" burn+0x") && f.contains(program.to_str().unwrap())),
        "the loop is the top frame: {}",
        out.stderr
    );
    // The scheduler that resumed it is left out.
    assert!(
        !out.stderr.contains("corosensei") && !out.stderr.contains("run_until"),
        "{}",
        out.stderr
    );
}

#[test]
fn without_the_monitor_nothing_is_reported() {
    let program = c_program("monitor_burn");
    let mut cmd = monitored(&program);
    cmd.env("PATCHALL_MONITOR", "off");
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stderr, "");
}

#[test]
fn a_green_thread_blocked_in_an_unhooked_flock_is_reported() {
    let program = c_program("monitor_flock");
    let dir = TempDir::new("monitor-flock");
    let lock = dir.path().join("lock");
    std::fs::write(&lock, b"").unwrap();
    let mut cmd = monitored(&program);
    cmd.arg(&lock);
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "locked after the child let go\n");
    let headers = reports(&out.stderr);
    assert_eq!(headers.len(), 1, "{out:?}");
    let ms = held_ms(headers[0], "wait_for_lock");
    assert!(ms >= 100, "{}", out.stderr);
    let frames = stack(&out.stderr);
    assert!(
        frames.len() >= 2
            && frames[0].contains(" flock+")
            && frames[0].contains("libc.so")
            && frames[1].contains(" wait_for_lock+"),
        "flock called from wait_for_lock: {}",
        out.stderr
    );
}

/// Starts the sleeping program (green or not) and counts its OS threads
/// while it sleeps.
fn threads_while_sleeping(green: bool, monitor: &str) -> (usize, Outcome) {
    let program = c_program("monitor_sleeper");
    let mut cmd = monitored(&program);
    cmd.env("PATCHALL_MONITOR", monitor)
        .env("PATCHALL_GREEN_THREADS", if green { "1" } else { "0" })
        .env_remove("PATCHALL_WORKERS")
        .env_remove("PATCHALL_OFFLOAD_FILES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the sleeper");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "sleeping\n");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line");
    // The program ends after its 1 s sleep: reading to the end is bounded.
    stdout.read_to_string(&mut line).unwrap();
    let out = child.wait_with_output().unwrap();
    let outcome = Outcome {
        status: out.status,
        stdout: line,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (threads, outcome)
}

#[test]
fn with_the_monitor_off_a_sleeping_green_program_keeps_one_thread() {
    let (threads, out) = threads_while_sleeping(true, "off");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "sleeping\nwoke\n");
    assert_eq!(threads, 1, "{out:?}");
    // The count can tell: with the monitor on, it has a thread of its own,
    // and a parked coroutine is never reported.
    let (threads, out) = threads_while_sleeping(true, "100ms");
    assert_eq!(threads, 2, "{out:?}");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stderr, "");
}

#[test]
fn plain_preload_without_coroutines_starts_no_monitor() {
    // main and the thread it started, natively: no scheduler, no monitor.
    let (threads, out) = threads_while_sleeping(false, "100ms");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "sleeping\nwoke\n");
    assert_eq!(threads, 2, "{out:?}");
}

/// Burns 300 ms of CPU without a hooked call.
#[inline(never)]
fn spin_for(d: Duration) -> u64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        n = std::hint::black_box(n.wrapping_add(1));
    }
    n
}

#[test]
#[ignore = "run by a_rust_coroutine_in_a_cpu_loop_is_reported, in a process of its own"]
fn rust_coroutine_spins() {
    let h = patchall::spawn(|| spin_for(Duration::from_millis(300))).unwrap();
    assert!(h.join().unwrap() > 0);
    // Time for a monitor that a loaded machine runs late to finish its
    // report (naming frames from this large debug binary takes a while).
    std::thread::sleep(Duration::from_secs(1));
}

#[test]
fn a_rust_coroutine_in_a_cpu_loop_is_reported() {
    let name = "rust_coroutine_spins";
    let mut cmd = ignored_test(name);
    cmd.env("PATCHALL_MONITOR", "100ms");
    let out = run(cmd);
    assert_passed(name, &out);
    let headers = reports(&out.stderr);
    assert_eq!(headers.len(), 1, "{out:?}");
    // Unnamed: labelled by its closure's type.
    held_ms(headers[0], "monitor::rust_coroutine_spins::{{closure}}");
    let frames = stack(&out.stderr);
    assert!(
        frames.iter().any(|f| f.contains(" monitor::spin_for+")),
        "{}",
        out.stderr
    );
}

/// A coroutine spins 300 ms without a hooked call, then makes hooked calls
/// that complete at once (a byte through a socket pair) until the other
/// coroutine has run, at most 200 of them; returns how many it made.
fn calls_before_the_other_runs() -> usize {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let other_ran = Arc::new(AtomicBool::new(false));
    let seen = other_ran.clone();
    let spinner = patchall::spawn(move || {
        spin_for(Duration::from_millis(300));
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let mut calls = 0;
        while !seen.load(SeqCst) && calls < 200 {
            a.write_all(b"x").unwrap();
            let mut byte = [0u8];
            b.read_exact(&mut byte).unwrap();
            calls += 2;
        }
        calls
    })
    .unwrap();
    let other = patchall::spawn(move || other_ran.store(true, SeqCst)).unwrap();
    let calls = spinner.join().unwrap();
    other.join().unwrap();
    calls
}

#[test]
#[ignore = "run by a_reported_hold_yields_at_its_next_hooked_calls, in a process of its own"]
fn reported_hold_yields() {
    let calls = calls_before_the_other_runs();
    std::thread::sleep(Duration::from_secs(1));
    if std::env::var("PATCHALL_MONITOR").is_ok_and(|m| m != "off") {
        // The monitor asked for the yield: the slice check (every 32 calls)
        // took it at once.
        assert!(calls <= 70, "{calls} calls before the other coroutine ran");
    } else {
        // Without it the run's slice starts counting at its first check:
        // 200 quick calls are far from half a 60 s slice.
        assert_eq!(calls, 200);
    }
}

#[test]
fn a_reported_hold_yields_at_its_next_hooked_calls() {
    let name = "reported_hold_yields";
    for monitor in ["100ms", "off"] {
        let mut cmd = ignored_test(name);
        // Long slices: only the monitor's request, not a slice that a
        // loaded machine's preemption ends, makes the spinner yield early.
        cmd.env("PATCHALL_MONITOR", monitor)
            .env("PATCHALL_TIMESLICE", "60s");
        let out = run(cmd);
        assert_passed(name, &out);
        assert_eq!(reports(&out.stderr).len(), usize::from(monitor != "off"));
    }
}
