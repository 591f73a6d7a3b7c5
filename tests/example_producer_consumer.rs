//! Runs `examples/producer_consumer_channel.rs` and checks every line it prints.

use std::process::Command;

#[test]
fn producer_consumer_channel_prints_the_walk_through() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
    let out = Command::new(cargo)
        .args(["run", "-q", "--example", "producer_consumer_channel"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "example failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let expected = [
        "producer made baozi 1",
        "c1 ate baozi 1",
        "producer made baozi 2",
        "c2 ate baozi 2",
        "producer made baozi 3",
        "c1 ate baozi 3",
        "producer made baozi 4",
        "c2 ate baozi 4",
        "producer made baozi 5",
        "c1 ate baozi 5",
        "c1 ate 3, c2 ate 2",
    ];
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        expected,
        "stderr: {stderr}"
    );
}
