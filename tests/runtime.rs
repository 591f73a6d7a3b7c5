//! The coroutine runtime through the public API.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn a_value_comes_back_through_join() {
    let h = patchall::spawn(|| String::from("hello") + " world").unwrap();
    assert_eq!(h.join().unwrap(), "hello world");
}

/// As `std::thread::JoinHandle`: movable to and shareable with other threads,
/// and usable inside `catch_unwind` without `AssertUnwindSafe`.
#[test]
fn a_join_handle_is_send_sync_and_unwind_safe() {
    fn send_sync_unwind_safe<
        T: Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
    >(
        t: T,
    ) -> T {
        t
    }
    let h = send_sync_unwind_safe(patchall::spawn(|| 5).unwrap());
    let joined = std::panic::catch_unwind(|| h.join().unwrap());
    assert_eq!(joined.unwrap(), 5);
}

#[test]
fn a_panic_is_delivered_to_the_joiner() {
    let n = std::hint::black_box(7);
    let h = patchall::spawn(move || -> u32 { panic!("coroutine {n} failed") }).unwrap();
    let payload = h.join().unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("coroutine 7 failed")
    );
    // The scheduler survives the panic.
    assert_eq!(patchall::spawn(|| 1).unwrap().join().unwrap(), 1);
}

#[test]
fn ten_thousand_coroutines_spawn_and_join() {
    let handles: Vec<_> = (0..10_000u64)
        .map(|i| {
            patchall::spawn(move || {
                patchall::yield_now();
                i * 2
            })
            .unwrap()
        })
        .collect();
    let sum: u64 = patchall::join_all(handles)
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(sum, (0..10_000u64).map(|i| i * 2).sum());
}

#[test]
fn sleepers_wake_in_deadline_order() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let handles: Vec<_> = [30u64, 10, 20]
        .into_iter()
        .map(|ms| {
            let order = order.clone();
            patchall::spawn(move || {
                patchall::sleep(Duration::from_millis(ms));
                order.lock().unwrap().push(ms);
            })
            .unwrap()
        })
        .collect();
    patchall::join_all(handles);
    assert_eq!(*order.lock().unwrap(), [10, 20, 30]);
    // Overlapped: far below the 60 ms a sequential run would take... generously.
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn yield_now_interleaves_in_fifo_order() {
    let log = Arc::new(Mutex::new(String::new()));
    let handles: Vec<_> = ['a', 'b', 'c']
        .into_iter()
        .map(|c| {
            let log = log.clone();
            patchall::spawn(move || {
                for _ in 0..3 {
                    log.lock().unwrap().push(c);
                    patchall::yield_now();
                }
            })
            .unwrap()
        })
        .collect();
    patchall::join_all(handles);
    assert_eq!(*log.lock().unwrap(), "abcabcabc");
}

#[test]
fn join_from_a_plain_thread_drives_its_scheduler() {
    let out = std::thread::spawn(|| {
        assert!(!patchall::in_coroutine());
        let inner = patchall::spawn(|| {
            assert!(patchall::in_coroutine());
            let nested = patchall::spawn(|| 5).unwrap();
            nested.join().unwrap() + 1
        })
        .unwrap();
        inner.join().unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(out, 6);
}

#[test]
fn errno_belongs_to_each_coroutine() {
    fn set_errno(v: i32) {
        // SAFETY: writing this thread's errno.
        unsafe { *libc::__errno_location() = v };
    }
    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
    let handles: Vec<_> = [libc::EAGAIN, libc::EPIPE, libc::ENOENT]
        .into_iter()
        .map(|e| {
            patchall::spawn(move || {
                set_errno(e);
                for _ in 0..5 {
                    patchall::yield_now();
                    assert_eq!(errno(), e);
                }
                errno()
            })
            .unwrap()
        })
        .collect();
    set_errno(libc::EINTR);
    let got: Vec<i32> = patchall::join_all(handles)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, [libc::EAGAIN, libc::EPIPE, libc::ENOENT]);
    assert_eq!(
        errno(),
        libc::EINTR,
        "the driving thread's errno is its own"
    );
}

#[test]
fn current_names_the_running_coroutine() {
    assert!(patchall::current().is_none());
    let h = patchall::Builder::new()
        .name("fetcher")
        .spawn(|| {
            let me = patchall::current().unwrap();
            (me.id(), me.name().map(String::from))
        })
        .unwrap();
    let id = h.coroutine().id();
    assert_eq!(h.join().unwrap(), (id, Some("fetcher".to_string())));
}

#[test]
fn run_waits_for_coroutines_spawned_by_coroutines() {
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    patchall::spawn(move || {
        for _ in 0..10 {
            let c = c.clone();
            patchall::spawn(move || {
                patchall::sleep(Duration::from_millis(5));
                *c.lock().unwrap() += 1;
            })
            .unwrap();
        }
    })
    .unwrap();
    patchall::run();
    assert_eq!(*count.lock().unwrap(), 10);
}

#[test]
fn a_plain_thread_sleep_runs_coroutines_meanwhile() {
    let ticks = Arc::new(Mutex::new(0));
    let t = ticks.clone();
    let h = patchall::spawn(move || {
        for _ in 0..3 {
            *t.lock().unwrap() += 1;
            patchall::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    patchall::sleep(Duration::from_millis(200));
    assert_eq!(*ticks.lock().unwrap(), 3);
    assert!(h.is_finished());
}
