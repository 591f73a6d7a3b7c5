//! Time slices (contract 12): a coroutine whose hooked calls keep completing
//! at once yields once its slice is over, so the others (and their timers) run.
//! Both faces: a C program spinning on accept -> EMFILE as a green thread, and
//! Rust coroutines looping on poll, epoll_wait and write.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{Outcome, assert_passed, c_program, ignored_test, preload_lib, root, run};

const PATCHALL: &str = env!("CARGO_BIN_EXE_patchall");

/// How long a spinning loop may go on before the test calls it starved.
const SPIN_LIMIT: Duration = Duration::from_secs(20);

/// `patchall run --green-threads -- program` on `workers` OS threads.
fn green(program: &Path, workers: usize) -> Command {
    // The launcher finds the library next to itself: build it there.
    assert_eq!(preload_lib().parent(), Path::new(PATCHALL).parent());
    let mut c = Command::new(PATCHALL);
    c.args(["run", "--green-threads", "--"])
        .arg(program)
        .env("PATCHALL_WORKERS", workers.to_string());
    c
}

/// The C program, compiled once: tests of this file run in parallel, and one
/// must not run it while another rewrites it.
fn accept_emfile() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| c_program("fair_accept_emfile"))
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/c").join(format!("{name}.expected")))
        .expect("the .expected file")
}

fn assert_reads(out: &Outcome, want: &str, what: &str) {
    assert!(out.status.success(), "{what}: {out:?}");
    assert_eq!(out.stdout, want, "{what}: stderr {}", out.stderr);
}

#[test]
fn a_thread_spinning_on_accept_emfile_lets_the_others_run() {
    let program = accept_emfile();
    let want = expected("fair_accept_emfile");
    assert_reads(&run(Command::new(program)), &want, "native");
    // On one worker the client and the spinning server share the OS thread:
    // before time slices the client's usleep never ended (the program hung
    // until its alarm).
    for workers in [1, 2] {
        let out = run(green(program, workers));
        assert_reads(&out, &want, &format!("green, {workers} workers"));
        assert_eq!(out.stderr, "", "green, {workers} workers");
    }
}

#[test]
fn a_bad_timeslice_warns_once_and_the_default_applies() {
    let program = accept_emfile();
    let want = expected("fair_accept_emfile");
    for bad in ["fast", "10us", "5 minutes"] {
        let mut cmd = green(program, 1);
        cmd.env("PATCHALL_TIMESLICE", bad);
        let out = run(cmd);
        // The default slice is in force: the spinning server still yields.
        assert_reads(&out, &want, bad);
        let warning = format!(
            "patchall: ignoring bad value PATCHALL_TIMESLICE=\"{bad}\"; using the default\n"
        );
        assert_eq!(out.stderr, warning, "{bad}");
    }
}

/// One call that completes at once, made by `spin` in a loop.
type Call = fn(&Fixture);

/// What the spinning calls use: an always-readable socket, an epoll instance
/// with it registered, /dev/null.
struct Fixture {
    readable: UnixStream,
    _peer: UnixStream,
    epoll: i32,
    null: File,
}

impl Fixture {
    fn new() -> Fixture {
        let (readable, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"x").unwrap();
        // SAFETY: plain system calls on our own fds.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: as above; `ev` is a valid event.
        let r =
            unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, readable.as_raw_fd(), &mut ev) };
        assert_eq!(r, 0);
        Fixture {
            readable,
            _peer: peer,
            epoll,
            null: File::options().write(true).open("/dev/null").unwrap(),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: our own epoll fd.
        unsafe { libc::close(self.epoll) };
    }
}

fn poll_ready(f: &Fixture) {
    let mut p = libc::pollfd {
        fd: f.readable.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut p, 1, -1) }, 1);
}

fn epoll_ready(f: &Fixture) {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: room for one event.
    assert_eq!(unsafe { libc::epoll_wait(f.epoll, &mut ev, 1, -1) }, 1);
}

fn write_null(f: &Fixture) {
    (&f.null).write_all(b"spin").unwrap();
}

/// Runs a coroutine making `call` in a loop next to one that sleeps 20 ms and
/// then tells the loop to stop. Returns (whether the sleeper woke while the
/// loop ran, the loop's calls).
fn spin(call: Call, limit: Duration) -> (bool, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, c) = (stop.clone(), calls.clone());
    let spinner = patchall::spawn(move || {
        let f = Fixture::new();
        let start = Instant::now();
        while !s.load(SeqCst) && start.elapsed() < limit {
            call(&f);
            c.fetch_add(1, SeqCst);
        }
        s.load(SeqCst)
    })
    .unwrap();
    let s = stop.clone();
    let sleeper = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(20));
        s.store(true, SeqCst);
    })
    .unwrap();
    let woke = spinner.join().unwrap();
    sleeper.join().unwrap();
    (woke, calls.load(SeqCst))
}

#[test]
fn loops_of_calls_that_complete_at_once_let_a_timer_fire() {
    for (what, call) in [
        ("poll", poll_ready as Call),
        ("epoll_wait", epoll_ready),
        ("write to /dev/null", write_null),
    ] {
        let (woke, calls) = spin(call, SPIN_LIMIT);
        assert!(woke, "{what}: the sleeper never ran in {SPIN_LIMIT:?}");
        assert!(calls > 0, "{what}: the loop never ran");
    }
}

#[test]
fn timeslice_off_in_a_process_of_its_own() {
    let name = "timeslice_off_scenario";
    let mut cmd = ignored_test(name);
    cmd.env("PATCHALL_TIMESLICE", "off");
    assert_passed(name, &run(cmd));
}

#[test]
#[ignore = "run by timeslice_off_in_a_process_of_its_own"]
fn timeslice_off_scenario() {
    assert_eq!(patchall::config().timeslice, None);
    // Nothing asks the loop to yield: the sleeper first runs when it ends.
    let (woke, _) = spin(poll_ready, Duration::from_millis(200));
    assert!(!woke, "the sleeper ran while the loop held the thread");
}

#[test]
fn a_short_timeslice_in_a_process_of_its_own() {
    let name = "short_timeslice_scenario";
    let mut cmd = ignored_test(name);
    cmd.env("PATCHALL_TIMESLICE", "1ms");
    assert_passed(name, &run(cmd));
}

#[test]
#[ignore = "run by a_short_timeslice_in_a_process_of_its_own"]
fn short_timeslice_scenario() {
    assert_eq!(patchall::config().timeslice, Some(Duration::from_millis(1)));
    let (woke, _) = spin(poll_ready, SPIN_LIMIT);
    assert!(woke, "the sleeper never ran in {SPIN_LIMIT:?}");
}

#[test]
fn printing_coroutines_in_a_process_of_their_own() {
    let name = "printing_coroutines_scenario";
    let mut cmd = ignored_test(name);
    cmd.env("PATCHALL_TIMESLICE", "1ms");
    let out = run(cmd);
    assert_passed(name, &out);
    assert_eq!(out.stdout.matches("printed by").count(), 20, "{out:?}");
}

#[test]
#[ignore = "run by printing_coroutines_in_a_process_of_their_own"]
fn printing_coroutines_scenario() {
    // Each computes for longer than a slice, then prints to the real stdout
    // (--nocapture): its write is the first hooked call after the request to
    // yield. A yield inside `println!` would let the other coroutine into
    // stdout's RefCell: "already borrowed".
    let handles: Vec<_> = (0..2)
        .map(|i| {
            patchall::spawn(move || {
                for round in 0..10 {
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_millis(3) {
                        std::hint::spin_loop();
                    }
                    println!("printed by {i} in round {round}");
                }
            })
            .unwrap()
        })
        .collect();
    for h in patchall::join_all(handles) {
        h.unwrap();
    }
}
