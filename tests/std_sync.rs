//! Rust's `std::sync` inside coroutines: its futex waits reach the
//! `syscall()` hook and park the coroutine (`runtime::futex`), so a lock or a
//! channel whose other side is a coroutine of the same OS thread works.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Runs `body` on a thread of its own and fails if it has not returned within
/// 60 s: a futex wait that blocked the OS thread would deadlock these tests.
fn bounded(body: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        body();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the coroutines deadlocked (or the body panicked)");
}

/// Coroutines of one OS thread share std's thread parker (one futex word per
/// OS thread): the second to park finds the word already "parked" and spins
/// through EAGAIN, and the unpark wakes nobody in the lot; the re-check of
/// the first and the second's spin still end both waits. (This worked when the
/// wait blocked the OS thread; it must still.)
#[test]
fn two_coroutines_of_one_thread_receive_from_std_channels_fed_by_native_threads() {
    bounded(|| {
        let (tx1, rx1) = mpsc::channel::<u32>();
        let (tx2, rx2) = mpsc::channel::<u32>();
        let a = patchall::spawn(move || rx1.recv().unwrap()).unwrap();
        let b = patchall::spawn(move || rx2.recv().unwrap()).unwrap();
        let feeder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx2.send(2).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            tx1.send(1).unwrap();
        });
        assert_eq!(b.join().unwrap(), 2);
        assert_eq!(a.join().unwrap(), 1);
        feeder.join().unwrap();
    });
}

#[test]
fn a_std_mutex_held_across_a_park_lets_the_other_coroutines_of_its_thread_run() {
    bounded(|| {
        let m = Arc::new(Mutex::new(0));
        let m2 = m.clone();
        let holder = patchall::spawn(move || {
            let mut g = m2.lock().unwrap();
            patchall::sleep(Duration::from_millis(50));
            *g += 1;
        })
        .unwrap();
        let m3 = m.clone();
        let waiter = patchall::spawn(move || *m3.lock().unwrap() + 10).unwrap();
        let ticker = patchall::spawn(|| {
            for _ in 0..5 {
                patchall::sleep(Duration::from_millis(1));
            }
            "ticked"
        })
        .unwrap();
        assert_eq!(ticker.join().unwrap(), "ticked");
        holder.join().unwrap();
        assert_eq!(waiter.join().unwrap(), 11);
    });
}

#[test]
fn a_std_condvar_between_coroutines_of_one_thread() {
    bounded(|| {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p = pair.clone();
        let waiter = patchall::spawn(move || {
            let (m, c) = &*p;
            let mut ready = m.lock().unwrap();
            while !*ready {
                ready = c.wait(ready).unwrap();
            }
            "woken"
        })
        .unwrap();
        let p = pair.clone();
        let notifier = patchall::spawn(move || {
            patchall::sleep(Duration::from_millis(20));
            *p.0.lock().unwrap() = true;
            p.1.notify_one();
        })
        .unwrap();
        notifier.join().unwrap();
        assert_eq!(waiter.join().unwrap(), "woken");
    });
}
