//! Coroutines with TLS of their own (`Builder::own_tls`): thread-locals,
//! errno and std's thread identity are per coroutine, as in threads.

use std::cell::Cell;

thread_local! {
    static COUNT: Cell<u32> = const { Cell::new(100) };
}

fn own() -> patchall::Builder {
    patchall::Builder::new().own_tls(true)
}

#[test]
fn thread_locals_errno_and_identity_are_per_coroutine() {
    if !patchall::own_tls_available() {
        eprintln!("skipped: no own TLS here");
        return;
    }
    COUNT.with(|c| c.set(7));
    let outside = std::thread::current().id();
    let handles: Vec<_> = (0..3u32)
        .map(|i| {
            own()
                .spawn(move || {
                    let start = COUNT.with(Cell::get);
                    // SAFETY: this thread's errno.
                    unsafe { *libc::__errno_location() = 1000 + i as i32 };
                    for _ in 0..5 {
                        COUNT.with(|c| c.set(c.get() + i + 1));
                        patchall::yield_now();
                    }
                    // SAFETY: as above.
                    let errno = unsafe { *libc::__errno_location() };
                    (
                        start,
                        COUNT.with(Cell::get),
                        errno,
                        std::thread::current().id(),
                    )
                })
                .unwrap()
        })
        .collect();
    let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, &(start, end, errno, _)) in got.iter().enumerate() {
        let i = i as u32;
        assert_eq!(start, 100, "a coroutine starts with the initial value");
        assert_eq!(end, 100 + 5 * (i + 1), "only its own increments");
        assert_eq!(errno, 1000 + i as i32, "its own errno across switches");
    }
    let ids: std::collections::HashSet<_> = got.iter().map(|g| g.3).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&outside));
    assert_eq!(
        COUNT.with(Cell::get),
        7,
        "the thread's own value is untouched"
    );
}

#[test]
fn shared_coroutines_see_the_threads_locals() {
    COUNT.with(|c| c.set(9));
    let h = patchall::Builder::new()
        .own_tls(false)
        .spawn(|| COUNT.with(Cell::get))
        .unwrap();
    assert_eq!(h.join().unwrap(), 9);
}

mod common;
use common::{c_program, first_difference, preload_lib, run};
use std::process::Command;

/// `prog` under the preload library with green threads on `workers` OS
/// threads and `PATCHALL_GREEN_TLS=tls`.
fn green(prog: &std::path::Path, workers: &str, tls: &str) -> Command {
    let mut c = Command::new(prog);
    c.env("LD_PRELOAD", preload_lib())
        .env("PATCHALL_GREEN_THREADS", "1")
        .env("PATCHALL_WORKERS", workers)
        .env("PATCHALL_GREEN_TLS", tls);
    c
}

#[test]
fn c_threads_keep_their_own_tls_errno_and_identity_as_natively() {
    if !patchall::own_tls_available() {
        eprintln!("skipped: no own TLS here");
        return;
    }
    let prog = c_program("green_tls");
    let native = run(Command::new(&prog));
    assert!(native.status.success(), "{native:?}");
    assert!(
        native
            .stdout
            .contains("thread 3: start 10 zero 0 counter 30")
    );
    for workers in ["1", "2"] {
        let own = run(green(&prog, workers, "own"));
        assert_eq!(
            native,
            own,
            "own TLS on {workers} worker(s){}",
            first_difference(&native.stdout, &own.stdout)
        );
    }
    // The same program with shared TLS shows what `own` fixes.
    let shared = run(green(&prog, "1", "shared"));
    assert_ne!(native.stdout, shared.stdout);
}

#[test]
fn fork_and_setuid_from_a_green_thread_with_own_tls() {
    if !patchall::own_tls_available() {
        eprintln!("skipped: no own TLS here");
        return;
    }
    let prog = c_program("green_tls_procs");
    let native = run(Command::new(&prog));
    assert!(native.status.success(), "{native:?}");
    assert!(native.stdout.contains("child: counter 15 tid is pid 1"));
    for workers in ["1", "2"] {
        let mut cmd = green(&prog, workers, "own");
        cmd.env("PATCHALL_NATIVE_THREADS", "native_sleeper");
        let own = run(cmd);
        assert_eq!(native, own, "own TLS on {workers} worker(s)");
    }
}

#[test]
fn initial_exec_tls_of_a_library_loaded_later_is_initialised() {
    if !patchall::own_tls_available() {
        eprintln!("skipped: no own TLS here");
        return;
    }
    let prog = c_program("green_tls_dlopen");
    let lib = prog.with_file_name("libgreen_tls_ie.so");
    common::cc(
        &common::root().join("tests/c/green_tls_dlopen.c"),
        &lib,
        &["-shared", "-fPIC", "-DLIB"],
    );
    let make = |mut c: Command| {
        c.arg(&lib);
        c
    };
    let native = run(make(Command::new(&prog)));
    assert!(native.status.success(), "{native:?}");
    assert!(native.stdout.contains("thread 2: 42 43"), "{native:?}");
    for workers in ["1", "2"] {
        let own = run(make(green(&prog, workers, "own")));
        assert_eq!(native, own, "own TLS on {workers} worker(s)");
    }
}

/// Without emptying a green thread's malloc cache at its end, each thread
/// leaked about 2 KB (2114 bytes measured); natively growth is a few bytes.
#[test]
fn twenty_thousand_threads_leak_no_malloc_cache() {
    if !patchall::own_tls_available() {
        eprintln!("skipped: no own TLS here");
        return;
    }
    let prog = c_program("green_tls_churn");
    let own = run(green(&prog, "1", "own"));
    assert!(own.status.success(), "{own:?}");
    let growth: i64 = own
        .stdout
        .trim()
        .strip_prefix("growth per thread ")
        .and_then(|s| s.strip_suffix(" bytes"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {own:?}"));
    assert!(growth < 256, "{growth} bytes per thread");
}
