//! The examples, run as a user would run them: `cargo run --example NAME`.

use std::process::Command;

/// Runs `cargo run -q --example name` and returns its stdout. The example's
/// build happens here too: any timing is measured by the example itself.
fn run_example(name: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "-q", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn spawn_sleep_overlaps_the_two_sleeps() {
    let stdout = run_example("spawn_sleep");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "Running in foo",
            "Explicit context to bar",
            "Implicit context switch back to bar",
            "Explicit context switch to foo again",
        ],
        "stdout:\n{stdout}"
    );
    let secs: f64 = lines[4]
        .strip_prefix("elapsed ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed time in:\n{stdout}"));
    // 2 s of sleeping: far from 3 s, the sum of the sleeps.
    assert!((1.9..2.9).contains(&secs), "took {secs} s");
}

#[test]
fn producer_consumer_feeds_both_consumers_in_turn() {
    let stdout = run_example("producer_consumer");
    let mut want = vec!["--->starting eating baozi...".to_string(); 2];
    for n in 1..=5 {
        want.push(format!("[c1] is eating baozi {n}"));
        want.push(format!("[c2] is eating baozi {n}"));
        want.push(format!("[producer] is making baozi {n}"));
    }
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want);
}

#[test]
fn greenlet_switch_prints_12_56_34_78() {
    assert_eq!(run_example("greenlet_switch"), "12\n56\n34\n78\n");
}

#[test]
fn crawler_fetches_concurrently_in_about_one_delay() {
    let stdout = run_example("crawler");
    let received: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("bytes received from"))
        .collect();
    assert_eq!(received.len(), 20, "stdout:\n{stdout}");
    for (i, line) in received.iter().enumerate() {
        let page = i % 10;
        let want = format!("{} bytes received from ", 1000 + 100 * page);
        assert!(
            line.starts_with(&want) && line.ends_with(&format!("/page/{page}.")),
            "{line}"
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    let secs: Vec<f64> = last
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // "10 fetches: sequential S s, concurrent C s (each answer takes 200 ms)"
    let (seq, conc) = (secs[1], secs[2]);
    assert!(seq >= 1.9, "sequential took {seq} s: ten 200 ms answers");
    assert!(
        conc < 1.0,
        "concurrent took {conc} s: should be about one 200 ms answer"
    );
}

#[test]
fn event_loop_dispatches_callbacks_per_fd() {
    let stdout = run_example("event_loop");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "[loop] listener readable: accepted connection Token(1)",
            "[loop] Token(1): readable, echoing \"hello\"",
            "[loop] Token(1): readable, echoing \"event\"",
            "[loop] Token(1): readable, echoing \"loop\"",
            "[loop] Token(1): peer closed, unregistering",
            "[client] got back [\"hello\", \"event\", \"loop\"]",
        ]
    );
}
