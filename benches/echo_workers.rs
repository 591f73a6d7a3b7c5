//! The echo server on 1 and on 2 workers, in one run: round trips per second
//! and the server's CPU seconds per 100,000 requests.
//!
//! ```text
//! cargo bench --bench echo_workers                  # 100 connections x 2,000 round trips
//! cargo bench --bench echo_workers -- 50 1000       # CONNECTIONS ROUNDS
//! ```
//!
//! Builds `examples/echo_server.rs` (release), starts it with `--workers 1`,
//! then `--workers 2`; each time the load generator (this process: the
//! connections are coroutines of one OS thread) opens every connection, then
//! each sends a 32-byte line and waits for its echo, ROUNDS times. The
//! server's CPU is utime + stime of all its threads (/proc/PID/stat) over the
//! timed part. Bounded: at most CONNECTIONS x ROUNDS requests and 120 s each.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn echo_server() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--message-format=json"])
        .args(["--example", "echo_server", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"name\":\"echo_server\"") && l.contains("compiler-artifact"))
        .find_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let len = l[start..].find('"')?;
            Some(PathBuf::from(&l[start..start + len]))
        })
        .expect("cargo named the echo_server binary")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of a process, all threads, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[0] + f[1]) as f64 / ticks
}

fn run(bin: &PathBuf, workers: usize, conns: usize, rounds: usize) {
    let mut child = Command::new(bin)
        .args(["--addr", "127.0.0.1:0", "--workers", &workers.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start echo_server");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let server = Server(child);
    let addr: SocketAddr = first.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let streams: Vec<TcpStream> = (0..conns)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let started = Instant::now();
    let cpu_before = cpu_seconds(server.0.id());
    let hs: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            patchall::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut writer = &stream;
                let line = b"0123456789abcdef0123456789abcde\n";
                let mut back = Vec::with_capacity(line.len());
                for _ in 0..rounds {
                    if started.elapsed() > LIMIT {
                        panic!("the load took longer than {LIMIT:?}");
                    }
                    writer.write_all(line).unwrap();
                    back.clear();
                    reader.read_until(b'\n', &mut back).unwrap();
                    assert_eq!(back, line);
                }
            })
            .unwrap()
        })
        .collect();
    for r in patchall::join_all(hs) {
        r.unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.0.id()) - cpu_before;
    let requests = (conns * rounds) as f64;
    println!(
        "workers {workers}: {requests} round trips in {secs:.2} s = {:.0}/s; server CPU {cpu:.2} s = {:.2} s per 100k requests",
        requests / secs,
        cpu / requests * 100_000.0
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let conns = args.first().copied().unwrap_or(100);
    let rounds = args.get(1).copied().unwrap_or(2_000);
    let bin = echo_server();
    for workers in [1, 2] {
        run(&bin, workers, conns, rounds);
    }
}
