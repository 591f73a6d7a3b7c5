//! Waits that happen inside glibc, behind our hooks: stdio reading and
//! writing sockets and pipes through its internal `__read`/`__write`,
//! `system` and `popen` waiting for their child, and FILE locks contended
//! across threads (raw futex waits). Under green threads Syscall User Dispatch
//! traps them and they park; each program of `tests/c/stdio_*.c` must read
//! the same natively, preloaded, and with green threads on one and two
//! workers, and each shows that other threads ran while one waited.

mod common;

use std::process::Command;

use common::{c_program, preload_lib, run, same_in_every_preload_mode};

fn same_everywhere(name: &str) -> String {
    let program = c_program(name);
    let native = same_in_every_preload_mode(|| Command::new(&program));
    assert!(native.status.success(), "{name}: {native:?}");
    native.stdout
}

#[test]
fn fgets_fread_and_fputs_on_socket_files_wait_for_a_peer_thread() {
    let out = same_everywhere("stdio_sockets");
    assert!(out.contains("fgets: hello over a socket\n"), "{out}");
    assert!(out.contains("fread: 20000 bytes, intact yes"), "{out}");
    assert!(out.contains("peer's fgets: reply from main\n"), "{out}");
    assert!(
        out.contains("others ran while fgets waited: yes\n"),
        "{out}"
    );
    assert!(
        out.contains("others ran while fread waited: yes\n"),
        "{out}"
    );
}

#[test]
fn system_and_popen_let_other_threads_run() {
    let out = same_everywhere("stdio_system");
    assert_eq!(
        out,
        "system: exited 3\nothers ran during system: yes\npopen: from popen\npclose: 0\n\
         others ran during popen: yes\n"
    );
}

#[test]
fn two_writers_fill_a_pipe_that_a_third_thread_reads() {
    let out = same_everywhere("stdio_pipe_fill");
    assert_eq!(
        out,
        "writers done; others ran meanwhile: yes\n\
         fprintf writer: 2000 lines, fwrite writer: 2000 lines\nmalformed: 0, out of order: 0\n"
    );
}

#[test]
fn a_chat_server_whose_every_thread_uses_stdio_on_sockets_serves_500_clients() {
    let out = same_everywhere("stdio_chat");
    assert_eq!(
        out,
        "clients ok: 500 of 500\nmessages: 1500\nroom log: 1500 lines, 1500 well formed\n"
    );
}

/// Two green threads of one OS thread share glibc's thread descriptor, so
/// the FILE lock (recursive, keyed by that descriptor) lets the second in
/// while the first is parked in a flush: docs/limits.md's limit. On two workers
/// the writers are on different OS threads and the lock excludes: its waiter
/// parks on the futex (`runtime::futex`) and every line arrives whole, once,
/// in order. Blocking that worker in the kernel instead deadlocked (measured):
/// the reader that would drain the pipe runs there too.
#[test]
fn two_writers_sharing_one_file_on_a_slow_pipe() {
    let program = c_program("stdio_shared_file");
    let native = run(Command::new(&program));
    assert_eq!(
        native.stdout,
        "bytes: 400000 of 400000\nwhole lines: 2000 + 2000 of 2000 each\n\
         malformed: 0, duplicated: 0, missing: 0, out of order: 0\n"
    );
    let green = |workers: &str| {
        let mut c = Command::new(&program);
        c.env("LD_PRELOAD", preload_lib())
            .env("PATCHALL_GREEN_THREADS", "1")
            .env("PATCHALL_WORKERS", workers);
        run(c)
    };
    assert_eq!(green("2"), native);
    // One worker: it ends (nothing hangs), and every byte the writers gave
    // reached the pipe at least once.
    let one = green("1");
    assert!(one.status.success(), "{one:?}");
    let bytes: usize = one.stdout["bytes: ".len()..]
        .split(' ')
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    assert!(bytes >= 400_000, "{}", one.stdout);
    // With a thread descriptor per green thread the FILE lock tells the two
    // writers apart, and the second one's wait for it parks: as natively.
    let mut c = Command::new(&program);
    c.env("LD_PRELOAD", preload_lib())
        .env("PATCHALL_GREEN_THREADS", "1")
        .env("PATCHALL_GREEN_TLS", "own")
        .env("PATCHALL_WORKERS", "1");
    assert_eq!(run(c), native);
}
