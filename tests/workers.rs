//! Many cores: placement, no migration, joins across workers.

use std::collections::HashSet;
use std::time::Duration;

fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

#[test]
fn coroutines_spread_over_workers_and_never_migrate() {
    let rt = patchall::Runtime::builder().workers(2).build().unwrap();
    let hs: Vec<_> = (0..200)
        .map(|i| {
            rt.spawn(move || {
                let first = thread_id();
                for round in 0..5 {
                    if (i + round) % 2 == 0 {
                        patchall::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    assert_eq!(thread_id(), first, "coroutine {i} moved to another thread");
                }
                first
            })
            .unwrap()
        })
        .collect();
    let threads: HashSet<u64> = patchall::join_all(hs)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(threads.len(), 2, "both workers ran coroutines");
    assert!(
        !threads.contains(&thread_id()),
        "none ran on the spawning thread"
    );
}

#[test]
fn a_coroutine_joins_one_on_another_worker() {
    let rt = patchall::Runtime::builder().workers(2).build().unwrap();
    let handle = rt.handle();
    let outer = rt
        .spawn(move || {
            let here = thread_id();
            // The other worker is the less loaded one now: this one runs `outer`.
            let inner = handle
                .spawn(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    thread_id()
                })
                .unwrap();
            (here, inner.join().unwrap())
        })
        .unwrap();
    let (a, b) = outer.join().unwrap();
    assert_ne!(a, b, "the inner coroutine ran on the other worker");
}

// A million cross-worker handoffs that park and wake through the runtime's
// parking table: `workers::tests` in the crate (it uses crate-private parking).

#[test]
fn spawn_after_drop_is_refused_and_drop_does_not_hang() {
    let rt = patchall::Runtime::builder().workers(1).build().unwrap();
    let handle = rt.handle();
    let parked = rt
        .spawn(|| std::thread::sleep(Duration::from_secs(3600)))
        .unwrap();
    drop(rt);
    assert!(!parked.is_finished());
    assert!(handle.spawn(|| ()).is_err());
}

#[test]
fn too_many_workers_is_an_error_not_an_abort() {
    for n in [usize::MAX, patchall::MAX_WORKERS + 1] {
        let err = patchall::Runtime::builder().workers(n).build().err();
        let err = err.unwrap_or_else(|| panic!("{n} workers were accepted"));
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("at most 1024"), "{err}");
    }
}
