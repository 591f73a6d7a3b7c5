//! Signal masks and signal waits, both faces: the mask of ppoll, pselect,
//! epoll_pwait, epoll_pwait2 and sigsuspend is in force for the whole wait
//! (a signal it lets in runs its handler and ends the wait with EINTR; one it
//! blocks stays pending, and plain parks whose thread mask blocks it go on);
//! pause ends when a handler runs; sigwaitinfo, sigtimedwait and sigwait
//! consume the signal as the kernel does. Every signal here is sent to one
//! thread (`pthread_kill`, `pthread_sigqueue`), each test with signals of its
//! own, so that the tests of this binary may run side by side. A crate
//! coroutine's `pthread_sigmask` is its OS thread's (green threads have their
//! own: tests/green_threads.rs).

mod waits;

use std::os::fd::RawFd;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use libc::{c_int, sigset_t, timespec};
use waits::{clear_errno, errno, ticker};

unsafe extern "C" {
    /// What `<signal.h>` names `sigpause` under X/Open.
    fn __xpg_sigpause(sig: c_int) -> c_int;
}

/// Handlers run, per SIGRTMIN+n.
static HANDLED: [AtomicUsize; 17] = [const { AtomicUsize::new(0) }; 17];

extern "C" fn count(sig: c_int) {
    HANDLED[(sig - libc::SIGRTMIN()) as usize].fetch_add(1, SeqCst);
}

/// SIGRTMIN+`n`, with `count` as its handler (no SA_RESTART: the waits here are
/// never restarted anyway).
fn counted(n: c_int) -> c_int {
    let sig = libc::SIGRTMIN() + n;
    // SAFETY: a zeroed sigaction with an empty mask and our handler.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, ptr::null_mut()), 0);
    }
    sig
}

fn handled(sig: c_int) -> usize {
    HANDLED[(sig - libc::SIGRTMIN()) as usize].load(SeqCst)
}

fn set_of(sigs: &[c_int]) -> sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set.
    unsafe {
        let mut set: sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks `sigs` in this thread's mask.
fn block(sigs: &[c_int]) {
    let set = set_of(sigs);
    assert_eq!(
        // SAFETY: changing this thread's mask with a valid set.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) },
        0
    );
}

fn unblock(sigs: &[c_int]) {
    let set = set_of(sigs);
    assert_eq!(
        // SAFETY: as in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, ptr::null_mut()) },
        0
    );
}

fn pending(sig: c_int) -> bool {
    // SAFETY: sigpending fills a local set.
    unsafe {
        let mut set: sigset_t = std::mem::zeroed();
        assert_eq!(libc::sigpending(&mut set), 0);
        libc::sigismember(&set, sig) == 1
    }
}

/// Takes `sig` off this thread's pending signals (it must be blocked).
fn consume(sig: c_int) -> bool {
    let set = set_of(&[sig]);
    let zero = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain thread's zero-timeout sigtimedwait on a local set.
    unsafe { libc::sigtimedwait(&set, ptr::null_mut(), &zero) == sig }
}

fn me() -> libc::pthread_t {
    // SAFETY: no preconditions.
    unsafe { libc::pthread_self() }
}

fn send(thread: libc::pthread_t, sig: c_int) {
    // SAFETY: the thread lives until the test joins it.
    assert_eq!(unsafe { libc::pthread_kill(thread, sig) }, 0);
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

fn close(fd: RawFd) {
    // SAFETY: closing an fd the test owns.
    unsafe { libc::close(fd) };
}

fn write_byte(fd: RawFd) {
    // SAFETY: one byte from a static.
    assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
}

const FIVE_S: timespec = timespec {
    tv_sec: 5,
    tv_nsec: 0,
};

/// A wait on `fd`'s readability for up to 5 s with `mask`: (result, errno).
type MaskedWait = fn(fd: RawFd, mask: &sigset_t) -> (c_int, c_int);

fn outcome(r: c_int) -> (c_int, c_int) {
    (r, if r < 0 { errno() } else { 0 })
}

// Each call gets local, valid arguments and the caller's live mask.
const MASKED: [(&str, MaskedWait); 5] = [
    ("ppoll", |fd, mask| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        clear_errno();
        // SAFETY: one live pollfd, a static timeout, the caller's mask.
        outcome(unsafe { libc::ppoll(&mut p, 1, &FIVE_S, mask) })
    }),
    // SAFETY: a zeroed fd_set is the empty set; it holds `fd`, the other
    // sets are null, the timeout static, the mask the caller's.
    ("pselect", |fd, mask| unsafe {
        let mut set: libc::fd_set = std::mem::zeroed();
        libc::FD_SET(fd, &mut set);
        clear_errno();
        let none = ptr::null_mut();
        outcome(libc::pselect(fd + 1, &mut set, none, none, &FIVE_S, mask))
    }),
    ("epoll_pwait", |fd, mask| {
        // SAFETY: the helper's epoll and one live event; the caller's mask.
        with_epoll(fd, |ep, ev| unsafe {
            libc::epoll_pwait(ep, ev, 1, 5000, mask)
        })
    }),
    ("epoll_pwait2", |fd, mask| {
        // SAFETY: as above, with a static timeout.
        with_epoll(fd, |ep, ev| unsafe {
            libc::epoll_pwait2(ep, ev, 1, &FIVE_S, mask)
        })
    }),
    ("sigsuspend", |_, mask| {
        clear_errno();
        // SAFETY: the caller's live mask.
        outcome(unsafe { libc::sigsuspend(mask) })
    }),
];

fn with_epoll(
    fd: RawFd,
    call: impl FnOnce(RawFd, &mut libc::epoll_event) -> c_int,
) -> (c_int, c_int) {
    // SAFETY: plain epoll calls on a valid event.
    let ep = unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev), 0);
        ep
    };
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    clear_errno();
    let r = outcome(call(ep, &mut ev));
    close(ep);
    r
}

/// Runs `wait` in a coroutine, with `let_in` and `kept` blocked in the thread's
/// mask and only `kept` in the wait's: a sibling sends both while a plain read
/// on another pipe is parked too. Returns the wait's outcome and whether the
/// read was interrupted.
fn masked_wait_in_a_coroutine(
    wait: MaskedWait,
    let_in: c_int,
    kept: c_int,
) -> ((c_int, c_int), bool) {
    let (r, w) = pipe();
    let (r2, w2) = pipe();
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clock = ticker(ticks.clone(), stop.clone());
    let waiter = patchall::spawn(move || wait(r, &set_of(&[kept]))).unwrap();
    let reader = patchall::spawn(move || {
        let mut b = 0u8;
        // SAFETY: one byte into a local.
        outcome(unsafe { libc::read(r2, (&raw mut b).cast(), 1) } as c_int)
    })
    .unwrap();
    let thread = me();
    let sender = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(20));
        send(thread, kept);
        patchall::sleep(Duration::from_millis(20));
        send(thread, let_in);
    })
    .unwrap();
    let start = Instant::now();
    let got = waiter.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "the wait took its whole timeout"
    );
    sender.join().unwrap();
    write_byte(w2);
    let read = reader.join().unwrap();
    stop.store(true, SeqCst);
    clock.join().unwrap();
    assert!(
        ticks.load(SeqCst) >= 10,
        "the other coroutines ran meanwhile"
    );
    for fd in [r, w, r2, w2] {
        close(fd);
    }
    (got, read != (1, 0))
}

#[test]
fn a_waits_mask_is_in_force_while_it_is_parked() {
    for (i, (name, wait)) in MASKED.iter().enumerate() {
        let let_in = counted(2 * i as c_int);
        let kept = counted(2 * i as c_int + 1);
        block(&[let_in, kept]);
        let (got, read_interrupted) = masked_wait_in_a_coroutine(*wait, let_in, kept);
        assert_eq!(got, (-1, libc::EINTR), "{name}");
        assert_eq!(handled(let_in), 1, "{name}: the signal let in was handled");
        assert_eq!(
            handled(kept),
            0,
            "{name}: the signal the mask blocks was not"
        );
        assert!(pending(kept), "{name}: it stays pending");
        assert!(
            !read_interrupted,
            "{name}: a plain park whose mask blocks the signal goes on"
        );
        assert!(consume(kept));
        unblock(&[let_in, kept]);
    }
}

#[test]
fn outside_a_coroutine_the_mask_is_the_kernels() {
    // The same waits on a plain thread: the real calls.
    let (r, w) = pipe();
    for (i, (name, wait)) in MASKED.iter().enumerate() {
        let let_in = counted(10);
        let kept = counted(11);
        let before = handled(let_in);
        let (tx, rx) = std::sync::mpsc::channel();
        let wait = *wait;
        let t = std::thread::spawn(move || {
            block(&[let_in, kept]);
            tx.send(me()).unwrap();
            let got = wait(r, &set_of(&[kept]));
            (got, pending(kept), consume(kept))
        });
        let thread = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        send(thread, kept);
        std::thread::sleep(Duration::from_millis(50));
        send(thread, let_in);
        let (got, kept_pending, consumed) = t.join().unwrap();
        assert_eq!(got, (-1, libc::EINTR), "{name} ({i})");
        assert_eq!(handled(let_in), before + 1, "{name}");
        assert!(kept_pending && consumed, "{name}");
    }
    close(r);
    close(w);
}

#[test]
fn a_pending_signal_the_mask_lets_in_ends_the_wait_at_once() {
    let let_in = counted(12);
    block(&[let_in]);
    let (r, w) = pipe();
    for (i, (name, wait)) in MASKED.iter().enumerate() {
        send(me(), let_in);
        assert!(pending(let_in));
        let got = patchall::spawn(move || wait(r, &set_of(&[])))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got, (-1, libc::EINTR), "{name}");
        assert_eq!(handled(let_in), i + 1, "{name}");
    }
    // X/Open sigpause: the thread's mask less the one signal.
    send(me(), let_in);
    let got = patchall::spawn(move || {
        clear_errno();
        // SAFETY: glibc's X/Open sigpause, a valid signal.
        outcome(unsafe { __xpg_sigpause(let_in) })
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(got, (-1, libc::EINTR));
    assert_eq!(handled(let_in), MASKED.len() + 1);
    close(r);
    close(w);
    unblock(&[let_in]);
}

#[test]
fn pause_ends_when_a_handler_runs_inside_and_outside() {
    let sig = counted(13);
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clock = ticker(ticks.clone(), stop.clone());
    let pauser = patchall::spawn(|| {
        clear_errno();
        // SAFETY: pause has no preconditions.
        outcome(unsafe { libc::pause() })
    })
    .unwrap();
    let thread = me();
    patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(30));
        send(thread, sig);
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(pauser.join().unwrap(), (-1, libc::EINTR));
    stop.store(true, SeqCst);
    clock.join().unwrap();
    assert!(ticks.load(SeqCst) >= 10);
    assert_eq!(handled(sig), 1);

    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        tx.send(me()).unwrap();
        clear_errno();
        // SAFETY: as above.
        outcome(unsafe { libc::pause() })
    });
    let thread = rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    send(thread, sig);
    assert_eq!(t.join().unwrap(), (-1, libc::EINTR));
    assert_eq!(handled(sig), 2);
}

/// What one round of signal waits gave: sigtimedwait with nothing sent,
/// sigwaitinfo's number, code and value for a queued signal, sigwait's result
/// and number, and sigwaitinfo interrupted by a handled signal.
#[derive(Debug, PartialEq, Eq)]
struct Waits {
    timed_out: (c_int, c_int),
    bad_timeout: (c_int, c_int),
    info: (c_int, c_int, c_int),
    sigwait: (c_int, c_int),
    interrupted: (c_int, c_int),
}

/// The waits, on the calling thread (a coroutine or not); `ready` is told
/// before each wait that needs a signal.
fn signal_waits(waited: c_int, ready: &dyn Fn()) -> Waits {
    let set = set_of(&[waited]);
    let short = timespec {
        tv_sec: 0,
        tv_nsec: 30_000_000,
    };
    let bad = timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000_000,
    };
    // SAFETY: every call gets local sets, infos and timespecs.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        clear_errno();
        let timed_out = outcome(libc::sigtimedwait(&set, &mut info, &short));
        clear_errno();
        let bad_timeout = outcome(libc::sigtimedwait(&set, &mut info, &bad));
        ready();
        let n = libc::sigwaitinfo(&set, &mut info);
        let info = (n, info.si_code, info.si_value().sival_ptr as usize as c_int);
        ready();
        let mut sig = 0;
        let r = libc::sigwait(&set, &mut sig);
        let sigwait = (r, sig);
        ready();
        clear_errno();
        let interrupted = outcome(libc::sigwaitinfo(&set, ptr::null_mut()));
        Waits {
            timed_out,
            bad_timeout,
            info,
            sigwait,
            interrupted,
        }
    }
}

/// Sends what `signal_waits` waits for to `thread`, each after a `ready()`.
fn send_waited(
    thread: libc::pthread_t,
    waited: c_int,
    handled_sig: c_int,
    ready: &dyn Fn(),
    pause: &dyn Fn(),
) {
    ready();
    pause();
    let value = libc::sigval {
        sival_ptr: 42usize as *mut libc::c_void,
    };
    // SAFETY: the thread lives until joined.
    assert_eq!(unsafe { libc::pthread_sigqueue(thread, waited, value) }, 0);
    ready();
    pause();
    send(thread, waited);
    ready();
    pause();
    send(thread, handled_sig);
}

#[test]
fn signal_waits_consume_the_signal_inside_and_outside() {
    let waited = counted(14);
    let handled_sig = counted(15);
    let expected = Waits {
        timed_out: (-1, libc::EAGAIN),
        bad_timeout: (-1, libc::EINVAL),
        info: (waited, libc::SI_QUEUE, 42),
        sigwait: (0, waited),
        interrupted: (-1, libc::EINTR),
    };

    // Outside: a plain thread, the real calls.
    let (tx, rx) = std::sync::mpsc::channel::<libc::pthread_t>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        block(&[waited]);
        tx.send(me()).unwrap();
        signal_waits(waited, &|| go_tx.send(()).unwrap())
    });
    let thread = rx.recv().unwrap();
    send_waited(
        thread,
        waited,
        handled_sig,
        &|| go_rx.recv().unwrap(),
        &|| std::thread::sleep(Duration::from_millis(50)),
    );
    assert_eq!(t.join().unwrap(), expected);
    assert_eq!(handled(waited), 0);
    assert_eq!(handled(handled_sig), 1);

    // Inside: coroutines of this thread, which blocks the waited signal.
    block(&[waited]);
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clock = ticker(ticks.clone(), stop.clone());
    let (go_tx, go_rx) = patchall::sync::unbounded::<()>();
    let waiter =
        patchall::spawn(move || signal_waits(waited, &|| go_tx.send(()).unwrap())).unwrap();
    let thread = me();
    let before = ticks.load(SeqCst);
    patchall::spawn(move || {
        send_waited(
            thread,
            waited,
            handled_sig,
            &|| go_rx.recv().unwrap(),
            &|| patchall::sleep(Duration::from_millis(20)),
        )
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(waiter.join().unwrap(), expected);
    stop.store(true, SeqCst);
    clock.join().unwrap();
    assert!(
        ticks.load(SeqCst) >= before + 10,
        "the other coroutines ran meanwhile"
    );
    assert_eq!(
        handled(waited),
        0,
        "the waited signal is consumed, never handled"
    );
    assert_eq!(handled(handled_sig), 2);
    assert!(!pending(waited));
    unblock(&[waited]);
}

#[test]
fn a_busy_scheduler_still_lets_the_signal_in() {
    // A coroutine that only yields keeps the scheduler from ever blocking: the
    // signal is let in by its zero-timeout polls.
    let let_in = counted(16);
    block(&[let_in]);
    let (r, w) = pipe();
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let waiter = patchall::spawn(move || {
        let got = MASKED[1].1(r, &set_of(&[]));
        finished.store(true, SeqCst);
        got
    })
    .unwrap();
    let busy = patchall::spawn(move || {
        let start = Instant::now();
        let mut yields = 0u64;
        while !done.load(SeqCst) && start.elapsed() < Duration::from_secs(5) {
            patchall::yield_now();
            yields += 1;
        }
        yields
    })
    .unwrap();
    let thread = me();
    patchall::spawn(move || send(thread, let_in))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(waiter.join().unwrap(), (-1, libc::EINTR));
    assert!(busy.join().unwrap() > 0);
    assert_eq!(handled(let_in), 1);
    close(r);
    close(w);
    unblock(&[let_in]);
}

fn blocked_here(sig: c_int) -> bool {
    // SAFETY: a query into a local set.
    unsafe {
        let mut set: sigset_t = std::mem::zeroed();
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, ptr::null(), &mut set),
            0
        );
        libc::sigismember(&set, sig) == 1
    }
}

/// (`sigprocmask`'s result and errno, `pthread_sigmask`'s result) for a bad `how`.
fn bad_how() -> ((c_int, c_int), c_int) {
    let set = set_of(&[libc::SIGRTMIN() + 17]);
    clear_errno();
    // SAFETY: a local set; the kernel refuses the `how`.
    let r = outcome(unsafe { libc::sigprocmask(99, &set, ptr::null_mut()) });
    // SAFETY: as above.
    (r, unsafe {
        libc::pthread_sigmask(99, &set, ptr::null_mut())
    })
}

#[test]
fn a_crate_coroutines_mask_is_its_threads() {
    // Only green threads have masks of their own: the crate's coroutines are
    // not threads, so pthread_sigmask in one is the OS thread's, as outside.
    let sig = libc::SIGRTMIN() + 17;
    std::thread::spawn(move || {
        assert_eq!(bad_how(), ((-1, libc::EINVAL), libc::EINVAL));
        let inside = patchall::spawn(move || {
            block(&[sig]);
            (blocked_here(sig), bad_how())
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(inside, (true, ((-1, libc::EINVAL), libc::EINVAL)));
        assert!(blocked_here(sig), "the coroutine's block is the thread's");
        unblock(&[sig]);
        assert!(!blocked_here(sig));
    })
    .join()
    .unwrap();
}
