//! `JoinHandle::kill`: the target's blocking calls fail with ECANCELED, its
//! `patchall::sleep` returns early, and `join` reports `Killed`.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use patchall::Killed;

#[test]
fn kill_interrupts_a_sleep() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let start = Instant::now();
    let sleeper = patchall::spawn(move || {
        patchall::sleep(Duration::from_secs(3600));
        l.lock().unwrap().push("woke early");
    })
    .unwrap();
    let other = patchall::spawn(|| patchall::sleep(Duration::from_millis(20))).unwrap();
    patchall::yield_now();
    sleeper.kill();
    assert!(sleeper.join().unwrap_err().is::<Killed>());
    assert!(start.elapsed() < Duration::from_secs(10));
    // The body went on after its sleep (kill is cooperative), and others are
    // untouched.
    assert_eq!(*log.lock().unwrap(), ["woke early"]);
    other.join().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(20));
}

#[test]
fn kill_makes_a_blocked_read_fail_with_ecanceled() {
    let (mut client, _server) = common::tcp_pair();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    let reader = patchall::spawn(move || {
        let mut buf = [0u8; 8];
        // The parked read, then the next blocking call: both fail.
        for _ in 0..2 {
            let err = client.read(&mut buf).unwrap_err();
            e.lock().unwrap().push(err.raw_os_error());
        }
    })
    .unwrap();
    patchall::yield_now(); // parked in recv
    assert!(!reader.is_finished());
    reader.kill();
    assert!(reader.join().unwrap_err().is::<Killed>());
    assert_eq!(
        *errors.lock().unwrap(),
        [Some(libc::ECANCELED), Some(libc::ECANCELED)]
    );
}

#[test]
fn kill_from_another_thread() {
    let (handle_tx, handle_rx) = mpsc::channel();
    let (err_tx, err_rx) = mpsc::channel();
    let (started_tx, started_rx) = mpsc::channel();
    let home = std::thread::spawn(move || {
        let (mut client, _server) = common::tcp_pair();
        let h = patchall::spawn(move || {
            started_tx.send(()).unwrap();
            let mut buf = [0u8; 8];
            let err = client.read(&mut buf).unwrap_err();
            err_tx.send(err.raw_os_error()).unwrap();
        })
        .unwrap();
        handle_tx.send(h).unwrap();
        patchall::run(); // drive the coroutine until it ends
    });
    let h = handle_rx.recv().unwrap();
    started_rx.recv().unwrap();
    // Most likely parked in recv by now; if not, its recv fails at once.
    std::thread::sleep(Duration::from_millis(20));
    h.kill();
    assert!(h.join().unwrap_err().is::<Killed>());
    assert_eq!(err_rx.recv().unwrap(), Some(libc::ECANCELED));
    home.join().unwrap();
}

#[test]
fn killed_before_it_starts_it_never_runs() {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let h = patchall::spawn(move || r.store(true, SeqCst)).unwrap();
    h.kill();
    assert!(h.join().unwrap_err().is::<Killed>());
    assert!(!ran.load(SeqCst));
}

#[test]
fn killed_then_detached_before_it_starts_it_never_runs() {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let h = patchall::spawn(move || r.store(true, SeqCst)).unwrap();
    h.kill();
    drop(h);
    patchall::run();
    assert!(!ran.load(SeqCst));
}

#[test]
fn kill_after_the_end_changes_nothing() {
    let h = patchall::spawn(|| 5).unwrap();
    patchall::yield_now();
    assert!(h.is_finished());
    h.kill();
    assert_eq!(h.join().unwrap(), 5);
}

#[test]
fn a_killed_coroutine_finishing_on_its_own_still_reports_killed() {
    // kill only interrupts waits: a body that never waits again runs to its
    // end, and join still reports the kill, as documented.
    let h = patchall::spawn(|| {
        patchall::yield_now();
        "finished"
    })
    .unwrap();
    patchall::yield_now(); // it is runnable again, not parked
    h.kill();
    assert!(h.join().unwrap_err().is::<Killed>());
}

/// A finished task's allocation serves a later spawn on the same thread: the
/// new coroutine must inherit nothing of the old one (its kill, its name, its
/// `timeout` deadline), whichever allocation it gets.
#[test]
fn coroutines_after_killed_named_and_timed_out_ones_start_afresh() {
    for round in 0..200 {
        let killed = patchall::spawn(|| patchall::sleep(Duration::from_secs(3600))).unwrap();
        patchall::yield_now();
        killed.kill();
        assert!(killed.join().unwrap_err().is::<Killed>());
        let named = patchall::Builder::new()
            .name("old")
            .spawn(|| patchall::current().map(|c| c.name().map(String::from)))
            .unwrap();
        assert_eq!(named.join().unwrap(), Some(Some("old".to_string())));
        let timed_out = patchall::spawn(|| {
            patchall::timeout(Duration::from_millis(1), || {
                patchall::sleep(Duration::from_secs(3600))
            })
        })
        .unwrap();
        assert!(timed_out.join().unwrap().is_err());

        // Sleeps its whole time (not cancelled, no deadline) and has no name.
        let fresh = patchall::spawn(|| {
            let start = Instant::now();
            patchall::sleep(Duration::from_millis(2));
            let me = patchall::current().unwrap();
            (start.elapsed(), me.name().map(String::from), me.id())
        })
        .unwrap();
        let id = fresh.coroutine().id();
        let (slept, name, seen_id) = fresh.join().unwrap();
        assert!(
            slept >= Duration::from_millis(2),
            "round {round}: {slept:?}"
        );
        assert_eq!((name, seen_id), (None, id), "round {round}");
    }
}
