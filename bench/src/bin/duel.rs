//! Two echo servers measured in turns, for the ratios scripts/bench's targets
//! are judged on.
//!
//! ```text
//! duel --port P --server-pid A --server NAME --vs-port Q --vs-pid B --vs-server NAME
//!      --conns C [--size 64] [--warmup 1] [--duration 6] [--slice 0.5]
//! ```
//!
//! Both servers run, each with C connections driven by a child process of
//! its own (`duel --follow`: one process may not hold both sets at 10,000,
//! and neither server's load should come from a process the other's lacks).
//! The load alternates between them every SLICE seconds, the first server
//! first: each has the machine in turn while the other idles, every
//! connection of the active one in closed loop as `loadgen` drives them. A
//! round trip in flight when its server's turn ends still completes, early in
//! the other's turn, and counts as its server's. Over the DURATION seconds
//! after the WARMUP (both rounded up to whole pairs of turns, so that each
//! server has half of the window) it counts each server's round trips and
//! reads its CPU time. Prints one JSON object.
//!
//! Why: measured one after the other, even back to back, two runs of the same
//! server on this shared machine differ by ±15 %; the host's contention comes
//! and goes over seconds. Alternating twice a second, both servers see the
//! same host, and the ratio of their counts is the comparison (two copies of
//! one server measure within a few per cent of each other, the one whose turn
//! comes first lower: scripts/bench runs each duel in both orders). The
//! absolute rates are `loadgen`'s to give.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use patchall_bench::closed_loop::Gen;
use patchall_bench::{Args, Json, cpu_seconds, machine_busy_seconds, own_cpu_seconds};

const USAGE: &str = "duel --port P --server-pid A --server NAME --vs-port Q --vs-pid B \
                     --vs-server NAME --conns C [--size 64] [--warmup 1] [--duration 6] \
                     [--slice 0.5]";

/// A driver's commands, one byte each on its stdin.
const GO: u8 = b'g';
const STOP: u8 = b's';
const COUNT: u8 = b'w';
const UNCOUNT: u8 = b'e';
const QUIT: u8 = b'q';

fn main() -> io::Result<()> {
    let args = Args::parse(USAGE);
    let port = |name: &str| -> u16 {
        args.required(name).parse().unwrap_or_else(|_| {
            eprintln!("usage: {USAGE}");
            std::process::exit(2)
        })
    };
    let conns: usize = args.get("conns", 100);
    let size: usize = args.get("size", 64);
    if args.get("follow", 0u8) == 1 {
        return follow(port("port"), conns, size);
    }
    let (a_port, b_port) = (port("port"), port("vs-port"));
    let (a_pid, b_pid): (u32, u32) = (args.get("server-pid", 0), args.get("vs-pid", 0));
    let (a_name, b_name) = (args.required("server"), args.required("vs-server"));
    let slice = Duration::from_secs_f64(args.get("slice", 0.5));
    // Whole pairs of slices: the window opens as the first server's turn
    // begins, and each has as many turns in it as the other.
    let pairs = |secs: f64| (secs / (2.0 * slice.as_secs_f64())).ceil().max(1.0) as u32;
    let warmup = 2 * slice * pairs(args.get("warmup", 1.0));
    let duration = 2 * slice * pairs(args.get("duration", 6.0));

    // Both sets are driven by children of the same code, so that neither
    // server's load comes from a process the other's does not have (this
    // one only keeps time).
    let mut drivers = [
        Driver::start(a_port, conns, size)?,
        Driver::start(b_port, conns, size)?,
    ];
    let connected = [drivers[0].ready()?, drivers[1].ready()?];
    let start = Instant::now();
    let (window_start, window_end) = (start + warmup, start + warmup + duration);
    // Where the time goes over the window: both servers, both drivers, and
    // whatever else the machine ran.
    let driver_pids = [drivers[0].pid(), drivers[1].pid()];
    let snapshot = || {
        let drivers_cpu: f64 = driver_pids.iter().filter_map(|&p| cpu_seconds(p)).sum();
        (
            cpu_seconds(a_pid),
            cpu_seconds(b_pid),
            drivers_cpu + own_cpu_seconds(),
            machine_busy_seconds(),
        )
    };
    drivers[0].command(GO)?;
    let mut turn = 0u32;
    let mut first = None;
    loop {
        let now = Instant::now();
        if first.is_none() && now >= window_start {
            first = Some(snapshot());
            for d in &mut drivers {
                d.command(COUNT)?;
            }
        }
        if now >= window_end {
            break;
        }
        let next_turn = start + slice * (turn + 1);
        if now < next_turn {
            let mut until = next_turn.min(window_end);
            if first.is_none() {
                until = until.min(window_start);
            }
            std::thread::sleep(until - now);
            continue;
        }
        // The one whose turn ends stops first: it starts no round trip more.
        drivers[(turn % 2) as usize].command(STOP)?;
        turn += 1;
        drivers[(turn % 2) as usize].command(GO)?;
    }
    let (a1, b1, g1, m1) = snapshot();
    for d in &mut drivers {
        d.command(UNCOUNT)?;
        d.command(STOP)?;
    }
    let mut done = [(0, 0); 2];
    for (d, slot) in drivers.into_iter().zip(&mut done) {
        *slot = d.finish()?;
    }
    let [(a_trips, a_errors), (b_trips, b_errors)] = done;
    let (a0, b0, g0, m0) = first.expect("the window opened before it closed");
    let secs = duration.as_secs_f64();
    let half = secs / 2.0;
    let cpu = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| y - x);
    let (a_cpu, b_cpu) = (cpu(a0, a1), cpu(b0, b1));
    let per_100k = |c: Option<f64>, t: u64| c.map(|c| c / (t.max(1) as f64) * 100_000.0);
    let others = cpu(m0, m1)
        .zip(a_cpu.zip(b_cpu))
        .map(|(busy, (a, b))| ((busy - a - b - (g1 - g0)) / secs).max(0.0));
    let report = Json::default()
        .str("a", &a_name)
        .str("b", &b_name)
        .num("conns", Some(conns as u32))
        .num("a_connected", Some(connected[0] as u32))
        .num("b_connected", Some(connected[1] as u32))
        .num("errors", Some((a_errors + b_errors) as f64))
        .num("slice_s", Some(slice.as_secs_f64()))
        .num("duration_s", Some(secs))
        .num("a_round_trips", Some(a_trips as f64))
        .num("b_round_trips", Some(b_trips as f64))
        .num("a_rps", Some(a_trips as f64 / half))
        .num("b_rps", Some(b_trips as f64 / half))
        .num("a_server_cpu_s", a_cpu)
        .num("b_server_cpu_s", b_cpu)
        .num("a_server_cpu_s_per_100k", per_100k(a_cpu, a_trips))
        .num("b_server_cpu_s_per_100k", per_100k(b_cpu, b_trips))
        .num("loadgen_cpu_util", Some((g1 - g0) / secs))
        .num("others_cpu_cores", others);
    println!("{report}");
    Ok(())
}

/// A child driving one server's connections (`duel --follow`).
struct Driver {
    child: Child,
    commands: std::process::ChildStdin,
    replies: BufReader<std::process::ChildStdout>,
}

impl Driver {
    fn start(port: u16, conns: usize, size: usize) -> io::Result<Driver> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--follow", "1", "--port", &port.to_string()])
            .args(["--conns", &conns.to_string(), "--size", &size.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let commands = child.stdin.take().expect("piped");
        let replies = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Driver {
            child,
            commands,
            replies,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until its connections are open and warm; how many it opened.
    fn ready(&mut self) -> io::Result<usize> {
        let line = self.reply()?;
        line.strip_prefix("ready ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("driver: {line:?}")))
    }

    fn command(&mut self, what: u8) -> io::Result<()> {
        self.commands.write_all(&[what])?;
        self.commands.flush()
    }

    /// Its round trips counted and its failed connections.
    fn finish(mut self) -> io::Result<(u64, u64)> {
        self.command(QUIT)?;
        let line = self.reply()?;
        self.child.wait()?;
        let mut words = line.split_whitespace().map(str::parse::<u64>);
        match (words.next(), words.next()) {
            (Some(Ok(trips)), Some(Ok(errors))) => Ok((trips, errors)),
            _ => Err(io::Error::other(format!("driver: {line:?}"))),
        }
    }

    fn reply(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.replies.read_line(&mut line)? == 0 {
            return Err(io::Error::other("a driver exited"));
        }
        Ok(line)
    }
}

/// A driver: connects, warms, says `ready N`, then obeys its stdin.
fn follow(port: u16, conns: usize, size: usize) -> io::Result<()> {
    let mut generator = Gen::connect(SocketAddr::from(([127, 0, 0, 1], port)), conns, size)?;
    generator.warm()?;
    // Unbuffered (std's stdin buffers), and non-blocking: edge-triggered
    // epoll needs reads that stop at EAGAIN.
    // SAFETY: fd 0 is ours for the life of the process; ManuallyDrop never closes it.
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    let fd = stdin.as_raw_fd();
    // SAFETY: fcntl on our own stdin.
    unsafe {
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        )
    };
    generator.watch(fd)?;
    println!("ready {}", generator.connected());
    io::stdout().flush()?;
    let (mut driving, mut counting, mut trips) = (false, false, 0u64);
    let mut commands = [0u8; 64];
    loop {
        // Commands first: a STOP read after the echoes of the same poll would
        // let them start round trips into the other server's turn.
        if generator.poll(Duration::from_millis(100))? {
            loop {
                let n = match stdin.read(&mut commands) {
                    Ok(0) => return Err(io::Error::other("the controller went away")),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                for &c in &commands[..n] {
                    match c {
                        GO => {
                            driving = true;
                            generator.send_all(Instant::now());
                        }
                        STOP => driving = false,
                        COUNT => counting = true,
                        UNCOUNT => counting = false,
                        QUIT => {
                            println!("{trips} {}", generator.errors);
                            return io::stdout().flush();
                        }
                        _ => return Err(io::Error::other("unknown command")),
                    }
                }
            }
        }
        generator.serve(|g, i, _, now| {
            trips += u64::from(counting);
            if driving {
                g.send(i, now);
            }
        });
    }
}
