//! The closed-loop echo load generator of scripts/bench.
//!
//! ```text
//! loadgen --port P --conns C [--size 64] [--warmup 1] [--duration 5]
//!         [--server-pid PID] [--server NAME] [--perf PERF] [--count-secs 2]
//! ```
//!
//! Opens C connections to 127.0.0.1:P (blocking connects, one after another),
//! makes one round trip on each (so the server has accepted and is serving
//! every one), lets them sit idle for a second and reads the server's RSS
//! (idle memory per connection), then runs closed loop: every connection sends
//! SIZE bytes, waits for all of them to come back (checked byte by byte), sends
//! again. The first WARMUP seconds are not counted; over the next DURATION
//! seconds it counts round trips and records each one's latency. From
//! /proc/PID of the server it reads CPU time over exactly that window, OS
//! threads in its middle, and peak RSS (VmHWM) at its end. Prints one JSON
//! object.
//!
//! One thread, one epoll set (mio, edge-triggered), no allocation per round
//! trip: per round trip one write and one read, the same system calls the raw
//! epoll server makes. Its own CPU time over the window is reported
//! (`loadgen_cpu_util`, 1.0 = its core was busy all the time): when it reaches
//! 1.0, the rate measured is the generator's, not the server's, and the
//! server's CPU seconds per 100k round trips are the figure that still
//! compares servers.
//!
//! With `--perf` (the perf binary) it also counts the server's system calls
//! per round trip (`perf stat` on the syscall tracepoints, attached to the
//! server, or to its CPU when it has too many threads: `syscalls_scope` in
//! the output says which): for COUNT seconds (`--count-secs`, default 2) after the measured
//! window, the load going on as before, so that the tracing does not slow
//! the measured window; divided by the round trips completed between enabling
//! and disabling the counters.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use patchall_bench::closed_loop::Gen;
use patchall_bench::{
    Args, Json, cpu_seconds, machine_busy_seconds, meminfo_kib, own_cpu_seconds, quantile,
    status_field,
};

const USAGE: &str = "loadgen --port P --conns C [--size 64] [--warmup 1] [--duration 5] \
                     [--server-pid PID] [--server NAME] [--perf PERF] [--count-secs 2]";

/// The system calls counted per round trip: (tracepoint, JSON key). Reads and
/// writes of every family the servers use; the epoll waits summed.
const SYSCALLS: [(&str, &str); 7] = [
    ("recvfrom", "recvfrom"),
    ("read", "read"),
    ("sendto", "sendto"),
    ("write", "write"),
    ("epoll_wait", "epoll_wait"),
    ("epoll_pwait", "epoll_wait"),
    ("io_uring_enter", "io_uring_enter"),
];

/// `perf stat` attached to the server, its counters enabled and disabled
/// through a control fifo.
///
/// perf opens one counter per event and thread: a thread-per-connection
/// server at 10,000 connections needs 70,000 fds, past the hard limit. Such
/// a server is counted on its CPU instead (scripts/bench pins it to one), which
/// counts what else ran there too: `syscalls_scope` in the JSON says which.
struct SyscallCounter {
    child: std::process::Child,
    ctl: std::fs::File,
    ack: std::fs::File,
    out: std::path::PathBuf,
    dir: std::path::PathBuf,
    /// "process", or "cpu N" when counted on the server's CPU.
    scope: String,
}

impl SyscallCounter {
    fn start(perf: &str, pid: u32) -> io::Result<SyscallCounter> {
        let dir = std::env::temp_dir().join(format!("loadgen-perf-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (ctl, ack, out) = (dir.join("ctl"), dir.join("ack"), dir.join("out"));
        for fifo in [&ctl, &ack] {
            let _ = std::fs::remove_file(fifo);
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let events: Vec<String> = SYSCALLS
            .iter()
            .map(|(t, _)| format!("syscalls:sys_enter_{t}"))
            .collect();
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
        let (scope, target) = if (threads + 1) * SYSCALLS.len() + 64 < open_file_limit() {
            ("process".to_string(), ["-p".to_string(), pid.to_string()])
        } else {
            let cpu = only_cpu(pid).ok_or_else(|| {
                io::Error::other(format!(
                    "{threads} threads are too many to count per thread, and the server is not pinned to one CPU"
                ))
            })?;
            (format!("cpu {cpu}"), ["-a".to_string(), format!("-C{cpu}")])
        };
        let child = std::process::Command::new(perf)
            .args(["stat", "-x", ",", "--delay=-1", "-e", &events.join(",")])
            .args(target)
            .arg("--control")
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
            .arg("-o")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        // Read-write on our side: opening never waits for perf's.
        let open = |p: &std::path::Path| std::fs::OpenOptions::new().read(true).write(true).open(p);
        Ok(SyscallCounter {
            child,
            ctl: open(&ctl)?,
            ack: open(&ack)?,
            out,
            dir,
            scope,
        })
    }

    /// Sends `enable` or `disable` and waits for perf's acknowledgement. Our
    /// side holds both ends of the fifo, so a perf that died would never close
    /// it: the wait is bounded, and a perf that exited is an error.
    fn command(&mut self, what: &str) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        self.ctl.write_all(format!("{what}\n").as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!("perf exited ({status})")));
            }
            let mut pfd = libc::pollfd {
                fd: self.ack.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd that lives across the call.
            if unsafe { libc::poll(&mut pfd, 1, 100) } > 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!("perf did not acknowledge {what}")));
            }
        }
        let mut buf = [0u8; 4];
        self.ack.read_exact(&mut buf)?;
        Ok(())
    }

    /// Stops perf; the counts by JSON key.
    fn finish(mut self) -> io::Result<Vec<(&'static str, f64)>> {
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.out)?;
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut counts: Vec<(&'static str, f64)> = Vec::new();
        for (tracepoint, key) in SYSCALLS {
            let event = format!("syscalls:sys_enter_{tracepoint}");
            let n = text
                .lines()
                .map(|l| l.split(',').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[2] == event)
                .and_then(|f| f[0].parse::<f64>().ok())
                .ok_or_else(|| io::Error::other(format!("perf counted no {event}")))?;
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => *v += n,
                None => counts.push((key, n)),
            }
        }
        Ok(counts)
    }
}

/// This process's soft limit on open files (perf inherits it).
fn open_file_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// The CPU `pid` is pinned to, if exactly one.
fn only_cpu(pid: u32) -> Option<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is as large as the size given.
    let rc = unsafe {
        libc::sched_getaffinity(pid as libc::pid_t, size_of::<libc::cpu_set_t>(), &mut set)
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: CPU_ISSET reads the set within CPU_SETSIZE.
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    (cpus.len() == 1).then(|| cpus[0])
}

fn main() -> io::Result<()> {
    let args = Args::parse(USAGE);
    let port: u16 = args.required("port").parse().unwrap_or_else(|_| {
        eprintln!("usage: {USAGE}");
        std::process::exit(2)
    });
    let conns: usize = args.get("conns", 100);
    let size: usize = args.get("size", 64);
    let warmup = Duration::from_secs_f64(args.get("warmup", 1.0));
    let duration = Duration::from_secs_f64(args.get("duration", 5.0));
    let server_pid: u32 = args.get("server-pid", 0);
    let server = args.get("server", String::from("?"));
    let perf = args.get("perf", String::new());
    let count_secs = Duration::from_secs_f64(args.get("count-secs", 2.0));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The server's own figures; 0 (no pid) reads nothing.
    let of_server = |field: &str| {
        (server_pid != 0)
            .then(|| status_field(server_pid, field))
            .flatten()
    };
    let server_cpu = || (server_pid != 0).then(|| cpu_seconds(server_pid)).flatten();

    let base_rss = of_server("VmRSS");
    let base_kstack = meminfo_kib("KernelStack");
    let start = Instant::now();
    let mut generator = Gen::connect(addr, conns, size)?;
    let connected = generator.connected();
    let connect_s = start.elapsed().as_secs_f64();
    let warm_start = Instant::now();
    generator.warm()?;
    let warm_s = warm_start.elapsed().as_secs_f64();

    // Idle: every connection open, nothing in flight.
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = of_server("VmRSS");
    let idle_threads = of_server("Threads");
    let idle_kstack = meminfo_kib("KernelStack");

    // Closed loop.
    let load_start = Instant::now();
    let window_start = load_start + warmup;
    let window_end = window_start + duration;
    let middle = window_start + duration / 2;
    generator.send_all(load_start);
    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 20);
    let (mut cpu_start, mut own_start, mut busy_start) = (None, 0.0, None);
    let mut in_window = false;
    let mut threads = None;
    let mut completed: u64 = 0;
    // Attached now, its counters off: enabling them later makes the generator
    // wait for perf's acknowledgement only, while the server goes on serving.
    let mut counter = (!perf.is_empty() && server_pid != 0 && !count_secs.is_zero())
        .then(|| SyscallCounter::start(&perf, server_pid))
        .and_then(|r| r.inspect_err(|e| eprintln!("loadgen: perf: {e}")).ok());
    let mut counted_from = None;
    let mut syscalls = None;
    let mut window = None;
    loop {
        let now = Instant::now();
        if !in_window && now >= window_start {
            in_window = true;
            cpu_start = server_cpu();
            own_start = own_cpu_seconds();
            busy_start = machine_busy_seconds();
        }
        if threads.is_none() && now >= middle {
            threads = of_server("Threads");
        }
        if window.is_none() && now >= window_end {
            // The window's figures, before the counting that follows it.
            window = Some((
                (now - window_start).as_secs_f64(),
                server_cpu(),
                own_cpu_seconds() - own_start,
                machine_busy_seconds(),
                of_server("VmHWM"),
                of_server("VmRSS"),
            ));
            if let Some(c) = counter.as_mut() {
                match c.command("enable") {
                    Ok(()) => counted_from = Some((completed, Instant::now())),
                    Err(e) => eprintln!("loadgen: perf: {e}"),
                }
            }
        }
        if window.is_some() {
            let Some((from, since)) = counted_from.filter(|_| counter.is_some()) else {
                break;
            };
            if now >= since + count_secs {
                let mut c = counter.take().expect("checked");
                let trips = completed - from;
                let scope = c.scope.clone();
                match c.command("disable").and_then(|()| c.finish()) {
                    Ok(counts) if trips > 0 => syscalls = Some((counts, trips, scope)),
                    Ok(_) => eprintln!("loadgen: no round trips while counting"),
                    Err(e) => eprintln!("loadgen: perf: {e}"),
                }
                break;
            }
        }
        generator.turn(Duration::from_millis(20), |g, i, latency, now| {
            completed += 1;
            if now >= window_start && now < window_end {
                latencies.push(latency.as_nanos() as u64);
            }
            g.send(i, now);
        })?;
    }
    let (elapsed, cpu_end, own, busy_end, hwm, rss) =
        window.expect("the loop ends after the window");
    let busy = busy_start.zip(busy_end).map(|(a, b)| b - a);
    latencies.sort_unstable();
    let trips = latencies.len() as f64;
    let cpu = cpu_start.zip(cpu_end).map(|(a, b)| b - a);
    // Cores' worth of CPU that neither the server nor this generator used:
    // other processes competing for the two cores.
    let others = busy
        .zip(cpu)
        .map(|(b, c)| ((b - c - own) / elapsed).max(0.0));
    let us = |ns: u64| ns as f64 / 1000.0;
    let per_conn = base_rss
        .zip(idle_rss)
        .map(|(b, i)| (i as f64 - b as f64) / connected.max(1) as f64);
    // Machine-wide: other processes' threads come and go too.
    let kstack_per_conn = base_kstack
        .zip(idle_kstack)
        .map(|(b, i)| (i as f64 - b as f64) / connected.max(1) as f64);
    let alive = generator.alive() as u32;
    let report = Json::default()
        .str("server", &server)
        .num("conns", Some(conns as u32))
        .num("connected", Some(connected as u32))
        .num("alive", Some(alive))
        .num("errors", Some(generator.errors as f64))
        .num("connect_s", Some(connect_s))
        .num("warm_s", Some(warm_s))
        .num("duration_s", Some(elapsed))
        .num("round_trips", Some(trips))
        .num("rps", Some(trips / elapsed))
        .num("p50_us", Some(us(quantile(&latencies, 0.50))))
        .num("p99_us", Some(us(quantile(&latencies, 0.99))))
        .num("max_us", Some(us(quantile(&latencies, 1.0))))
        .num("server_cpu_s", cpu)
        .num(
            "server_cpu_s_per_100k",
            cpu.map(|c| c / trips.max(1.0) * 100_000.0),
        )
        .num("server_threads", threads.or(idle_threads).map(|t| t as f64))
        .num("server_base_rss_kib", base_rss.map(|v| v as f64))
        .num("server_idle_rss_kib", idle_rss.map(|v| v as f64))
        .num("server_idle_kib_per_conn", per_conn)
        .num("kernel_stack_kib_per_conn", kstack_per_conn)
        .num("server_rss_kib", rss.map(|v| v as f64))
        .num("server_hwm_kib", hwm.map(|v| v as f64))
        .num("loadgen_cpu_s", Some(own))
        .num("loadgen_cpu_util", Some(own / elapsed))
        .num("others_cpu_cores", others);
    let per_trip = |key: &str| {
        syscalls.as_ref().and_then(|(counts, trips, _)| {
            counts
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, n)| n / *trips as f64)
        })
    };
    let mut report = report.num(
        "syscalls_counted_trips",
        syscalls.as_ref().map(|(_, t, _)| *t as f64),
    );
    if let Some((_, _, scope)) = &syscalls {
        report = report.str("syscalls_scope", scope);
    }
    let report = report
        .num("recvfrom_per_rt", per_trip("recvfrom"))
        .num("read_per_rt", per_trip("read"))
        .num("sendto_per_rt", per_trip("sendto"))
        .num("write_per_rt", per_trip("write"))
        .num("epoll_wait_per_rt", per_trip("epoll_wait"))
        .num("io_uring_enter_per_rt", per_trip("io_uring_enter"));
    println!("{report}");
    Ok(())
}
