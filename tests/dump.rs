//! The dump of every coroutine from unmodified C programs under the preload:
//! on `PATCHALL_DUMP_SIGNAL` (a green thread-per-connection echo server with
//! 100 idle clients), at exit (`PATCHALL_DUMP=exit`, `PATCHALL_STATS=1`), and
//! from the C API (`pa_print_run_info`).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{TempDir, c_program, cc, preload_lib, root, run};

const CLIENTS: usize = 100;

fn green(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LD_PRELOAD", preload_lib())
        .env("PATCHALL_GREEN_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// True if `pid` has a handler installed for `sig` (SigCgt in /proc).
fn catches(pid: u32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (sig - 1)) != 0
}

/// Reads the dump's lines from `err` (the header says how many coroutines
/// follow); gives up after 20 s.
fn read_dump(err: &mut impl BufRead) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    let mut expected = None;
    while Instant::now() < deadline {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let line = line.trim_end().to_string();
        if expected.is_none() {
            if let Some(rest) = line.strip_prefix("patchall: run info of process ") {
                let n: usize = rest
                    .rsplit(", ")
                    .next()
                    .and_then(|s| s.split(' ').next())
                    .and_then(|s| s.parse().ok())
                    .expect("a coroutine count");
                expected = Some(n);
                lines.push(line);
                if n == 0 {
                    break;
                }
            }
            continue;
        }
        let done = line.starts_with("  coroutine ");
        lines.push(line);
        let listed = lines
            .iter()
            .filter(|l| l.starts_with("  coroutine "))
            .count();
        if done && Some(listed) == expected {
            break;
        }
    }
    lines
}

/// The fd in a line `...: parked in CALL (fd N, read)...`, if it parks in `call`.
fn parked_fd(line: &str, call: &str) -> Option<i32> {
    let rest = line.split(&format!(": parked in {call} (fd ")).nth(1)?;
    let (fd, rest) = rest.split_once(", ")?;
    rest.starts_with("read)").then(|| fd.parse().ok())?
}

struct Echo {
    child: Child,
    port: u16,
}

/// echo_threads, compiled once: tests run in parallel, and a program being
/// rewritten cannot be started (ETXTBSY).
fn echo_program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| c_program("echo_threads"))
}

fn start_echo(extra: &[(&str, &str)]) -> Echo {
    let mut cmd = green(echo_program());
    cmd.envs(extra.iter().copied());
    let mut child = cmd.spawn().expect("start echo_threads");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = common::port_line(&mut out);
    Echo { child, port }
}

impl Echo {
    /// Connects `n` clients, each echoed once (so its green thread has
    /// started and parked in read again).
    fn idle_clients(&self, n: usize) -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                c.write_all(b"hi").unwrap();
                let mut buf = [0u8; 2];
                c.read_exact(&mut buf).unwrap();
                c
            })
            .collect()
    }

    fn quit(mut self, clients: Vec<TcpStream>) -> String {
        drop(clients);
        let mut q = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        q.write_all(b"QUIT\n").unwrap();
        drop(q);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "echo_threads did not quit");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        err
    }
}

#[test]
fn a_signal_lists_a_hundred_readers_and_the_acceptor() {
    let echo = start_echo(&[("PATCHALL_DUMP_SIGNAL", "SIGUSR2")]);
    let clients = echo.idle_clients(CLIENTS);
    let pid = echo.child.id();
    assert!(catches(pid, libc::SIGUSR2));
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR2) }, 0);
    let mut echo = echo;
    let mut err = BufReader::new(echo.child.stderr.take().unwrap());
    let dump = read_dump(&mut err);
    let text = dump.join("\n");

    let readers: Vec<i32> = dump.iter().filter_map(|l| parked_fd(l, "read")).collect();
    assert_eq!(readers.len(), CLIENTS, "{text}");
    let fds: BTreeSet<i32> = readers.iter().copied().collect();
    assert_eq!(fds.len(), CLIENTS, "each reader on its own fd:\n{text}");
    // The readers all started in the same routine, named alike.
    let routine = |l: &str| {
        l.split(": parked")
            .next()
            .unwrap()
            .split_whitespace()
            .nth(2)
            .map(String::from)
    };
    let routines: BTreeSet<_> = dump
        .iter()
        .filter(|l| parked_fd(l, "read").is_some())
        .map(|l| routine(l))
        .collect();
    assert_eq!(routines.len(), 1, "{text}");
    // Named from the program's symbol table: `serve` is static there.
    assert!(routines.iter().flatten().all(|r| r == "serve"), "{text}");
    // main, in accept on the listener, which is none of the clients' fds.
    let acceptor: Vec<_> = dump.iter().filter(|l| l.contains(" \"main\": ")).collect();
    assert_eq!(acceptor.len(), 1, "{text}");
    let listener = parked_fd(acceptor[0], "accept").unwrap_or_else(|| panic!("{text}"));
    assert!(!fds.contains(&listener), "{text}");
    // The waits are timed: every client had been idle a little while.
    assert!(
        dump.iter()
            .filter(|l| parked_fd(l, "read").is_some())
            .all(|l| l.contains(" for ") && l.ends_with(" s")),
        "{text}"
    );

    // The program goes on as before.
    echo.child.stderr = Some(err.into_inner());
    let rest = echo.quit(clients);
    assert!(
        !rest.contains("patchall: run info"),
        "one dump only: {rest}"
    );
}

#[test]
fn without_the_variable_no_signal_is_taken() {
    let echo = start_echo(&[]);
    let clients = echo.idle_clients(2);
    assert!(!catches(echo.child.id(), libc::SIGUSR2));
    assert!(!catches(echo.child.id(), libc::SIGQUIT));
    let err = echo.quit(clients);
    assert!(!err.contains("patchall:"), "{err}");
}

/// Under the plain preload nothing is a coroutine, but the signal named is
/// still taken from the start (its default action would end the program).
#[test]
fn without_coroutines_the_signal_is_taken_and_the_dump_is_empty() {
    let mut cmd = green(echo_program());
    cmd.env_remove("PATCHALL_GREEN_THREADS")
        .env("PATCHALL_DUMP_SIGNAL", "SIGUSR2");
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = common::port_line(&mut out);
    let echo = Echo { child, port };
    let clients = echo.idle_clients(2);
    assert!(catches(echo.child.id(), libc::SIGUSR2));
    assert_eq!(
        // SAFETY: signals our own child.
        unsafe { libc::kill(echo.child.id() as i32, libc::SIGUSR2) },
        0
    );
    let mut echo = echo;
    let mut err = BufReader::new(echo.child.stderr.take().unwrap());
    let dump = read_dump(&mut err);
    assert!(dump[0].ends_with(": 0 workers, 0 coroutines"), "{dump:?}");
    echo.child.stderr = Some(err.into_inner());
    let rest = echo.quit(clients);
    assert!(!rest.contains("patchall:"), "{rest}");
}

#[test]
fn sigquit_dumps_too_and_the_program_goes_on() {
    let echo = start_echo(&[("PATCHALL_DUMP_SIGNAL", "QUIT")]);
    let clients = echo.idle_clients(3);
    assert_eq!(
        // SAFETY: signals our own child.
        unsafe { libc::kill(echo.child.id() as i32, libc::SIGQUIT) },
        0
    );
    let mut echo = echo;
    let mut err = BufReader::new(echo.child.stderr.take().unwrap());
    let dump = read_dump(&mut err);
    let readers = dump
        .iter()
        .filter(|l| parked_fd(l, "read").is_some())
        .count();
    assert_eq!(readers, 3, "{}", dump.join("\n"));
    echo.child.stderr = Some(err.into_inner());
    echo.quit(clients);
}

#[test]
fn at_exit_the_dump_lists_the_waits_and_stats_count_the_threads() {
    let mut cmd = green(&c_program("parked_exit"));
    cmd.env("PATCHALL_DUMP", "exit").env("PATCHALL_STATS", "1");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut readers = BTreeSet::new();
    let mut listener = None;
    for line in out.stdout.lines() {
        if let Some(fd) = line.strip_prefix("reader ") {
            readers.insert(fd.parse::<i32>().unwrap());
        } else if let Some(fd) = line.strip_prefix("listener ") {
            listener = Some(fd.parse::<i32>().unwrap());
        }
    }
    assert_eq!(readers.len(), 6, "{}", out.stdout);
    let err = &out.stderr;
    let parked: BTreeSet<i32> = err.lines().filter_map(|l| parked_fd(l, "read")).collect();
    assert_eq!(parked, readers, "{err}");
    let accepting: Vec<_> = err.lines().filter_map(|l| parked_fd(l, "accept")).collect();
    assert_eq!(accepting, [listener.unwrap()], "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.contains(": parked in mutex (0x"))
            .count(),
        1,
        "{err}"
    );
    // main called exit(): it is the one running.
    assert!(
        err.lines().any(|l| l.contains(" \"main\": running")),
        "{err}"
    );
    // main, 6 readers, the acceptor and the locker: all alive at once.
    assert!(err.contains("\n  coroutines created  9\n"), "{err}");
    assert!(err.contains("\n  peak live           9\n"), "{err}");
    assert!(
        err.contains("  longest hold        ") && !err.contains("not timed"),
        "{err}"
    );
}

#[test]
fn pa_print_run_info_lists_named_and_unnamed_coroutines() {
    let dir = TempDir::new("run-info-capi");
    let lib_dir = preload_lib().parent().expect("library directory");
    let bin = dir.path().join("run_info_capi");
    let include = format!("-I{}", root().join("include").display());
    let lib_path = format!("-L{}", lib_dir.display());
    cc(
        &root().join("tests/c/run_info_capi.c"),
        &bin,
        &[
            &include,
            "-Wextra",
            "-Werror",
            "-rdynamic",
            &lib_path,
            "-lpatchall",
        ],
    );
    let mut cmd = Command::new(&bin);
    cmd.env("LD_LIBRARY_PATH", lib_dir);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = &out.stdout;
    let fd: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("reader fd "))
        .and_then(|n| n.parse().ok())
        .expect("the reader's fd");
    let reader = text
        .lines()
        .find(|l| l.contains(" \"reader\" reader_main: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(parked_fd(reader, "read"), Some(fd), "{reader}");
    let napper = text
        .lines()
        .find(|l| l.starts_with("  coroutine ") && l.contains(" nap: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        napper.contains(": parked in sleep (deadline in 0.2"),
        "{napper}"
    );
    assert!(text.ends_with("done\n"), "{text}");
}

/// The dump thread is the runtime's: a green `main` that ends with
/// `pthread_exit` still ends the process once its green threads have.
#[test]
fn a_main_that_calls_pthread_exit_still_ends_with_the_dump_thread_running() {
    let mut cmd = green(&c_program("green_main_exit"));
    cmd.env("PATCHALL_DUMP_SIGNAL", "SIGUSR2");
    let out = common::run_limited(cmd, Duration::from_secs(20)).expect("ends within 20 s");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.ends_with("atexit handler\n"), "{out:?}");
}
