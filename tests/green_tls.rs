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
    // Unasked (and PATCHALL_GREEN_TLS unset), a coroutine shares too.
    if std::env::var_os("PATCHALL_GREEN_TLS").is_none() {
        COUNT.with(|c| c.set(11));
        let h = patchall::spawn(|| COUNT.with(Cell::get)).unwrap();
        assert_eq!(h.join().unwrap(), 11);
    }
}

mod common;
use common::{c_program, first_difference, preload_lib, run};
use std::process::Command;

/// `prog` under the preload library with green threads on `workers` OS
/// threads and `PATCHALL_GREEN_TLS=tls` (unset if empty: the default).
fn green(prog: &std::path::Path, workers: &str, tls: &str) -> Command {
    let mut c = Command::new(prog);
    c.env("LD_PRELOAD", preload_lib())
        .env("PATCHALL_GREEN_THREADS", "1")
        .env("PATCHALL_WORKERS", workers)
        .env_remove("PATCHALL_GREEN_TLS");
    if !tls.is_empty() {
        c.env("PATCHALL_GREEN_TLS", tls);
    }
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
    // `own`, and the default (unset), which is own for green threads.
    for (workers, tls) in [("1", "own"), ("2", "own"), ("1", ""), ("2", "")] {
        let own = run(green(&prog, workers, tls));
        assert_eq!(
            native,
            own,
            "TLS {tls:?} on {workers} worker(s){}",
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
    assert!(
        native
            .stdout
            .contains("main: setuid 0, spinner still running 1")
    );
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

/// An HTTP server on 127.0.0.1 answering each of `count` requests after
/// 200 ms with a body naming its path, a thread per connection; returns the
/// port, the most requests it held at once, and the thread to join.
fn slow_http_server(
    count: usize,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = most.clone();
    let server = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..count {
            let (mut conn, _) = listener.accept().unwrap();
            let (now, most) = (now.clone(), most.clone());
            conns.push(std::thread::spawn(move || {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                    .unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                let path = String::from_utf8_lossy(&request)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("?")
                    .to_owned();
                let body = format!("you asked for {path}");
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                now.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        conns.into_iter().for_each(|c| c.join().unwrap());
    });
    (port, seen, server)
}

/// reqwest's blocking client waits for its worker thread on a per-thread
/// parker (a futex): with TLS of their own, ten coroutines each have theirs,
/// and their requests overlap once futex waits park the coroutine.
#[test]
fn ten_reqwest_blocking_gets_in_coroutines_overlap() {
    if !patchall::own_tls_available() {
        eprintln!("skipped: no own TLS here");
        return;
    }
    let (port, most, server) = slow_http_server(10);
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..10)
        .map(|i| {
            own()
                .spawn(move || {
                    let url = format!("http://127.0.0.1:{port}/page/{i}");
                    reqwest::blocking::get(url).and_then(|r| r.text())
                })
                .unwrap()
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let body = h.join().unwrap().expect("the request succeeds");
        assert_eq!(body, format!("you asked for /page/{i}"));
    }
    let took = start.elapsed();
    server.join().unwrap();
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("10 gets took {took:?}, at most {most} at once");
    assert!(most >= 5, "requests overlapped: at most {most} at once");
}

/// A Rust example program, built like the library.
fn example(name: &str) -> std::path::PathBuf {
    common::cargo_build(&["--example", name])
        .join("examples")
        .join(name)
}

/// With own TLS, std's threads are green threads (no longer kept native): the
/// std_threads example's threads see their own names and ids, as natively.
#[test]
fn rust_std_threads_run_green_with_own_tls() {
    if !patchall::own_tls_available() {
        eprintln!("skipped: no own TLS here");
        return;
    }
    let prog = example("std_threads");
    let native = run(Command::new(&prog));
    assert!(native.status.success(), "{native:?}");
    for workers in ["1", "2"] {
        let own = run(green(&prog, workers, "own"));
        assert_eq!(native, own, "own TLS on {workers} worker(s)");
    }
}

/// std threads with `thread_local!` state and channels: a channel's receiver
/// waits on its thread's parker, a futex.
#[test]
fn rust_std_threads_with_thread_locals_and_channels_run_green() {
    let prog = example("std_threads_tls");
    let native = run(Command::new(&prog));
    assert!(native.status.success(), "{native:?}");
    assert!(native.stdout.contains("consumer counted 4000"));
    for workers in ["1", "2"] {
        let own = run(green(&prog, workers, "own"));
        assert_eq!(native, own, "own TLS on {workers} worker(s)");
    }
}
