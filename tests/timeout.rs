//! `patchall::timeout`: blocking calls inside the body fail with TimedOut at the
//! deadline, nested deadlines, the deadline restored afterwards.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use patchall::{Elapsed, timeout};

/// A connected pair whose server side never writes unless asked.
fn quiet_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

fn ticker(ticks: &Arc<AtomicUsize>) -> patchall::JoinHandle<()> {
    let t = ticks.clone();
    patchall::spawn(move || {
        for _ in 0..5 {
            t.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(2));
        }
    })
    .unwrap()
}

#[test]
fn a_blocked_read_in_a_coroutine_fails_with_timed_out() {
    let (mut client, mut server) = quiet_pair();
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = ticker(&ticks);
    let reader = patchall::spawn(move || {
        let start = Instant::now();
        let mut buf = [0u8; 8];
        let mut read = None;
        let r = timeout(Duration::from_millis(50), || {
            read = Some(client.read(&mut buf).map_err(|e| e.kind()));
        });
        let waited = start.elapsed();
        // The deadline is gone with the body: the same stream reads normally.
        let n = client.read(&mut buf).unwrap();
        (r, read, waited, buf[..n].to_vec())
    })
    .unwrap();
    // Let the reader's timeout expire, then give it something to read.
    patchall::sleep(Duration::from_millis(100));
    server.write_all(b"later").unwrap();
    let (r, read, waited, rest) = reader.join().unwrap();
    assert_eq!(r, Err(Elapsed));
    assert_eq!(read, Some(Err(io::ErrorKind::TimedOut)));
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(rest, b"later");
    ticker.join().unwrap();
    assert_eq!(ticks.load(SeqCst), 5); // others ran while the read was parked
}

#[test]
fn on_a_plain_thread_the_body_becomes_interruptible() {
    let (mut client, _server) = quiet_pair();
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = ticker(&ticks);
    let start = Instant::now();
    let r = timeout(Duration::from_millis(50), || {
        let mut buf = [0u8; 8];
        client.read(&mut buf)
    });
    assert_eq!(r.unwrap_err(), Elapsed);
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(start.elapsed() < Duration::from_secs(10));
    // This thread's coroutines ran meanwhile.
    assert_eq!(ticks.load(SeqCst), 5);
    ticker.join().unwrap();
    // A body that finishes in time gives its value.
    assert_eq!(timeout(Duration::from_secs(5), || 7), Ok(7));
    assert_eq!(timeout(Duration::MAX, || 8), Ok(8));
}

#[test]
fn nested_timeouts_the_nearest_deadline_wins() {
    let (mut client, _server) = quiet_pair();
    let h = patchall::spawn(move || {
        let start = Instant::now();
        let mut inner = None;
        let outer = timeout(Duration::from_millis(40), || {
            inner = Some(timeout(Duration::from_secs(60), || {
                let mut buf = [0u8; 8];
                client.read(&mut buf).map_err(|e| e.kind())
            }));
        });
        (outer, inner, start.elapsed())
    })
    .unwrap();
    let (outer, inner, took) = h.join().unwrap();
    // The outer deadline cut the read; the inner timeout's own deadline had
    // not passed, so it returns the body's result; the outer reports Elapsed.
    assert_eq!(outer, Err(Elapsed));
    assert_eq!(inner, Some(Ok(Err(io::ErrorKind::TimedOut))));
    assert!(took < Duration::from_secs(10), "{took:?}");

    // The inner deadline is nearer: it expires; the outer one is restored and
    // lets the rest of its body sleep in full.
    let h = patchall::spawn(|| {
        timeout(Duration::from_secs(60), || {
            let inner = timeout(Duration::from_millis(10), || {
                patchall::sleep(Duration::from_secs(60))
            });
            let start = Instant::now();
            patchall::sleep(Duration::from_millis(30));
            (inner, start.elapsed())
        })
    })
    .unwrap();
    let (inner, slept) = h.join().unwrap().unwrap();
    assert_eq!(inner, Err(Elapsed));
    assert!(slept >= Duration::from_millis(30), "{slept:?}");
}

#[test]
fn sleep_inside_a_body_returns_at_the_deadline() {
    let h = patchall::spawn(|| {
        let start = Instant::now();
        let r = timeout(Duration::from_millis(20), || {
            patchall::sleep(Duration::from_secs(3600));
            "returned"
        });
        (r, start.elapsed())
    })
    .unwrap();
    let (r, took) = h.join().unwrap();
    assert_eq!(r, Err(Elapsed));
    assert!(took >= Duration::from_millis(20) && took < Duration::from_secs(10));
}

#[test]
fn a_panicking_body_restores_the_deadline_and_propagates() {
    let h = patchall::spawn(|| {
        let caught =
            std::panic::catch_unwind(|| timeout(Duration::from_millis(5), || panic!("body fails")));
        // No deadline is left behind: this sleep runs in full.
        let start = Instant::now();
        patchall::sleep(Duration::from_millis(20));
        (caught.is_err(), start.elapsed())
    })
    .unwrap();
    let (panicked, slept) = h.join().unwrap();
    assert!(panicked);
    assert!(slept >= Duration::from_millis(20));
    // On a plain thread the panic comes back to the caller too.
    let caught = std::panic::catch_unwind(|| timeout(Duration::from_secs(1), || panic!("plain")));
    assert_eq!(
        caught.unwrap_err().downcast_ref::<&str>().copied(),
        Some("plain")
    );
}

#[test]
fn elapsed_is_an_io_timed_out_error() {
    fn body() -> io::Result<()> {
        timeout(Duration::ZERO, || patchall::sleep(Duration::from_secs(1)))?;
        Ok(())
    }
    assert_eq!(body().unwrap_err().kind(), io::ErrorKind::TimedOut);
}
