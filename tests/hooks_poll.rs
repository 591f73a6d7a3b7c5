//! poll, ppoll, select, pselect, epoll_wait/pwait/pwait2 and glibc's aliases:
//! both faces.
//!
//! This binary links patchall, so `libc::poll`… reach the hooks; libc's own
//! definitions are found with `dlsym(RTLD_NEXT)` for comparison.

mod waits;

use waits::{HANDLED, clear_errno, errno, keep_signalling, real, restarting_signal, ticker};

use std::os::fd::RawFd;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use libc::{c_int, epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

unsafe extern "C" {
    // glibc's other entry points, hooked too.
    fn __poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int;
    fn __poll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: c_int, fdslen: size_t) -> c_int;
    fn __ppoll_chk(
        fds: *mut pollfd,
        nfds: nfds_t,
        timeout: *const timespec,
        sigmask: *const sigset_t,
        fdslen: size_t,
    ) -> c_int;
    fn __select(
        nfds: c_int,
        r: *mut fd_set,
        w: *mut fd_set,
        e: *mut fd_set,
        timeout: *mut timeval,
    ) -> c_int;
}

/// A closed fd number beyond any this process can open: poll reports POLLNVAL.
const NEVER_OPEN: RawFd = 1 << 30;

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

fn close(fd: RawFd) {
    // SAFETY: closing an fd this test owns.
    unsafe { libc::close(fd) };
}

fn write_byte(fd: RawFd) {
    // SAFETY: writing one byte from a static buffer.
    assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
}

fn ts_ms(ms: c_int) -> timespec {
    timespec {
        tv_sec: (ms / 1000).into(),
        tv_nsec: (ms % 1000) as i64 * 1_000_000,
    }
}

fn tv_ms(ms: c_int) -> timeval {
    timeval {
        tv_sec: (ms / 1000).into(),
        tv_usec: (ms % 1000) as i64 * 1000,
    }
}

fn fd_set_of(fds: &[RawFd]) -> fd_set {
    // SAFETY: an all-zero fd_set is empty; FD_SET on fds below FD_SETSIZE.
    unsafe {
        let mut set: fd_set = std::mem::zeroed();
        for &fd in fds {
            libc::FD_SET(fd, &mut set);
        }
        set
    }
}

fn is_set(fd: RawFd, set: &fd_set) -> bool {
    // SAFETY: fd is below FD_SETSIZE.
    unsafe { libc::FD_ISSET(fd, set) }
}

/// A new epoll fd watching `fd` for input.
fn epoll_on(fd: RawFd) -> RawFd {
    // SAFETY: plain epoll calls on a valid event.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0);
        let mut ev = epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev), 0);
        ep
    }
}

/// What a wait gave: (result, errno if it failed, whether `fd` was reported
/// readable).
type Outcome = (c_int, i32, bool);

/// One way to wait for `fd` to become readable within `ms`.
type Wait = fn(fd: RawFd, ms: c_int) -> Outcome;

/// The call's result and, if it failed, its errno.
fn result(call: impl FnOnce() -> c_int) -> (c_int, i32) {
    clear_errno();
    let r = call();
    (r, if r < 0 { errno() } else { 0 })
}

fn via_pollfd(fd: RawFd, call: impl FnOnce(&mut pollfd) -> c_int) -> Outcome {
    let mut p = pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let (r, e) = result(|| call(&mut p));
    (r, e, p.revents & libc::POLLIN != 0)
}

fn via_fd_set(fd: RawFd, call: impl FnOnce(&mut fd_set) -> c_int) -> Outcome {
    let mut set = fd_set_of(&[fd]);
    let (r, e) = result(|| call(&mut set));
    // The sets are unspecified after an error.
    (r, e, r > 0 && is_set(fd, &set))
}

fn via_epoll(fd: RawFd, call: impl FnOnce(RawFd, &mut epoll_event) -> c_int) -> Outcome {
    let ep = epoll_on(fd);
    let mut ev = epoll_event { events: 0, u64: 0 };
    let (r, e) = result(|| call(ep, &mut ev));
    close(ep);
    let got = r == 1 && ev.u64 == fd as u64 && ev.events & libc::EPOLLIN as u32 != 0;
    (r, e, got)
}

const SZ: size_t = size_of::<pollfd>();

// Each call gets valid arguments: the pollfd, fd_set or epoll_event the
// `via_*` helper owns for the call's length, and timeouts in locals.
const WAITS: [(&str, Wait); 11] = [
    ("poll", |fd, ms| {
        // SAFETY: `p` is the helper's pollfd, one entry; the timeout is a live local.
        via_pollfd(fd, |p| unsafe { libc::poll(p, 1, ms) })
    }),
    ("__poll", |fd, ms| {
        // SAFETY: `p` is the helper's pollfd, one entry; the timeout is a live local.
        via_pollfd(fd, |p| unsafe { __poll(p, 1, ms) })
    }),
    ("__poll_chk", |fd, ms| {
        // SAFETY: `p` is the helper's pollfd, one entry; the timeout is a live local.
        via_pollfd(fd, |p| unsafe { __poll_chk(p, 1, ms, SZ) })
    }),
    ("ppoll", |fd, ms| {
        // SAFETY: `p` is the helper's pollfd, one entry; the timeout is a live local.
        via_pollfd(fd, |p| unsafe {
            libc::ppoll(p, 1, &ts_ms(ms), ptr::null())
        })
    }),
    ("__ppoll_chk", |fd, ms| {
        // SAFETY: `p` is the helper's pollfd, one entry; the timeout is a live local.
        via_pollfd(fd, |p| unsafe {
            __ppoll_chk(p, 1, &ts_ms(ms), ptr::null(), SZ)
        })
    }),
    ("select", |fd, ms| {
        // SAFETY: `s` is the helper's fd_set, holding `fd`; the other sets are null; the timeout is a live local.
        via_fd_set(fd, |s| unsafe {
            libc::select(fd + 1, s, ptr::null_mut(), ptr::null_mut(), &mut tv_ms(ms))
        })
    }),
    ("__select", |fd, ms| {
        // SAFETY: `s` is the helper's fd_set, holding `fd`; the other sets are null; the timeout is a live local.
        via_fd_set(fd, |s| unsafe {
            __select(fd + 1, s, ptr::null_mut(), ptr::null_mut(), &mut tv_ms(ms))
        })
    }),
    ("pselect", |fd, ms| {
        // SAFETY: `s` is the helper's fd_set, holding `fd`; the other sets are null; the timeout is a live local.
        via_fd_set(fd, |s| unsafe {
            let none = ptr::null_mut();
            libc::pselect(fd + 1, s, none, none, &ts_ms(ms), ptr::null())
        })
    }),
    ("epoll_wait", |fd, ms| {
        // SAFETY: `ep` is the helper's epoll and `ev` its one event; the timeout is a live local.
        via_epoll(fd, |ep, ev| unsafe { libc::epoll_wait(ep, ev, 1, ms) })
    }),
    ("epoll_pwait", |fd, ms| {
        // SAFETY: `ep` is the helper's epoll and `ev` its one event; the timeout is a live local.
        via_epoll(fd, |ep, ev| unsafe {
            libc::epoll_pwait(ep, ev, 1, ms, ptr::null())
        })
    }),
    ("epoll_pwait2", |fd, ms| {
        // SAFETY: `ep` is the helper's epoll and `ev` its one event; the timeout is a live local.
        via_epoll(fd, |ep, ev| unsafe {
            libc::epoll_pwait2(ep, ev, 1, &ts_ms(ms), ptr::null())
        })
    }),
];

#[test]
fn each_call_parks_until_another_coroutine_writes() {
    let ticks = Arc::new(AtomicUsize::new(0));
    let pipes: Vec<_> = WAITS.iter().map(|_| pipe()).collect();
    let waiters: Vec<_> = WAITS
        .iter()
        .zip(&pipes)
        .map(|(&(name, wait), &(r, _))| {
            let ticks = ticks.clone();
            patchall::spawn(move || (name, wait(r, 5000), ticks.load(SeqCst))).unwrap()
        })
        .collect();
    let writes: Vec<RawFd> = pipes.iter().map(|&(_, w)| w).collect();
    let writer = patchall::spawn(move || {
        for _ in 0..5 {
            ticks.fetch_add(1, SeqCst);
            patchall::sleep(Duration::from_millis(2));
        }
        writes.into_iter().for_each(write_byte);
    })
    .unwrap();
    for h in waiters {
        let (name, outcome, seen) = h.join().unwrap();
        assert_eq!(outcome, (1, 0, true), "{name}");
        // The writer ran all its rounds while this one waited.
        assert_eq!(seen, 5, "{name}");
    }
    writer.join().unwrap();
    pipes.into_iter().for_each(|(r, w)| {
        close(r);
        close(w);
    });
}

#[test]
fn each_call_times_out_with_zero_while_others_run() {
    const MS: c_int = 50;
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tick = ticker(ticks.clone(), stop.clone());
    let pipes: Vec<_> = WAITS.iter().map(|_| pipe()).collect();
    let mut waiters: Vec<_> = WAITS
        .iter()
        .zip(&pipes)
        .map(|(&(name, wait), &(r, _))| {
            let ticks = ticks.clone();
            patchall::spawn(move || {
                let (t0, start) = (ticks.load(SeqCst), Instant::now());
                let outcome = wait(r, MS);
                (name, outcome, start.elapsed(), ticks.load(SeqCst) - t0)
            })
            .unwrap()
        })
        .collect();
    // No fds at all: poll is a sleep.
    let t = ticks.clone();
    waiters.push(
        patchall::spawn(move || {
            let (t0, start) = (t.load(SeqCst), Instant::now());
            // SAFETY: no fds, nothing to read or write.
            let n = unsafe { libc::poll(ptr::null_mut(), 0, MS) };
            let outcome = (n, 0, false);
            (
                "poll(no fds)",
                outcome,
                start.elapsed(),
                t.load(SeqCst) - t0,
            )
        })
        .unwrap(),
    );
    for h in waiters {
        let (name, outcome, took, ticked) = h.join().unwrap();
        assert_eq!(outcome, (0, 0, false), "{name}");
        let wanted = Duration::from_millis(MS as u64);
        assert!(took >= wanted, "{name} returned after {took:?}");
        assert!(took < wanted + Duration::from_secs(5), "{name}: {took:?}");
        assert!(ticked >= 3, "{name}: ticker ran {ticked} times meanwhile");
    }
    stop.store(true, SeqCst);
    tick.join().unwrap();
    pipes.into_iter().for_each(|(r, w)| {
        close(r);
        close(w);
    });
}

#[test]
fn writability_hangups_and_timeouts_are_reported_as_blocking_calls_do() {
    // A full pipe: writable again once the other coroutine drains it.
    let (full_r, full_w) = pipe();
    // SAFETY: set O_NONBLOCK on our own write end, to fill it without blocking.
    unsafe { libc::fcntl(full_w, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut filled = 0;
    loop {
        // SAFETY: writes from a local buffer.
        let n = unsafe { libc::write(full_w, [0u8; 4096].as_ptr().cast(), 4096) };
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
    let (hup_r, hup_w) = pipe();
    let (quiet_r, quiet_w) = pipe();
    let poll_out = patchall::spawn(move || {
        let mut p = [
            pollfd {
                fd: full_w,
                events: libc::POLLOUT,
                revents: 0,
            },
            pollfd {
                fd: -1,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, 5000) };
        (n, p[0].revents, p[1].revents)
    })
    .unwrap();
    let poll_hup = patchall::spawn(move || {
        let mut p = pollfd {
            fd: hup_r,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 5000) };
        (n, p.revents)
    })
    .unwrap();
    // select: only the fd that became ready stays in its set; timeout is updated.
    let select_one = patchall::spawn(move || {
        let mut read = fd_set_of(&[quiet_r, hup_r]);
        let mut write = fd_set_of(&[full_w]);
        let mut tv = tv_ms(5000);
        let nfds = quiet_r.max(hup_r).max(full_w) + 1;
        // SAFETY: valid sets and timeout.
        let n = unsafe { libc::select(nfds, &mut read, &mut write, ptr::null_mut(), &mut tv) };
        let left = Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
        let sets = [
            is_set(quiet_r, &read),
            is_set(hup_r, &read),
            is_set(full_w, &write),
        ];
        (n, sets, left)
    })
    .unwrap();
    let select_timeout = patchall::spawn(move || {
        let mut read = fd_set_of(&[quiet_r]);
        let mut tv = tv_ms(30);
        let nfds = quiet_r + 1;
        // SAFETY: valid set and timeout.
        let n = unsafe { libc::select(nfds, &mut read, ptr::null_mut(), ptr::null_mut(), &mut tv) };
        (n, is_set(quiet_r, &read), (tv.tv_sec, tv.tv_usec))
    })
    .unwrap();
    let actor = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 4096];
        while filled > 0 {
            // SAFETY: reading into a local buffer what the pipe holds (the raw
            // call: this test is about the poll family, not read).
            let n = unsafe { libc::syscall(libc::SYS_read, full_r, buf.as_mut_ptr(), buf.len()) };
            assert!(n > 0);
            filled -= n as usize;
        }
        close(hup_w);
    })
    .unwrap();
    actor.join().unwrap();
    assert_eq!(poll_out.join().unwrap(), (1, libc::POLLOUT, 0));
    assert_eq!(poll_hup.join().unwrap(), (1, libc::POLLHUP));
    let (n, sets, left) = select_one.join().unwrap();
    // The write end became writable and the other pipe hung up, both at once.
    assert_eq!((n, sets), (2, [false, true, true]));
    assert!(
        left < Duration::from_secs(5) && left > Duration::from_secs(1),
        "{left:?}"
    );
    assert_eq!(select_timeout.join().unwrap(), (0, false, (0, 0)));
    for fd in [full_r, full_w, hup_r, quiet_r, quiet_w] {
        close(fd);
    }
}

#[test]
fn a_waiter_on_a_closed_fd_sees_pollnval() {
    // A high number no other test of this binary uses, so it is not reused.
    const FD: RawFd = 1001;
    let (r, w) = pipe();
    // SAFETY: duplicating our pipe onto the chosen number.
    assert_eq!(unsafe { libc::dup2(r, FD) }, FD);
    let waiter = patchall::spawn(|| {
        let mut p = pollfd {
            fd: FD,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 2000) };
        (n, p.revents)
    })
    .unwrap();
    let closer = patchall::spawn(|| {
        patchall::sleep(Duration::from_millis(10));
        close(FD);
    })
    .unwrap();
    closer.join().unwrap();
    assert_eq!(waiter.join().unwrap(), (1, libc::POLLNVAL));
    close(r);
    close(w);
}

/// poll-family functions: the hooked ones, or libc's own.
#[derive(Clone, Copy)]
struct Calls {
    poll: unsafe extern "C" fn(*mut pollfd, nfds_t, c_int) -> c_int,
    ppoll: unsafe extern "C" fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int,
    select:
        unsafe extern "C" fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *mut timeval) -> c_int,
    pselect: unsafe extern "C" fn(
        c_int,
        *mut fd_set,
        *mut fd_set,
        *mut fd_set,
        *const timespec,
        *const sigset_t,
    ) -> c_int,
    epoll_wait: unsafe extern "C" fn(c_int, *mut epoll_event, c_int, c_int) -> c_int,
    epoll_pwait2: unsafe extern "C" fn(
        c_int,
        *mut epoll_event,
        c_int,
        *const timespec,
        *const sigset_t,
    ) -> c_int,
}

const HOOKED: Calls = Calls {
    poll: libc::poll,
    ppoll: libc::ppoll,
    select: libc::select,
    pselect: libc::pselect,
    epoll_wait: libc::epoll_wait,
    epoll_pwait2: libc::epoll_pwait2,
};

fn libcs() -> Calls {
    Calls {
        poll: real(c"poll"),
        ppoll: real(c"ppoll"),
        select: real(c"select"),
        pselect: real(c"pselect"),
        epoll_wait: real(c"epoll_wait"),
        epoll_pwait2: real(c"epoll_pwait2"),
    }
}

/// Calls that fail, or succeed at once, without waiting: (result, errno, what
/// the call wrote back). `closed` is a closed fd below the fd table's size.
fn immediate(c: Calls, closed: RawFd, pipe_r: RawFd) -> Vec<(c_int, i32, i64)> {
    let mut out = Vec::new();
    let mut record = |r: c_int, detail: i64| out.push((r, errno(), detail));
    let bad_ts = timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000_000,
    };
    let none = ptr::null_mut::<fd_set>();
    // SAFETY: the calls under test on local arguments, or on null
    // and out-of-range ones the kernel rejects without touching memory.
    unsafe {
        for fd in [NEVER_OPEN, closed, -1] {
            let mut p = pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            clear_errno();
            record((c.poll)(&mut p, 1, 10), p.revents.into());
            p.revents = 0;
            clear_errno();
            record(
                (c.ppoll)(&mut p, 1, &ts_ms(0), ptr::null()),
                p.revents.into(),
            );
        }
        clear_errno();
        record((c.poll)(ptr::null_mut(), 1, 1000), 0);
        // Too many fds; then a count the kernel truncates to `unsigned int` 0.
        clear_errno();
        record((c.poll)(ptr::null_mut(), u32::MAX.into(), 1000), 0);
        clear_errno();
        record((c.poll)(ptr::null_mut(), 1 << 32, 10), 0);
        let mut p = pollfd {
            fd: pipe_r,
            events: libc::POLLIN,
            revents: 0,
        };
        clear_errno();
        record((c.ppoll)(&mut p, 1, &bad_ts, ptr::null()), p.revents.into());

        let mut set = fd_set_of(&[closed]);
        let mut tv = tv_ms(1000);
        clear_errno();
        let r = (c.select)(closed + 1, &mut set, none, none, &mut tv);
        record(r, is_set(closed, &set).into());
        let mut set = fd_set_of(&[pipe_r]);
        clear_errno();
        record((c.select)(-1, &mut set, none, none, &mut tv_ms(1000)), 0);
        let mut tv = timeval {
            tv_sec: 0,
            tv_usec: -1,
        };
        clear_errno();
        let r = (c.select)(pipe_r + 1, &mut set, none, none, &mut tv);
        record(r, tv.tv_usec);
        let mut tv = tv_ms(0);
        clear_errno();
        let r = (c.select)(pipe_r + 1, &mut set, none, none, &mut tv);
        record(
            r,
            is_set(pipe_r, &set) as i64 + tv.tv_sec * 10 + tv.tv_usec * 100,
        );
        let mut set = fd_set_of(&[closed]);
        clear_errno();
        let r = (c.pselect)(closed + 1, &mut set, none, none, &ts_ms(1000), ptr::null());
        record(r, is_set(closed, &set).into());
        let mut set = fd_set_of(&[pipe_r]);
        clear_errno();
        record(
            (c.pselect)(pipe_r + 1, &mut set, none, none, &bad_ts, ptr::null()),
            0,
        );

        let mut ev = epoll_event { events: 0, u64: 0 };
        for (fd, max) in [(pipe_r, 1), (NEVER_OPEN, 1), (closed, 1)] {
            clear_errno();
            record((c.epoll_wait)(fd, &mut ev, max, 1000), 0);
        }
        let ep = epoll_on(pipe_r);
        clear_errno();
        record((c.epoll_wait)(ep, &mut ev, 0, 1000), 0);
        clear_errno();
        record((c.epoll_wait)(ep, &mut ev, 1, 0), 0);
        clear_errno();
        record((c.epoll_pwait2)(ep, &mut ev, 1, &bad_ts, ptr::null()), 0);
        close(ep);
    }
    out
}

#[test]
fn immediate_results_and_errors_match_libc_inside_and_outside() {
    // An fd number inside the fd table, closed: select reports EBADF for it.
    const CLOSED: RawFd = 1000;
    let (r, w) = pipe();
    // SAFETY: grow the fd table past CLOSED, then free the number again.
    assert_eq!(unsafe { libc::dup2(r, CLOSED) }, CLOSED);
    close(CLOSED);
    let expected = immediate(libcs(), CLOSED, r);
    // Sanity: the cases are what they claim to be.
    assert_eq!(expected[0], (1, 0, libc::POLLNVAL.into()));
    assert_eq!((expected[10].0, expected[10].1), (-1, libc::EBADF));
    assert_eq!(immediate(HOOKED, CLOSED, r), expected);
    let inside = patchall::spawn(move || immediate(HOOKED, CLOSED, r)).unwrap();
    assert_eq!(inside.join().unwrap(), expected);
    close(r);
    close(w);
}

#[test]
fn outside_a_coroutine_calls_block_the_thread_as_libcs() {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let coroutine = patchall::spawn(move || flag.store(true, SeqCst)).unwrap();
    let (r, w) = pipe();
    for (name, wait) in WAITS {
        let start = Instant::now();
        assert_eq!(wait(r, 20), (0, 0, false), "{name}");
        assert!(start.elapsed() >= Duration::from_millis(20), "{name}");
    }
    write_byte(w);
    for (name, wait) in WAITS {
        assert_eq!(wait(r, 5000), (1, 0, true), "{name}");
    }
    // The plain thread only waited: it did not run this thread's coroutines.
    assert!(!ran.load(SeqCst));
    coroutine.join().unwrap();
    assert!(ran.load(SeqCst));
    close(r);
    close(w);
}

#[test]
fn a_signal_ends_each_wait_with_eintr_inside_and_outside() {
    let sig = restarting_signal();
    let (r, w) = pipe();
    // Outside: a plain thread blocked in the real calls, one after the other.
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let finished = done.clone();
    let blocked = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        let out: Vec<Outcome> = WAITS
            .iter()
            .map(|(_, wait)| {
                let outcome = wait(r, 5000);
                finished.fetch_add(1, SeqCst);
                outcome
            })
            .collect();
        out
    });
    keep_signalling(rx.recv().unwrap(), sig, &done, WAITS.len());
    let outside = blocked.join().unwrap();
    assert_eq!(outside, [(-1, libc::EINTR, false); WAITS.len()]);

    // Inside: every call parked at once on this thread; a sibling signals it.
    let done = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = WAITS
        .iter()
        .map(|&(name, wait)| {
            let done = done.clone();
            patchall::spawn(move || {
                let outcome = wait(r, 5000);
                done.fetch_add(1, SeqCst);
                (name, outcome)
            })
            .unwrap()
        })
        .collect();
    let handled = HANDLED.load(SeqCst);
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let signaller = patchall::spawn(move || keep_signalling(me, sig, &done, WAITS.len())).unwrap();
    for h in waiters {
        let (name, outcome) = h.join().unwrap();
        assert_eq!(outcome, (-1, libc::EINTR, false), "{name}");
    }
    signaller.join().unwrap();
    assert!(HANDLED.load(SeqCst) > handled);
    close(r);
    close(w);
}

/// select with `nfds` past FD_SETSIZE (bitmaps larger than `fd_set`, legal on
/// Linux): the real call outside, a park inside, the same answers.
#[test]
fn select_past_fd_setsize_parks_and_answers_as_libc() {
    const HIGH: RawFd = 1500;
    const WORDS: usize = (HIGH as usize + 1).div_ceil(64);
    // SAFETY: raising this process's soft fd limit to its hard one.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur <= HIGH as u64 {
            assert!(lim.rlim_max > HIGH as u64, "the hard fd limit is too low");
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    let (r, w) = pipe();
    // SAFETY: placing the read end at a high number this test owns.
    assert_eq!(unsafe { libc::dup2(r, HIGH) }, HIGH);
    let bitmap = || {
        let mut words = [0u64; WORDS];
        words[HIGH as usize / 64] |= 1 << (HIGH % 64);
        words
    };
    let select = |words: &mut [u64; WORDS], ms: c_int| {
        clear_errno();
        let none = ptr::null_mut();
        // SAFETY: a bitmap of HIGH + 1 bits, as nfds says; a local timeval.
        let n = unsafe {
            libc::select(
                HIGH + 1,
                words.as_mut_ptr().cast(),
                none,
                none,
                &mut tv_ms(ms),
            )
        };
        (n, if n < 0 { errno() } else { 0 })
    };
    // Outside: the real call times out, then sees the byte.
    let mut words = bitmap();
    assert_eq!(select(&mut words, 20), (0, 0));
    assert_eq!(words, [0; WORDS]);
    // Inside: parks while a ticker runs, until a sibling writes.
    let ticks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clock = ticker(ticks.clone(), stop.clone());
    let waiter = patchall::spawn(move || {
        let mut words = bitmap();
        let timed_out = select(&mut words, 20);
        let mut words = bitmap();
        let got = select(&mut words, 5000);
        (timed_out, got, words == bitmap())
    })
    .unwrap();
    patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(50));
        write_byte(w);
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(waiter.join().unwrap(), ((0, 0), (1, 0), true));
    stop.store(true, SeqCst);
    clock.join().unwrap();
    assert!(
        ticks.load(SeqCst) >= 10,
        "the other coroutines ran meanwhile"
    );
    let mut words = bitmap();
    assert_eq!(select(&mut words, 0), (1, 0), "the real call agrees");
    assert_eq!(words, bitmap());
    close(HIGH);
    close(r);
    close(w);
}
