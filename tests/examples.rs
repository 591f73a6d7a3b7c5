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
