//! `patchall::run_info()`: every live coroutine with its state and what it
//! waits for, read from the value and from its text (the dump's format).

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use patchall::sync::unbounded;
use patchall::{Builder, CoroutineState, WaitsOn};

/// The dump line of the coroutine named `name`.
fn line_of<'a>(text: &'a str, name: &str) -> &'a str {
    let quoted = format!(" \"{name}\":");
    text.lines()
        .find(|l| l.contains(&quoted))
        .unwrap_or_else(|| panic!("no line for {name:?} in:\n{text}"))
}

/// The seconds after " for " in a dump line.
fn waited(line: &str) -> f64 {
    let (_, rest) = line.rsplit_once(" for ").expect("a wait time");
    rest.trim_end_matches(" s").parse().expect("seconds")
}

#[test]
fn parked_in_sleep_a_channel_and_a_socket_are_listed_with_what_they_wait_for() {
    // Times the parks that follow.
    let _ = patchall::run_info();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let server_fd = server.as_raw_fd();
    let (tx, rx) = unbounded::<u32>();

    let napper = Builder::new()
        .name("napper")
        .spawn(|| patchall::sleep(Duration::from_secs(30)))
        .unwrap();
    let taker = Builder::new()
        .name("taker")
        .spawn(move || rx.recv().ok())
        .unwrap();
    let reader = Builder::new()
        .name("reader")
        .spawn(move || {
            let mut server = server;
            let mut buf = [0u8; 8];
            server.read(&mut buf).unwrap()
        })
        .unwrap();
    // This thread drives its scheduler while it sleeps: all three park.
    patchall::sleep(Duration::from_millis(100));

    let info = patchall::run_info();
    let text = info.to_string();
    let mine: Vec<_> = info
        .coroutines()
        .filter(|c| {
            [
                napper.coroutine().id(),
                taker.coroutine().id(),
                reader.coroutine().id(),
            ]
            .contains(&c.id)
        })
        .collect();
    assert_eq!(mine.len(), 3, "{text}");
    assert!(
        mine.iter().all(|c| c.state == CoroutineState::Parked),
        "{text}"
    );

    let nap = line_of(&text, "napper");
    assert!(nap.contains(": parked in sleep (deadline in "), "{nap}");
    let deadline: f64 = nap
        .split("deadline in ")
        .nth(1)
        .and_then(|r| r.split(" s)").next())
        .and_then(|s| s.parse().ok())
        .expect("a deadline");
    assert!((25.0..30.0).contains(&deadline), "{nap}");
    assert!(waited(nap) >= 0.09, "{nap}");

    let take = line_of(&text, "taker");
    assert!(take.contains(": parked in channel recv for "), "{take}");

    let read = line_of(&text, "reader");
    let want = format!(": parked in recv (fd {server_fd}, read) for ");
    assert!(read.contains(&want), "{read}\nwanted {want}");
    let reader_info = mine
        .iter()
        .find(|c| c.id == reader.coroutine().id())
        .unwrap();
    let wait = reader_info.waiting.as_ref().expect("parked: waiting");
    assert_eq!(wait.call, "recv");
    assert_eq!(wait.family, "net");
    assert!(matches!(wait.on, WaitsOn::Fd { fd, .. } if fd == server_fd));

    // The header counts what the body lists.
    let header = text.lines().next().unwrap();
    let listed = text
        .lines()
        .filter(|l| l.starts_with("  coroutine "))
        .count();
    assert!(
        header.ends_with(&format!(", {listed} coroutines")),
        "{text}"
    );

    drop(client);
    tx.send(7).unwrap();
    napper.kill();
    assert_eq!(taker.join().unwrap(), Some(7));
    assert_eq!(reader.join().unwrap(), 0);
    assert!(napper.join().is_err());
}

#[test]
fn the_coroutine_that_asks_is_running_and_the_others_runnable_or_parked() {
    let other = Builder::new()
        .name("spinner")
        .spawn(|| {
            for _ in 0..3 {
                patchall::yield_now();
            }
        })
        .unwrap();
    let asker = Builder::new()
        .name("asker")
        .spawn(|| {
            patchall::yield_now();
            patchall::run_info().to_string()
        })
        .unwrap();
    let text = asker.join().unwrap();
    other.join().unwrap();
    assert!(line_of(&text, "asker").ends_with(": running"), "{text}");
    assert!(line_of(&text, "spinner").ends_with(": runnable"), "{text}");
}

#[test]
fn other_workers_answer_and_list_their_coroutines() {
    let rt = patchall::Runtime::builder().workers(2).build().unwrap();
    let (tx, rx) = unbounded::<()>();
    let rx2 = rx.clone();
    let a = rt.spawn(move || rx.recv().ok()).unwrap();
    let b = rt.spawn(move || rx2.recv().ok()).unwrap();
    patchall::sleep(Duration::from_millis(50));
    let info = patchall::run_info();
    let ids = [a.coroutine().id(), b.coroutine().id()];
    let found: Vec<_> = info
        .workers
        .iter()
        .filter(|w| w.coroutines.iter().any(|c| ids.contains(&c.id)))
        .collect();
    // One on each worker (the least loaded one takes the next), each answered.
    assert_eq!(found.len(), 2, "{info}");
    assert!(found.iter().all(|w| w.answered), "{info}");
    for c in info.coroutines().filter(|c| ids.contains(&c.id)) {
        assert_eq!(
            c.waiting.as_ref().map(|w| w.call),
            Some("channel recv"),
            "{info}"
        );
    }
    tx.send(()).unwrap();
    tx.send(()).unwrap();
    assert!(a.join().unwrap().is_some() && b.join().unwrap().is_some());
}

/// `examples/run_info.rs` exits with two coroutines parked on its main
/// thread: `PATCHALL_DUMP=exit` lists them (before `exit` drops the main
/// thread's scheduler), `PATCHALL_STATS=1` counts them.
#[test]
fn at_exit_a_rust_program_lists_what_its_main_thread_left_parked() {
    let out = std::process::Command::new(
        common::cargo_build(&["--example", "run_info"]).join("examples/run_info"),
    )
    .env("PATCHALL_DUMP", "exit")
    .env("PATCHALL_STATS", "1")
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // The example's own run_info(), then the same at exit.
    for text in [&*stdout, &*stderr] {
        assert!(
            line_of(text, "producer").contains(": parked in recv (fd "),
            "{text}"
        );
        assert!(
            line_of(text, "consumer").contains(": parked in channel recv for "),
            "{text}"
        );
    }
    assert!(stderr.contains("\n  coroutines created  2\n"), "{stderr}");
    assert!(
        stderr.contains("\n  parks               2 (net 1, channel 1)\n"),
        "{stderr}"
    );
}
