//! Child processes from coroutines: the wait family parks (on a pidfd, or on
//! the offload pool for "any child"), `fork` gives the child a fresh start,
//! an exec'd program inherits none of patchall's fds and finds the flags the
//! user set. Each wait is also made outside a coroutine: same result.
//!
//! Waits for any child and the `fork` child scenario run in a process of their
//! own: the other tests of this binary have children of their own.

mod common;

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{TempDir, assert_passed, c_program, ignored_test, preload_lib, root, run};

type Outcome = Result<i32, i32>;

/// Taken by every test of this binary that starts processes: a program
/// spawned by one test inherits another's fds without FD_CLOEXEC, which then
/// get the user's flags back (see `posix_spawn`), as they must.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" {
    fn wait3(status: *mut i32, options: i32, usage: *mut libc::rusage) -> i32;
}

fn outcome(r: i32) -> Outcome {
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(r)
    }
}

/// A coroutine that counts 5 ms ticks until stopped.
struct Ticker {
    ticks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: patchall::JoinHandle<()>,
}

impl Ticker {
    fn start() -> Ticker {
        let ticks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (ticks.clone(), stop.clone());
        let handle = patchall::spawn(move || {
            while !s.load(SeqCst) {
                t.fetch_add(1, SeqCst);
                patchall::sleep(Duration::from_millis(5));
            }
        })
        .unwrap();
        Ticker {
            ticks,
            stop,
            handle,
        }
    }

    fn stop(self) -> usize {
        self.stop.store(true, SeqCst);
        self.handle.join().unwrap();
        self.ticks.load(SeqCst)
    }
}

/// Runs `call` in a coroutine while a ticker runs: its value and the ticks.
fn with_ticker<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> (T, usize) {
    let ticker = Ticker::start();
    let value = patchall::spawn(call).unwrap().join().unwrap();
    (value, ticker.stop())
}

/// Starts `sh -c script` (posix_spawn) and returns its pid, which the test
/// reaps itself with the wait call under test.
fn sh(script: &str) -> i32 {
    let child = Command::new("sh").args(["-c", script]).spawn().unwrap();
    let pid = child.id() as i32;
    // Dropping a Child neither kills nor reaps it: the wait under test does.
    drop(child);
    pid
}

fn waitpid(pid: i32, options: i32) -> Result<(i32, i32), i32> {
    let mut status = 0;
    // SAFETY: a valid out-pointer.
    let r = outcome(unsafe { libc::waitpid(pid, &mut status, options) })?;
    Ok((r, status))
}

fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

#[test]
fn waitpid_parks_while_others_run() {
    let _serial = serial();
    // Inside: std's Child::wait is waitpid(pid, _, 0).
    let ((status, took), ticks) = with_ticker(|| {
        let start = Instant::now();
        let status = Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap()
            .wait()
            .unwrap();
        (status, start.elapsed())
    });
    assert!(status.success());
    assert!(
        took >= Duration::from_millis(300),
        "returned after {took:?}"
    );
    assert!(
        ticks >= 20,
        "the thread blocked while waiting: {ticks} ticks in {took:?}"
    );

    // The exit code, both faces.
    let inside = patchall::spawn(|| {
        let pid = sh("sleep 0.05; exit 3");
        waitpid(pid, 0).map(|(r, s)| (r == pid, exit_code(s)))
    })
    .unwrap()
    .join()
    .unwrap();
    let pid = sh("sleep 0.05; exit 3");
    let outside = waitpid(pid, 0).map(|(r, s)| (r == pid, exit_code(s)));
    assert_eq!(inside, Ok((true, Some(3))));
    assert_eq!(inside, outside);
}

#[test]
fn wait_errors_and_wnohang_as_outside() {
    let _serial = serial();
    let scenario = || {
        let pid = sh("sleep 0.2");
        let running = waitpid(pid, libc::WNOHANG);
        let not_ours = waitpid(1, 0);
        // SAFETY: an all-zero siginfo_t is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid siginfo out-pointer.
        let waitid_not_ours =
            outcome(unsafe { libc::waitid(libc::P_PID, 1, &mut info, libc::WEXITED) });
        let bad_options = waitpid(pid, 0x1000_0000);
        let reaped = waitpid(pid, 0).map(|(r, s)| (r == pid, exit_code(s)));
        (running, not_ours, waitid_not_ours, bad_options, reaped)
    };
    let (inside, ticks) = with_ticker(scenario);
    let outside = scenario();
    assert_eq!(
        inside,
        (
            Ok((0, 0)),
            Err(libc::ECHILD),
            Err(libc::ECHILD),
            Err(libc::EINVAL),
            Ok((true, Some(0)))
        )
    );
    assert_eq!(inside, outside);
    assert!(
        ticks >= 10,
        "the final waitpid blocked the thread: {ticks} ticks"
    );
}

#[test]
fn wait4_and_waitid_park_too() {
    let _serial = serial();
    let scenario = || {
        let pid = sh("sleep 0.15; exit 4");
        // SAFETY: zeroed rusage and siginfo are valid out-values.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let mut status = 0;
        // SAFETY: valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let by_wait4 = (r == pid, exit_code(status));

        let pid = sh("sleep 0.15; exit 5");
        // SAFETY: as above.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid siginfo out-pointer.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED) };
        // SAFETY: waitid filled a SIGCHLD siginfo.
        let by_waitid = (r, unsafe { (info.si_pid() == pid, info.si_status()) });

        // With no siginfo at all (Linux allows it), and by the caller's pidfd.
        let pid = sh("sleep 0.15");
        // SAFETY: as above, with a null infop.
        let null_info = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                std::ptr::null_mut(),
                libc::WEXITED,
            )
        };
        let gone = waitpid(pid, libc::WNOHANG);

        let pid = sh("sleep 0.15; exit 6");
        // SAFETY: pidfd_open takes a pid and flags.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        // SAFETY: as above.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid siginfo out-pointer and our pidfd.
        let r =
            unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED) };
        // SAFETY: waitid filled a SIGCHLD siginfo; then closing our pidfd.
        let by_pidfd = (r, unsafe { (info.si_pid() == pid, info.si_status()) });
        // SAFETY: our pidfd.
        unsafe { libc::close(pidfd) };
        (by_wait4, by_waitid, null_info, gone, by_pidfd)
    };
    let (inside, ticks) = with_ticker(scenario);
    let outside = scenario();
    assert_eq!(
        inside,
        (
            (true, Some(4)),
            (0, (true, 5)),
            0,
            Err(libc::ECHILD),
            (0, (true, 6))
        )
    );
    assert_eq!(inside, outside);
    assert!(
        ticks >= 40,
        "the waits blocked the thread: {ticks} ticks in 4 x 150 ms"
    );
}

#[test]
fn stops_and_continues_are_seen_in_a_coroutine() {
    let _serial = serial();
    let ((stopped, exited), ticks) = with_ticker(|| {
        let pid = sh("sleep 0.05; kill -STOP $$; exit 7");
        let stopped = waitpid(pid, libc::WUNTRACED).map(|(r, s)| (r == pid, libc::WIFSTOPPED(s)));
        // SAFETY: signalling our own stopped child.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let exited = waitpid(pid, 0).map(|(r, s)| (r == pid, exit_code(s)));
        (stopped, exited)
    });
    assert_eq!(stopped, Ok((true, true)));
    assert_eq!(exited, Ok((true, Some(7))));
    assert!(
        ticks >= 5,
        "the thread blocked while the child ran: {ticks} ticks"
    );
}

/// (waited for this child, saw a SIGSTOP stop), then (waited for it, exit code).
type TraceSeen = ((bool, bool), (bool, Option<i32>));

/// A child that asks to be traced after `delay_us`, stops, then exits with 9
/// once continued; the parent's waits see the ptrace stop.
fn traced_child(delay_us: u32) -> Result<TraceSeen, i32> {
    // SAFETY: the child only makes async-signal-safe calls, then exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::usleep(delay_us);
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::raise(libc::SIGSTOP);
            libc::_exit(9);
        }
    }
    let stopped = waitpid(pid, 0).map(|(r, s)| {
        (
            r == pid,
            libc::WIFSTOPPED(s) && libc::WSTOPSIG(s) == libc::SIGSTOP,
        )
    })?;
    // SAFETY: continuing our own tracee, from the thread that traces it.
    unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
    let exited = waitpid(pid, 0).map(|(r, s)| (r == pid, exit_code(s)))?;
    Ok((stopped, exited))
}

#[test]
fn a_tracer_sees_ptrace_stops_in_a_coroutine() {
    let _serial = serial();
    for delay_us in [0, 50_000] {
        let (got, ticks) = with_ticker(move || traced_child(delay_us));
        assert_eq!(
            got,
            Ok(((true, true), (true, Some(9)))),
            "traced after {delay_us} us"
        );
        assert_eq!(traced_child(delay_us), got, "outside a coroutine");
        if delay_us > 0 {
            assert!(
                ticks >= 5,
                "the thread blocked while waiting: {ticks} ticks"
            );
        }
    }
}

/// Makes a pipe without FD_CLOEXEC, whose read end a coroutine has waited on
/// (so we set O_NONBLOCK on it); returns (read end, write end).
fn waited_pipe() -> (i32, i32) {
    let mut p = [0; 2];
    // SAFETY: pipe writes two fds.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    let (r, w) = (p[0], p[1]);
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: writing one byte to our pipe.
        unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
    });
    let got = patchall::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) }
    })
    .unwrap()
    .join()
    .unwrap();
    writer.join().unwrap();
    assert_eq!(got, 1);
    assert_ne!(
        raw_getfl(r) & libc::O_NONBLOCK,
        0,
        "the coroutine's read did not use O_NONBLOCK"
    );
    (r, w)
}

fn raw_getfl(fd: i32) -> i32 {
    // SAFETY: F_GETFL by raw system call, bypassing the hook.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) as i32 }
}

/// The `flags:` line of an fdinfo dump, as a number.
fn fdinfo_flags(dump: &str) -> i32 {
    let line = dump
        .lines()
        .find(|l| l.starts_with("flags:"))
        .unwrap_or_else(|| panic!("no flags in {dump}"));
    i32::from_str_radix(line["flags:".len()..].trim(), 8).unwrap()
}

const INTERNAL: [&str; 3] = ["[eventpoll]", "[eventfd]", "[pidfd]"];

#[test]
fn fork_and_exec_from_a_coroutine_leak_no_internal_fd() {
    let _serial = serial();
    let (inherited, w) = waited_pipe();
    let script = format!("ls -l /proc/self/fd; cat /proc/self/fdinfo/{inherited}");
    let argv_owned = [
        c"sh".to_owned(),
        c"-c".to_owned(),
        CString::new(script).unwrap(),
    ];
    let output = patchall::spawn(move || {
        // A pidfd is open while another coroutine waits for a child.
        let waiter =
            patchall::spawn(|| waitpid(sh("sleep 0.3"), 0).map(|(_, s)| exit_code(s))).unwrap();
        patchall::yield_now();
        let mut out = [0; 2];
        // SAFETY: pipe2 writes two fds.
        assert_eq!(unsafe { libc::pipe2(out.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let argv: Vec<*const libc::c_char> = argv_owned
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        // SAFETY: the child only dup2s and execs (async-signal-safe), or exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::dup2(out[1], 1);
                libc::execv(c"/bin/sh".as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        assert!(pid > 0, "fork failed");
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(out[1]) };
        // SAFETY: the read end is ours; File closes it.
        let mut reader = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(out[0]) });
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        let status = waitpid(pid, 0).map(|(r, s)| (r == pid, exit_code(s)));
        assert_eq!(waiter.join().unwrap(), Ok(Some(0)));
        (text, status)
    })
    .unwrap()
    .join()
    .unwrap();
    let (text, status) = output;
    assert_eq!(status, Ok((true, Some(0))), "{text}");
    for name in INTERNAL {
        assert!(
            !text.contains(name),
            "the exec'd program inherited a {name} fd:\n{text}"
        );
    }
    assert!(
        text.contains(&format!(" {inherited} -> pipe:")),
        "the inherited pipe is missing:\n{text}"
    );
    assert_eq!(
        fdinfo_flags(&text) & libc::O_NONBLOCK,
        0,
        "the exec'd program sees our O_NONBLOCK:\n{text}"
    );
    // The open file is shared: the parent's still reads its data right.
    // SAFETY: a one-byte write to our pipe.
    unsafe { libc::write(w, b"y".as_ptr().cast(), 1) };
    let got = patchall::spawn(move || {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        let n = unsafe { libc::read(inherited, b.as_mut_ptr().cast(), 1) };
        (n, b[0])
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(got, (1, b'y'));
    for fd in [inherited, w] {
        // SAFETY: our pipe.
        unsafe { libc::close(fd) };
    }
}

#[test]
fn posix_spawn_hands_the_users_flags_to_the_program() {
    let _serial = serial();
    let (r, w) = waited_pipe();
    // SAFETY: dup of our fd; Command owns and closes the copy.
    let copy = unsafe { OwnedFd::from_raw_fd(libc::dup(r)) };
    let out = patchall::spawn(move || {
        Command::new("sh")
            .args(["-c", "ls -l /proc/self/fd; cat /proc/self/fdinfo/0"])
            .stdin(Stdio::from(copy))
            .output()
            .unwrap()
    })
    .unwrap()
    .join()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in INTERNAL {
        assert!(
            !text.contains(name),
            "the spawned program inherited a {name} fd:\n{text}"
        );
    }
    assert_eq!(
        fdinfo_flags(&text) & libc::O_NONBLOCK,
        0,
        "stdin has our O_NONBLOCK:\n{text}"
    );
    assert_eq!(
        // SAFETY: F_GETFL through the hook: the user's flags.
        unsafe { libc::fcntl(r, libc::F_GETFL) } & libc::O_NONBLOCK,
        0
    );
    for fd in [r, w] {
        // SAFETY: our pipe.
        unsafe { libc::close(fd) };
    }
}

#[test]
fn waits_for_any_child_in_a_process_of_their_own() {
    let _serial = serial();
    let name = "any_child_scenario";
    assert_passed(name, &run(ignored_test(name)));
}

#[test]
#[ignore = "run by waits_for_any_child_in_a_process_of_their_own"]
fn any_child_scenario() {
    let scenario = || {
        let a = sh("sleep 0.1; exit 1");
        let mut status = 0;
        // SAFETY: valid out-pointer.
        let by_wait = (unsafe { libc::wait(&mut status) } == a, exit_code(status));
        let b = sh("sleep 0.1; exit 2");
        let by_waitpid = waitpid(-1, 0).map(|(r, s)| (r == b, exit_code(s)));
        let c = sh("sleep 0.1; exit 3");
        // SAFETY: zeroed rusage is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointers.
        let by_wait3 = (
            unsafe { wait3(&mut status, 0, &mut usage) } == c,
            exit_code(status),
        );
        // SAFETY: valid out-pointer.
        let none_left = outcome(unsafe { libc::wait(&mut status) });
        (by_wait, by_waitpid, by_wait3, none_left)
    };
    let before = patchall::offloaded_calls();
    let (inside, ticks) = with_ticker(scenario);
    let offloaded = patchall::offloaded_calls() - before;
    let outside = scenario();
    assert_eq!(
        inside,
        (
            (true, Some(1)),
            Ok((true, Some(2))),
            (true, Some(3)),
            Err(libc::ECHILD)
        )
    );
    assert_eq!(inside, outside);
    assert!(
        ticks >= 30,
        "the waits blocked the thread: {ticks} ticks in 3 x 100 ms"
    );
    assert!(offloaded >= 4, "only {offloaded} waits ran on the pool");
}

#[test]
fn fork_child_starts_over_in_a_process_of_its_own() {
    let _serial = serial();
    let name = "fork_child_scenario";
    assert_passed(name, &run(ignored_test(name)));
}

/// Reads everything from `fd` until EOF (a plain thread's blocking reads).
fn drain(fd: i32) -> Vec<u8> {
    // SAFETY: the caller's fd; File closes it.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

#[test]
#[ignore = "run by fork_child_starts_over_in_a_process_of_its_own"]
fn fork_child_scenario() {
    let mut log = [0; 2];
    let mut report = [0; 2];
    // SAFETY: pipe2 writes two fds.
    unsafe {
        assert_eq!(libc::pipe2(log.as_mut_ptr(), libc::O_CLOEXEC), 0);
        assert_eq!(libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC), 0);
    }
    let (log_w, report_w) = (log[1], report[1]);
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let log_reader = std::thread::spawn(move || drain(log[0]));
    let report_reader = std::thread::spawn(move || drain(report[0]));

    // A sibling that logs the pid it runs in, every 2 ms, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let sibling = patchall::spawn(move || {
        while !s.load(SeqCst) {
            // SAFETY: getpid has no preconditions; writing 4 bytes to our pipe.
            unsafe {
                let pid = libc::getpid().to_ne_bytes();
                libc::write(log_w, pid.as_ptr().cast(), 4);
            }
            patchall::sleep(Duration::from_millis(2));
        }
    })
    .unwrap();

    let child = patchall::spawn(move || {
        patchall::sleep(Duration::from_millis(20));
        // SAFETY: the child runs only this closure's code, then exits.
        let pid = unsafe { libc::fork() };
        if pid != 0 {
            return pid;
        }
        // The child: plain code now, with a fresh runtime when it spawns.
        let mut ok = !patchall::in_coroutine();
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(10));
        ok &= start.elapsed() >= Duration::from_millis(10);
        let start = Instant::now();
        let sleepers: Vec<_> = (0..3)
            .map(|_| patchall::spawn(|| patchall::sleep(Duration::from_millis(60))).unwrap())
            .collect();
        patchall::join_all(sleepers);
        let took = start.elapsed();
        ok &= took >= Duration::from_millis(60) && took < Duration::from_millis(170);
        let verdict: &[u8] = if ok { b"ok" } else { b"bad" };
        // SAFETY: writing to our pipe.
        unsafe { libc::write(report_w, verdict.as_ptr().cast(), verdict.len()) };
        // Returning ends the forking coroutine: the child exits with 0.
        0
    })
    .unwrap();
    let pid = child.join().unwrap();
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != me {
        // The child came back into the parent's code: it must have exited.
        // SAFETY: writing to our pipe, then leaving at once.
        unsafe {
            libc::write(
                report_w,
                b" and returned into the parent's code".as_ptr().cast(),
                36,
            );
            libc::_exit(3);
        }
    }
    assert!(pid > 0, "fork failed");
    let status = patchall::spawn(move || waitpid(pid, 0).map(|(_, s)| exit_code(s)))
        .unwrap()
        .join()
        .unwrap();
    patchall::sleep(Duration::from_millis(20));
    stop.store(true, SeqCst);
    sibling.join().unwrap();
    // SAFETY: closing our write ends, so the readers see EOF.
    unsafe {
        libc::close(log_w);
        libc::close(report_w);
    }
    let report = report_reader.join().unwrap();
    let log = log_reader.join().unwrap();
    assert_eq!(status, Ok(Some(0)), "the child did not exit with 0");
    assert_eq!(
        String::from_utf8_lossy(&report),
        "ok",
        "the child's checks failed"
    );
    let pids: Vec<i32> = log
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    assert!(
        pids.len() >= 10,
        "the sibling barely ran: {} records",
        pids.len()
    );
    assert!(
        !pids.contains(&pid),
        "the parent's other coroutine ran in the child"
    );
}

/// tests/c/probe_offload.c under the preload with green threads on: `main` is
/// a coroutine, so each of its calls (DNS from /etc/hosts, files, waits,
/// fork, exec, posix_spawn) takes the in-coroutine path, in each file mode,
/// and the output must be the plain run's (tests/c/probe_offload.expected).
#[test]
fn every_offloadable_call_from_a_green_main_reads_as_plain() {
    let _serial = serial();
    let expected = std::fs::read_to_string(root().join("tests/c/probe_offload.expected")).unwrap();
    let probe = c_program("probe_offload");
    for files in ["auto", "always", "off"] {
        let dir = TempDir::new("green-probe");
        let mut cmd = Command::new(&probe);
        cmd.arg(dir.path())
            .env("LD_PRELOAD", preload_lib())
            .env("PATCHALL_GREEN_THREADS", "1")
            .env("PATCHALL_OFFLOAD_FILES", files);
        let out = run(cmd);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "files={files}: {out:?}"
        );
        assert!(
            out.stdout == expected,
            "files={files}: differs from probe_offload.expected{}",
            common::first_difference(&expected, &out.stdout)
        );
    }
}

#[test]
fn system_parks_while_others_run() {
    let _serial = serial();
    let run = |cmd: &'static CStr| {
        // SAFETY: a NUL-terminated command.
        unsafe { libc::system(cmd.as_ptr()) }
    };
    // Inside: the wait for the shell parks, the ticker goes on; the status
    // is the shell's, SIGINT is back to its action afterwards.
    let (status, ticks) = with_ticker(move || run(c"sleep 0.3; exit 3"));
    assert_eq!(exit_code(status), Some(3), "{status:#x}");
    assert!(ticks >= 3, "the other coroutine ran only {ticks} times");
    // SAFETY: querying the current action into a zeroed struct.
    let int = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old);
        old.sa_sigaction
    };
    assert_eq!(int, libc::SIG_DFL);
    // Outside: glibc's own, the same statuses.
    assert_eq!(exit_code(run(c"exit 5")), Some(5));
    let (inside, _) = with_ticker(move || run(c"exit 5"));
    assert_eq!(exit_code(inside), Some(5));
    let (no_shell_check, _) = with_ticker(|| {
        // SAFETY: a null command asks whether a shell exists.
        unsafe { libc::system(std::ptr::null()) }
    });
    // SAFETY: as above.
    assert_eq!(no_shell_check, unsafe { libc::system(std::ptr::null()) });
}
