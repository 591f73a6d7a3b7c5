//! The runtime's own fds are invisible (contract 10):
//! `tests/c/green_close_fds.c` closes or takes over every fd it did not open,
//! between two rounds of threads, in each way programs do it; the output is
//! the same natively, preloaded, and with green threads on one and on two
//! workers (where each scheduler has its epoll and waker).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{c_program, same_in_every_preload_mode};

/// The C program, compiled once: tests run in parallel, and one compiling
/// over the file another is starting fails with ETXTBSY.
fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| c_program("green_close_fds"))
}

/// Runs `green_close_fds how` natively and in every preloaded mode:
/// identical status, stdout and stderr. Returns the native stdout.
fn same_everywhere(how: &str) -> String {
    let program = program();
    let make = || {
        let mut c = Command::new(program);
        c.arg(how);
        c
    };
    let native = same_in_every_preload_mode(make);
    assert!(native.status.success(), "{native:?}");
    native.stdout
}

/// Both rounds of threads ran to the end.
fn rounds_ran(out: &str) {
    for when in ["before", "after"] {
        let line = format!("{when}: slept 1, wrote 1, read 100 messages, sum 4950");
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    assert!(
        out.contains("open after: 0; close(3..1023) then: 0 closed"),
        "{out}"
    );
}

#[test]
fn a_close_loop_over_every_fd_leaves_the_runtime_running() {
    rounds_ran(&same_everywhere("loop"));
}

#[test]
fn close_range_skips_the_runtimes_fds() {
    let out = same_everywhere("range");
    assert!(out.contains("close_range: 0\n"), "{out}");
    rounds_ran(&out);
}

#[test]
fn close_range_with_unshare_or_cloexec_then_closefrom() {
    let out = same_everywhere("unshare");
    assert!(out.contains("close_range unshare: 0\n"), "{out}");
    rounds_ran(&out);
    let out = same_everywhere("cloexec");
    assert!(out.contains("close_range cloexec: 0\n"), "{out}");
    rounds_ran(&out);
}

#[test]
fn closefrom_skips_the_runtimes_fds() {
    rounds_ran(&same_everywhere("from"));
}

#[test]
fn dup2_onto_every_number_succeeds_and_the_runtime_moves_aside() {
    let out = same_everywhere("dup2");
    assert!(
        out.contains("dup2 onto 4..1023: 1020 ok, 0 failed; open now 1021\n"),
        "{out}"
    );
    assert!(
        out.contains("between: slept 1, wrote 1, read 100 messages, sum 4950\n"),
        "{out}"
    );
    assert!(
        out.contains("dup3 onto 1000: 1000; close loop: 1021 closed\n"),
        "{out}"
    );
    rounds_ran(&out);
}

#[test]
fn f_dupfd_gets_the_lowest_number_as_natively() {
    let out = same_everywhere("dupfd");
    for base in [900, 960, 1000, 1020] {
        let line = format!("F_DUPFD from {base}: {base}");
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    rounds_ran(&out);
}
