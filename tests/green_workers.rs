//! Green threads over many workers (`PATCHALL_WORKERS`): a C thread-per-
//! connection echo server serves 500 clients with 1 and with 2 workers, every
//! byte echoed, a mutex-guarded counter exact, a condition variable and joins
//! across workers, on at most 2 + workers OS threads; the pthread semantics
//! program reads the same with 2 workers as natively.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{RUN_LIMIT, c_program, preload_lib, root};

const CLIENTS: usize = 500;
const LINES: usize = 4;

/// Kills the server if a test fails before it exits.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command for `program` under the preload with green threads, `workers`
/// of them, and no other `PATCHALL_*` setting from the caller.
fn green(program: &str, workers: usize) -> Command {
    let mut cmd = Command::new(c_program(program));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PATCHALL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LD_PRELOAD", preload_lib())
        .env("PATCHALL_GREEN_THREADS", "1")
        .env("PATCHALL_WORKERS", workers.to_string());
    cmd
}

fn line_for(c: usize, i: usize) -> Vec<u8> {
    let len = (c * 7919 + i * 104_729) % 6000;
    let mut line = format!("client {c} line {i}: ").into_bytes();
    line.extend((0..len).map(|k| b'a' + ((c + i + k) % 26) as u8));
    line.push(b'\n');
    line
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .expect("Threads in /proc/PID/status")
}

/// Runs the C echo server with `workers`; returns its report and the OS
/// threads it had while it held every client.
fn echo_with(workers: usize) -> (String, usize) {
    let mut cmd = green("green_echo_workers", workers);
    cmd.arg(CLIENTS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut server = Server(cmd.spawn().expect("start the C echo server"));
    let mut out = BufReader::new(server.0.stdout.take().unwrap());
    let port = common::port_line(&mut out);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Each client connects (at most 100 ahead of those served, within the
    // backlog), checks one echo, waits until all are held, then sends the rest.
    let served = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (served, go) = (served.clone(), go.clone());
            patchall::spawn(move || -> io::Result<usize> {
                while served.load(SeqCst) + 100 <= c {
                    patchall::sleep(Duration::from_millis(1));
                }
                let stream = TcpStream::connect(addr)?;
                let mut reader = BufReader::new(&stream);
                let mut writer = &stream;
                let mut bytes = 0;
                for i in 0..LINES {
                    let line = line_for(c, i);
                    writer.write_all(&line)?;
                    let mut back = Vec::with_capacity(line.len());
                    reader.read_until(b'\n', &mut back)?;
                    assert!(back == line, "client {c} line {i}: wrong echo");
                    bytes += line.len();
                    if i == 0 {
                        served.fetch_add(1, SeqCst);
                        while !go.load(SeqCst) {
                            patchall::sleep(Duration::from_millis(5));
                        }
                    }
                }
                Ok(bytes)
            })
            .unwrap()
        })
        .collect();
    let start = Instant::now();
    while served.load(SeqCst) < CLIENTS {
        assert!(
            start.elapsed() < RUN_LIMIT,
            "only {served:?} clients served"
        );
        patchall::sleep(Duration::from_millis(10));
    }
    let held_threads = threads_of(server.0.id());
    go.store(true, SeqCst);
    let echoed: usize = patchall::join_all(clients)
        .into_iter()
        .map(|r| r.unwrap_or_else(|p| std::panic::resume_unwind(p)).unwrap())
        .sum();
    let expected: usize = (0..CLIENTS)
        .flat_map(|c| (0..LINES).map(move |i| line_for(c, i).len()))
        .sum();
    assert_eq!(echoed, expected, "bytes echoed to the clients");

    let mut report = String::new();
    out.read_to_string(&mut report).unwrap();
    while server.0.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < RUN_LIMIT, "the server did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}: {report}");
    (report, held_threads)
}

fn field(report: &str, name: &str) -> usize {
    report
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in {report:?}"))
}

fn thread_per_connection_echo(workers: usize) {
    let (report, threads) = echo_with(workers);
    eprintln!("{workers} worker(s): {threads} OS threads holding {CLIENTS} clients\n{report}");
    let bytes: usize = (0..CLIENTS)
        .flat_map(|c| (0..LINES).map(move |i| line_for(c, i).len()))
        .sum();
    assert_eq!(field(&report, "clients"), CLIENTS);
    assert_eq!(
        field(&report, "lines"),
        CLIENTS * LINES,
        "mutex-guarded counter"
    );
    assert_eq!(field(&report, "joined lines"), CLIENTS * LINES);
    assert_eq!(field(&report, "bytes"), bytes);
    assert_eq!(field(&report, "serving os threads"), workers, "{report}");
    assert!(threads <= 2 + workers, "{threads} OS threads");
}

#[test]
fn thread_per_connection_echo_on_one_worker() {
    thread_per_connection_echo(1);
}

#[test]
fn thread_per_connection_echo_on_two_workers() {
    thread_per_connection_echo(2);
}

#[test]
fn pthread_semantics_hold_across_two_workers() {
    let want = std::fs::read_to_string(root().join("tests/c/green_semantics.expected")).unwrap();
    let out = common::run(green("green_semantics", 2));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, want, "stderr: {}", out.stderr);
}

/// A typo in PATCHALL_WORKERS (it used to abort on a capacity overflow) warns
/// once and leaves green threads on their default, one OS thread.
#[test]
fn an_absurd_worker_count_warns_and_uses_the_default() {
    let out = common::run({
        let mut cmd = green("green_sleepers", 1);
        cmd.env("PATCHALL_WORKERS", "99999999999");
        // As below: no offload thread in the count.
        cmd.env("PATCHALL_OFFLOAD_FILES", "off");
        cmd
    });
    assert!(out.status.success(), "{out:?}");
    assert_eq!(field(&out.stdout, "finished"), 1000, "{out:?}");
    assert_eq!(field(&out.stdout, "threads while sleeping"), 1, "{out:?}");
    let warning =
        "patchall: ignoring bad value PATCHALL_WORKERS=\"99999999999\"; using the default\n";
    assert_eq!(out.stderr.matches(warning).count(), 1, "{out:?}");
}

#[test]
fn green_threads_spread_over_the_workers() {
    // A thousand sleeping threads: main's OS thread and one worker hold them.
    // Its stdio read of /proc is trapped and handled as a hooked `read`,
    // which the offload pool would make on a thread of its own.
    let mut cmd = green("green_sleepers", 2);
    cmd.env("PATCHALL_OFFLOAD_FILES", "off");
    let out = common::run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(field(&out.stdout, "finished"), 1000, "{out:?}");
    assert_eq!(field(&out.stdout, "threads while sleeping"), 2, "{out:?}");
}
