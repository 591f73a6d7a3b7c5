//! Unmodified thread-per-connection C programs under `patchall run
//! --green-threads`: `tests/c/echo_threads.c` serving 2,000 concurrent clients on
//! the runtime's few OS threads (and natively, 200 clients, as the baseline),
//! and `examples/c/sleepy_threads.c`, 1,000 sleeping pthreads on one OS thread.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{c_program, cc, preload_lib, root};

const PATCHALL: &str = env!("CARGO_BIN_EXE_patchall");

/// Longest any phase (start, connect all, echo all, exit) may take.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// Bytes of a client's first round trip, made before it counts as connected.
const FIRST: usize = 64;
/// Bytes of its second round trip, made once every client is connected.
const SECOND: usize = 1000;

/// `patchall run --green-threads -- program args...`, or the program alone.
fn command(program: &Path, args: &[&str], green: bool) -> Command {
    let mut cmd = if green {
        // The launcher finds the library next to itself: build it there.
        assert_eq!(preload_lib().parent(), Path::new(PATCHALL).parent());
        let mut c = Command::new(PATCHALL);
        c.args(["run", "--green-threads", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).env_remove("LD_PRELOAD");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PATCHALL_") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// A running server; killed if the test ends before it exits.
struct Server {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
}

impl Server {
    /// Starts `cmd` and reads its first line, `port N`.
    fn start(mut cmd: Command) -> (Server, u16) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (line_tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = err_tx.send(text);
        });
        let server = Server {
            child,
            lines,
            stderr,
        };
        let first = server.lines.recv_timeout(PHASE_LIMIT);
        let port = first
            .as_deref()
            .ok()
            .and_then(|l| l.strip_prefix("port "))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("first line {first:?}, want `port N`"));
        (server, port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit; returns (exit code, the rest of stdout, stderr).
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for the server") {
                break s;
            }
            assert!(
                start.elapsed() < PHASE_LIMIT,
                "the server did not exit within {PHASE_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self.stderr.recv_timeout(PHASE_LIMIT).unwrap_or_default();
        let rest = self.lines.try_iter().collect();
        (status.code(), rest, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Threads:` of /proc/PID/status.
fn os_threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .expect("a Threads: line")
}

/// What a client sends in its second round trip: its own bytes, so a reply
/// crossed with another client's would not compare equal.
fn pattern(client: usize) -> Vec<u8> {
    (0..SECOND).map(|k| (client * 31 + k * 7) as u8).collect()
}

/// One client: a first round trip, then (once `go` is set) a second one, then
/// its half-close, answered by EOF. Returns bytes echoed.
fn client(
    port: u16,
    id: usize,
    connected: &AtomicUsize,
    go: &AtomicBool,
    abort: &AtomicBool,
) -> io::Result<usize> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(PHASE_LIMIT))?;
    let mut first = format!("client {id} says hello").into_bytes();
    first.resize(FIRST, b'.');
    let mut back = vec![0; FIRST];
    s.write_all(&first)?;
    s.read_exact(&mut back)?;
    if back != first {
        return Err(io::Error::other(format!("client {id}: first echo differs")));
    }
    connected.fetch_add(1, Ordering::SeqCst);
    while !go.load(Ordering::SeqCst) {
        if abort.load(Ordering::SeqCst) {
            return Err(io::Error::other("aborted"));
        }
        patchall::sleep(Duration::from_millis(5));
    }
    let second = pattern(id);
    let mut back = vec![0; SECOND];
    s.write_all(&second)?;
    s.read_exact(&mut back)?;
    if back != second {
        return Err(io::Error::other(format!(
            "client {id}: second echo differs"
        )));
    }
    s.shutdown(Shutdown::Write)?;
    if s.read(&mut [0; 16])? != 0 {
        return Err(io::Error::other(format!("client {id}: bytes after EOF")));
    }
    Ok(FIRST + SECOND)
}

/// Drives `clients` concurrent clients (coroutines of this thread) against the
/// server; returns the most OS threads the server had while they were
/// connecting, and its count once every one of them was connected.
fn drive(server: &Server, port: u16, clients: usize) -> (usize, usize) {
    let connected = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|id| {
            let (connected, go, abort) = (connected.clone(), go.clone(), abort.clone());
            patchall::spawn(move || client(port, id, &connected, &go, &abort))
                .expect("a coroutine per client")
        })
        .collect();
    let start = Instant::now();
    let mut most = 0;
    while connected.load(Ordering::SeqCst) < clients {
        most = most.max(os_threads(server.pid()));
        if start.elapsed() > PHASE_LIMIT {
            abort.store(true, Ordering::SeqCst);
            break;
        }
        // Drives the clients meanwhile.
        patchall::sleep(Duration::from_millis(10));
    }
    let all_connected = os_threads(server.pid());
    go.store(true, Ordering::SeqCst);
    let echoed: Vec<usize> = patchall::join_all(handles)
        .into_iter()
        .enumerate()
        .map(|(id, r)| match r {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("client {id}: {e}"),
            Err(_) => panic!("client {id} panicked"),
        })
        .collect();
    assert_eq!(echoed.len(), clients);
    assert!(echoed.iter().all(|&n| n == FIRST + SECOND));
    (most.max(all_connected), all_connected)
}

/// The server's last line once it has exited 0.
fn served(server: Server) -> String {
    let (code, rest, stderr) = server.finish();
    assert_eq!(code, Some(0), "stdout {rest:?}, stderr {stderr}");
    assert_eq!(rest.len(), 1, "stdout {rest:?}, stderr {stderr}");
    rest[0].clone()
}

/// 2,000 clients on green threads spread over `workers` schedulers: every byte
/// echoed, the mutex-guarded counter exact, the condvar shutdown clean, and no
/// more OS threads than the runtime's own.
fn two_thousand_clients(workers: usize) {
    const CLIENTS: usize = 2000;
    let program = c_program("echo_threads");
    let mut cmd = command(&program, &[], true);
    cmd.env("PATCHALL_WORKERS", workers.to_string());
    let (server, port) = Server::start(cmd);
    let (most, all_connected) = drive(&server, port, CLIENTS);
    // Natively that would be 2,001 threads: here, the runtime's own few.
    assert!(
        most <= 3 + workers,
        "{most} OS threads ({all_connected} with every client connected)"
    );
    // The QUIT path: the accept loop stops, main waits on its condvar.
    let mut quit = TcpStream::connect(("127.0.0.1", port)).expect("connect to quit");
    quit.write_all(b"QUIT\n").expect("send QUIT");
    drop(quit);
    assert_eq!(
        served(server),
        format!(
            "served {} bytes in {CLIENTS} connections",
            CLIENTS * (FIRST + SECOND)
        )
    );
}

#[test]
fn two_thousand_clients_on_green_threads() {
    two_thousand_clients(1);
}

/// Issue 9: the same server, the same test, its threads spread over 2 workers.
#[test]
fn two_thousand_clients_on_green_threads_over_two_workers() {
    two_thousand_clients(2);
}

#[test]
fn native_threads_baseline() {
    const CLIENTS: usize = 200;
    let program = c_program("echo_threads");
    // The LIMIT path: the accept loop stops after CLIENTS connections.
    let (server, port) = Server::start(command(&program, &["200"], false));
    let (_, all_connected) = drive(&server, port, CLIENTS);
    // main and one thread per client.
    assert!(all_connected > CLIENTS, "{all_connected} OS threads");
    assert_eq!(
        served(server),
        format!(
            "served {} bytes in {CLIENTS} connections",
            CLIENTS * (FIRST + SECOND)
        )
    );
}

/// `examples/c/sleepy_threads.c`, compiled into this test's temp directory.
fn sleepy_threads() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c");
    std::fs::create_dir_all(&dir).expect("create the C output directory");
    let out = dir.join("sleepy_threads");
    cc(
        &root().join("examples/c/sleepy_threads.c"),
        &out,
        &["-O2", "-Wextra", "-Werror"],
    );
    out
}

/// Runs sleepy_threads; returns (elapsed seconds, OS threads while sleeping).
fn run_sleepy(green: bool) -> (f64, usize) {
    let out = common::run(command(&sleepy_threads(), &[], green));
    assert!(out.status.success(), "green {green}: {out:?}");
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    let summary = lines.pop().expect("a summary line");
    lines.sort_unstable();
    let mut want: Vec<String> = (0..1000).map(|i| format!("thread {i} woke")).collect();
    want.sort_unstable();
    assert_eq!(lines, want, "green {green}: every thread woke once");
    // "1000 threads slept 1 s each in 1.04 s; OS threads while they slept: 1"
    let parsed = summary
        .strip_prefix("1000 threads slept 1 s each in ")
        .and_then(|s| s.split_once(" s; OS threads while they slept: "))
        .and_then(|(t, n)| Some((t.parse().ok()?, n.parse().ok()?)));
    parsed.unwrap_or_else(|| panic!("summary {summary:?}"))
}

#[test]
fn a_thousand_sleepy_threads_natively_and_green() {
    let (elapsed, threads) = run_sleepy(true);
    assert!(threads <= 4, "green: {threads} OS threads");
    // One after another they would take 1,000 s.
    assert!(elapsed < 3.0, "green: {elapsed} s");

    let (_, threads) = run_sleepy(false);
    assert!(threads >= 1000, "native: {threads} OS threads");
}
