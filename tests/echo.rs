//! The echo examples, run as the programs they are: echo_server holds 200, then
//! 1,000 concurrent clients on one OS thread and echoes every byte, and does the
//! same for 200 clients on two workers, both serving; echo_client turns stdin
//! lines into echoes on stdout.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// Builds an example with the cargo running these tests (quick when up to date)
/// and returns the path of its binary.
fn example(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json",
        "--example",
        name,
    ])
    .arg("--manifest-path")
    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = format!("\"name\":\"{name}\"");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains(&target))
        .find_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let len = l[start..].find('"')?;
            Some(PathBuf::from(&l[start..start + len]))
        })
        .unwrap_or_else(|| panic!("cargo named no binary for example {name}"))
}

/// A running echo_server on a free port; killed when dropped, so a failing test
/// leaves none behind.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The rest of its stdout, kept open so that its later lines find a reader.
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start() -> Server {
        Server::with_args(&[])
    }

    fn with_args(args: &[&str]) -> Server {
        let mut child = Command::new(example("echo_server"))
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("echo_server starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let addr = first
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        Server {
            child,
            addr,
            stdout,
        }
    }

    /// Kills the server and returns what it printed after its address.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        io::Read::read_to_string(&mut self.stdout, &mut rest).unwrap();
        rest
    }

    /// A number from /proc/<pid>/status, e.g. "Threads".
    fn status(&self, field: &str) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in the server's status"))
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Line `i` of client `c`: distinct for every pair, of varied length below
/// `max_len` so that reads and writes end at every kind of boundary.
fn line_for(c: usize, i: usize, max_len: usize) -> Vec<u8> {
    let len = (c * 7919 + i * 104_729) % max_len;
    let mut line = format!("client {c} line {i}: ").into_bytes();
    line.extend((0..len).map(|k| b'a' + ((c + i + k) % 26) as u8));
    line.push(b'\n');
    line
}

/// What the server looked like while it held every client at once.
struct Held {
    threads: usize,
    open_fds: usize,
}

/// Runs `n` client coroutines on this thread. Each connects (at most 100 ahead
/// of those already served, within std's listen backlog of 128), checks one
/// echo, and waits; once all `n` are connected and served at once the server is
/// measured; then each sends `lines` more lines and checks every byte.
fn clients(server: &Server, n: usize, lines: usize, max_len: usize) -> Held {
    const AHEAD: usize = 100;
    let limit = Duration::from_secs(60);
    let addr = server.addr;
    let served = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..n)
        .map(|c| {
            let (served, go) = (served.clone(), go.clone());
            patchall::spawn(move || -> io::Result<usize> {
                while served.load(SeqCst) + AHEAD <= c {
                    patchall::sleep(Duration::from_millis(1));
                }
                let stream = TcpStream::connect(addr)?;
                let mut reader = BufReader::new(&stream);
                let mut writer = &stream;
                let mut round = |i: usize| -> io::Result<usize> {
                    let line = line_for(c, i, max_len);
                    writer.write_all(&line)?;
                    let mut back = Vec::with_capacity(line.len());
                    reader.read_until(b'\n', &mut back)?;
                    assert!(
                        back == line,
                        "client {c} line {i}: {} bytes came back for {}",
                        back.len(),
                        line.len()
                    );
                    Ok(line.len())
                };
                let mut bytes = round(0)?;
                served.fetch_add(1, SeqCst);
                while !go.load(SeqCst) {
                    patchall::sleep(Duration::from_millis(5));
                }
                for i in 1..=lines {
                    bytes += round(i)?;
                }
                Ok(bytes)
            })
            .unwrap()
        })
        .collect();
    let start = Instant::now();
    while served.load(SeqCst) < n {
        assert!(
            start.elapsed() < limit,
            "only {} of {n} clients were served",
            served.load(SeqCst)
        );
        patchall::sleep(Duration::from_millis(10));
    }
    let held = Held {
        threads: server.status("Threads"),
        open_fds: server.open_fds(),
    };
    go.store(true, SeqCst);
    let expected: usize = (0..n)
        .map(|c| {
            (0..=lines)
                .map(|i| line_for(c, i, max_len).len())
                .sum::<usize>()
        })
        .sum();
    let echoed: usize = patchall::join_all(handles)
        .into_iter()
        .map(|r| r.unwrap_or_else(|p| std::panic::resume_unwind(p)).unwrap())
        .sum();
    assert_eq!(echoed, expected, "bytes echoed");
    assert!(start.elapsed() < limit, "took {:?}", start.elapsed());
    held
}

#[test]
fn two_hundred_clients_every_byte_echoed_by_one_thread() {
    let server = Server::start();
    let held = clients(&server, 200, 5, 16 * 1024);
    eprintln!(
        "200 clients: server threads {}, open fds {}",
        held.threads, held.open_fds
    );
    assert!(held.threads <= 2, "{} threads", held.threads);
    assert!(held.open_fds >= 200, "{} fds", held.open_fds);
}

#[test]
fn two_hundred_clients_every_byte_echoed_by_two_workers() {
    let server = Server::with_args(&["--workers", "2"]);
    let held = clients(&server, 200, 5, 16 * 1024);
    eprintln!(
        "200 clients, 2 workers: server threads {}, open fds {}",
        held.threads, held.open_fds
    );
    // main (joining the accept loops) and the two workers.
    assert!(held.threads <= 3, "{} threads", held.threads);
    assert!(held.open_fds >= 200, "{} fds", held.open_fds);
    let said = server.stop();
    for worker in 0..2 {
        assert!(
            said.contains(&format!("worker {worker} serves its first client")),
            "worker {worker} served no client; the server said {said:?}"
        );
    }
}

/// Raises the soft limit on open files to `want` (within the hard limit).
fn ensure_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= want,
        "RLIMIT_NOFILE {} < {want}",
        lim.rlim_cur
    );
}

#[test]
fn one_thread_holds_a_thousand_clients_at_once() {
    // The server inherits the limit: 1,000 clients each side, plus a margin.
    ensure_nofile(4096);
    let server = Server::start();
    let held = clients(&server, 1000, 2, 1024);
    eprintln!(
        "1,000 clients: server threads {}, open fds {}",
        held.threads, held.open_fds
    );
    assert!(held.threads <= 2, "{} threads", held.threads);
    assert!(
        held.open_fds >= 1000,
        "{} fds: not every client was held",
        held.open_fds
    );
}

#[test]
fn the_client_example_echoes_stdin_lines() {
    let server = Server::start();
    let mut input = String::from("hello\nsecond line\n\n");
    input.push_str(&"x".repeat(100_000));
    input.push_str("\nlast\n");
    let mut client = Command::new(example("echo_client"))
        .args(["--addr", &server.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("echo_client starts");
    let mut stdin = client.stdin.take().unwrap();
    let feed = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()))
    };
    let out = client.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        out.stdout == input.as_bytes(),
        "{} bytes of output",
        out.stdout.len()
    );

    // With the server gone the client reports the failure.
    let addr = server.addr.to_string();
    drop(server);
    let out = Command::new(example("echo_client"))
        .args(["--addr", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "connected to a stopped server?");
}
