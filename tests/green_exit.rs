//! Exit paths that wait for threads (contract 13) and `pthread_kill` on a
//! thread that ended: `tests/c/green_exit_paths.c`, one scenario per process,
//! reads the same natively, preloaded, and with green threads on one and on
//! two workers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{c_program, same_in_every_preload_mode};

/// The C program, compiled once: tests run in parallel, and one compiling
/// over the file another is starting fails with ETXTBSY.
fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| c_program("green_exit_paths"))
}

/// Runs scenario `what` natively, then in every preloaded mode: identical
/// status, stdout and stderr. Returns the native stdout and status code.
fn same_everywhere(what: &str) -> (String, Option<i32>) {
    let program = program();
    let make = || {
        let mut c = Command::new(program);
        c.arg(what);
        c
    };
    let native = same_in_every_preload_mode(make);
    (native.stdout, native.status.code())
}

/// The lines the handlers print once both pools are joined.
const JOINED: &str = "\
atexit: cond worker 0 joined 0, returned 100
atexit: cond worker 1 joined 0, returned 101
atexit: cond worker 2 joined 0, returned 102
destructor: sem worker 0 joined 0, returned 200
destructor: sem worker 1 joined 0, returned 201
destructor: sem worker 2 joined 0, returned 202
";

#[test]
fn exit_handlers_after_main_join_threads_that_wait_on_condvars_and_semaphores() {
    // Before, the handler's join slept in a futex on main's OS thread, whose
    // scheduler exit() had already destroyed with the thread's locals: the
    // workers (coroutines of that scheduler) never ran again.
    let (out, code) = same_everywhere("handlers");
    assert_eq!(out, format!("main returns 0\n{JOINED}"));
    assert_eq!(code, Some(0));
}

#[test]
fn exit_from_a_thread_runs_handlers_that_join_the_others() {
    let (out, code) = same_everywhere("exit");
    assert_eq!(out, format!("thread calls exit(5)\n{JOINED}"));
    assert_eq!(code, Some(5));
}

#[test]
fn main_returning_with_threads_alive_runs_the_handlers_and_ends() {
    let (out, code) = same_everywhere("alive");
    assert_eq!(out, format!("main returns 7 with sleepers alive\n{JOINED}"));
    assert_eq!(code, Some(7));
}

#[test]
fn pthread_kill_on_an_ended_unjoined_thread_succeeds_as_in_glibc() {
    let (out, code) = same_everywhere("kill");
    assert_eq!(
        out,
        "ended, not joined: kill 0 0, kill SIGUSR1 0, kill 32 EINVAL, kill 65 0, sigqueue 0 ESRCH\n\
         join 0, returned 7\n"
    );
    assert_eq!(code, Some(0));
}
