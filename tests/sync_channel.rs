//! Channels between coroutines, threads and plain threads: every value arrives
//! exactly once, waiters are served in order, disconnection, kill and timeout.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchall::sync::{RecvError, SendError, TryRecvError, bounded, unbounded};

const MESSAGES: u64 = 100_000;

/// One producer and one consumer coroutine on this thread, through a channel of
/// capacity `cap`: each side must wake the other 100,000 times.
fn ping_through(cap: usize) {
    let (tx, rx) = bounded(cap);
    let producer = patchall::spawn(move || {
        for i in 1..=MESSAGES {
            tx.send(i).unwrap();
        }
    })
    .unwrap();
    let consumer = patchall::spawn(move || {
        let (mut sum, mut count) = (0u64, 0u64);
        while let Ok(v) = rx.recv() {
            sum += v;
            count += 1;
        }
        (sum, count)
    })
    .unwrap();
    producer.join().unwrap();
    assert_eq!(
        consumer.join().unwrap(),
        (MESSAGES * (MESSAGES + 1) / 2, MESSAGES)
    );
}

#[test]
fn no_lost_wakeup_through_bounded_one() {
    ping_through(1);
}

#[test]
fn no_lost_wakeup_through_rendezvous() {
    ping_through(0);
}

#[test]
fn four_threads_of_coroutines_share_one_channel() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 4;
    const EACH: u64 = 2_500;
    let (tx, rx) = bounded::<u64>(4);
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..PER_THREAD)
                    .map(|c| {
                        let tx = tx.clone();
                        patchall::spawn(move || {
                            let base = (t * PER_THREAD + c) * EACH;
                            for i in 1..=EACH {
                                tx.send(base + i).unwrap();
                            }
                        })
                        .unwrap()
                    })
                    .collect();
                patchall::join_all(hs).into_iter().for_each(|r| r.unwrap());
            })
        })
        .collect();
    drop(tx);
    // Two threads of consumer coroutines, and this plain thread, all receive.
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..3)
                    .map(|_| {
                        let rx = rx.clone();
                        patchall::spawn(move || rx.iter().map(|v| (v, 1u64)).fold((0, 0), add))
                            .unwrap()
                    })
                    .collect();
                patchall::join_all(hs)
                    .into_iter()
                    .map(Result::unwrap)
                    .fold((0, 0), add)
            })
        })
        .collect();
    let mine = rx.iter().map(|v| (v, 1u64)).fold((0, 0), add);
    for p in producers {
        p.join().unwrap();
    }
    let total = consumers
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold(mine, add);
    let n = THREADS * PER_THREAD * EACH;
    assert_eq!(total, (n * (n + 1) / 2, n));
}

fn add(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0 + b.0, a.1 + b.1)
}

#[test]
fn a_plain_thread_with_nothing_to_run_is_woken_from_another_thread() {
    let (tx, rx) = bounded(0);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        tx.send("late").unwrap();
    });
    assert_eq!(rx.recv(), Ok("late"));
    sender.join().unwrap();
    // And the other way: a plain sender blocked on a full channel.
    let (tx, rx) = bounded(1);
    tx.send(1).unwrap();
    let receiver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        (rx.recv().unwrap(), rx.recv().unwrap())
    });
    tx.send(2).unwrap();
    assert_eq!(receiver.join().unwrap(), (1, 2));
}

#[test]
fn receivers_are_served_in_arrival_order() {
    let (tx, rx) = unbounded();
    let order = Arc::new(Mutex::new(Vec::new()));
    let hs: Vec<_> = (0..3)
        .map(|i| {
            let (rx, order) = (rx.clone(), order.clone());
            patchall::spawn(move || {
                let v = rx.recv().unwrap();
                order.lock().unwrap().push((i, v));
            })
            .unwrap()
        })
        .collect();
    patchall::yield_now(); // all three wait, in order 0, 1, 2
    for v in ["a", "b", "c"] {
        tx.send(v).unwrap();
    }
    patchall::join_all(hs);
    assert_eq!(*order.lock().unwrap(), [(0, "a"), (1, "b"), (2, "c")]);
}

#[test]
fn blocked_senders_are_served_in_arrival_order() {
    let (tx, rx) = bounded(1);
    tx.send(0).unwrap();
    let hs: Vec<_> = (1..=3)
        .map(|i| {
            let tx = tx.clone();
            patchall::spawn(move || tx.send(i).unwrap()).unwrap()
        })
        .collect();
    patchall::yield_now(); // all three are blocked on the full channel
    assert_eq!(tx.len(), 1);
    let got: Vec<i32> = (0..4).map(|_| rx.recv().unwrap()).collect();
    assert_eq!(got, [0, 1, 2, 3]);
    patchall::join_all(hs);
}

#[test]
fn disconnection_as_std() {
    let (tx, rx) = bounded::<i32>(2);
    tx.send(1).unwrap();
    drop(tx);
    // Buffered values are still delivered, then Disconnected.
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

    // A receiver parked on an empty channel wakes when the last sender goes.
    let (tx, rx) = bounded::<i32>(0);
    let waiter = patchall::spawn(move || rx.recv()).unwrap();
    patchall::yield_now();
    let tx2 = tx.clone();
    drop(tx);
    patchall::yield_now();
    assert!(!waiter.is_finished()); // one sender is left
    drop(tx2);
    assert_eq!(waiter.join().unwrap(), Err(RecvError::Disconnected));

    // A sender parked on a full channel gets its value back when receivers go.
    let (tx, rx) = bounded(0);
    let waiter = patchall::spawn(move || tx.send(String::from("kept"))).unwrap();
    patchall::yield_now();
    drop(rx);
    match waiter.join().unwrap() {
        Err(SendError::Disconnected(s)) => assert_eq!(s, "kept"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

#[test]
fn recv_timeout_times_out_and_others_run_meanwhile() {
    let (tx, rx) = bounded::<u8>(1);
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let ticker = patchall::spawn(move || {
        for _ in 0..5 {
            t.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(2));
        }
    })
    .unwrap();
    let start = Instant::now();
    let r = patchall::spawn(move || rx.recv_timeout(Duration::from_millis(40)))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(r, Err(RecvError::Timeout));
    assert!(start.elapsed() >= Duration::from_millis(40));
    ticker.join().unwrap();
    assert_eq!(ticks.load(SeqCst), 5);
    drop(tx);
}

#[test]
fn kill_ends_a_parked_recv_and_send() {
    let (tx_a, rx_a) = bounded::<u8>(0);
    let (tx_b, rx_b) = bounded::<u8>(0);
    let (rx_a2, tx_b2) = (rx_a.clone(), tx_b.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let receiver = patchall::spawn(move || {
        let r = format!("{:?}", rx_a2.recv());
        s.lock().unwrap().push(r);
    })
    .unwrap();
    let s = seen.clone();
    let sender = patchall::spawn(move || {
        let r = format!("{:?}", tx_b2.send(1));
        s.lock().unwrap().push(r);
    })
    .unwrap();
    patchall::yield_now(); // both park: nobody sends on A, nobody receives on B
    assert!(!receiver.is_finished() && !sender.is_finished());
    receiver.kill();
    sender.kill();
    assert!(receiver.join().unwrap_err().is::<patchall::Killed>());
    assert!(sender.join().unwrap_err().is::<patchall::Killed>());
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["Err(Killed(..))", "Err(Killed)"]);
    // The killed waiters left their queues: a fresh pair meets on each channel
    // (a stale sender would hand over 1, a stale receiver would swallow the 7).
    let r = patchall::spawn(move || rx_a.recv()).unwrap();
    tx_a.send(7).unwrap();
    assert_eq!(r.join().unwrap(), Ok(7));
    let s = patchall::spawn(move || tx_b.send(8)).unwrap();
    assert_eq!(rx_b.recv(), Ok(8));
    s.join().unwrap().unwrap();
}

#[test]
fn a_timeout_ends_a_parked_recv() {
    let (_tx, rx) = bounded::<u8>(1);
    let r = patchall::timeout(Duration::from_millis(20), || rx.recv());
    assert_eq!(r, Err(patchall::Elapsed));
    let inner = patchall::spawn(move || {
        let mut seen = None;
        let r = patchall::timeout(Duration::from_millis(20), || seen = Some(rx.recv()));
        (r, seen)
    })
    .unwrap();
    assert_eq!(
        inner.join().unwrap(),
        (Err(patchall::Elapsed), Some(Err(RecvError::Timeout)))
    );
}

#[test]
fn a_killed_coroutine_still_gets_what_needs_no_wait() {
    let (tx, rx) = unbounded();
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let h = patchall::spawn(move || {
        patchall::sleep(Duration::from_secs(3600)); // the kill lands here
        let results = [rx.recv(), rx.recv(), rx.recv()];
        g.lock().unwrap().extend(results);
    })
    .unwrap();
    patchall::yield_now();
    h.kill();
    assert!(h.join().unwrap_err().is::<patchall::Killed>());
    assert_eq!(*got.lock().unwrap(), [Ok(1), Ok(2), Err(RecvError::Killed)]);
    drop(tx);
}

#[test]
fn a_plain_thread_ping_pongs_with_another_thread_without_losing_a_wake() {
    // Each message wakes a plain thread from another thread: a wake landing
    // between its last check and its epoll_wait must not be lost.
    const ROUNDS: u32 = 20_000;
    let (ping_tx, ping_rx) = bounded::<u32>(0);
    let (pong_tx, pong_rx) = bounded::<u32>(0);
    let echo = std::thread::spawn(move || {
        for v in &ping_rx {
            pong_tx.send(v + 1).unwrap();
        }
    });
    for i in 0..ROUNDS {
        ping_tx.send(i).unwrap();
        assert_eq!(pong_rx.recv(), Ok(i + 1));
    }
    drop(ping_tx);
    echo.join().unwrap();
}
