//! What the servers, the load generator and the crawler of `scripts/bench`
//! share: the listening socket, the echo loop of the blocking servers, the
//! command line, what /proc tells about a process, and the closed-loop client
//! of the load generators (`closed_loop`).
//!
//! Nothing here references `patchall`, so binaries that use only this module
//! (the load generator, the tokio, mio and std peers) link none of its hooks.

pub mod closed_loop;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::str::FromStr;

/// Bytes one read of an echo server asks for: every Rust peer uses the same.
pub const ECHO_BUF: usize = 1024;

/// Listen backlog of every server: a burst of 10,000 connects must not
/// overflow the accept queue (the C server and gevent use the same).
const BACKLOG: i32 = 4096;

/// Binds 127.0.0.1 on a free port with a 4,096 backlog (std's `bind` uses 128)
/// and prints `port N` as the first line of stdout, which scripts/bench reads.
pub fn listen() -> io::Result<TcpListener> {
    let check = |rc: i32| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    // SAFETY: plain socket calls on an fd this function owns; on any error the
    // fd is closed by the `TcpListener` it was already wrapped in.
    let listener = unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let listener = TcpListener::from_raw_fd(fd);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        check(libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        check(libc::listen(fd, BACKLOG))?;
        listener
    };
    let mut out = io::stdout().lock();
    writeln!(out, "port {}", listener.local_addr()?.port())?;
    out.flush()?;
    Ok(listener)
}

/// The blocking echo loop of the std and patchall servers: what a reads, it
/// writes back, until EOF or an error.
pub fn echo_blocking(mut stream: TcpStream) {
    let mut buf = [0u8; ECHO_BUF];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// `--name value` pairs; anything else is a usage error.
pub struct Args(HashMap<String, String>);

impl Args {
    /// Parses the process's arguments; exits with status 2 and `usage` on a
    /// stray word.
    pub fn parse(usage: &str) -> Args {
        let mut map = HashMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            match (flag.strip_prefix("--"), args.next()) {
                (Some(name), Some(value)) => {
                    map.insert(name.to_owned(), value);
                }
                _ => {
                    eprintln!("usage: {usage}");
                    std::process::exit(2);
                }
            }
        }
        Args(map)
    }

    /// `--name`'s value, or `default`; exits with status 2 if it does not parse.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        match self.0.get(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("--{name} {v}: not a valid value");
                std::process::exit(2);
            }),
        }
    }

    /// `--name`'s value; exits with status 2 if it is missing.
    pub fn required(&self, name: &str) -> String {
        self.0.get(name).cloned().unwrap_or_else(|| {
            eprintln!("--{name} is required");
            std::process::exit(2);
        })
    }
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB, or the
/// `Threads` count; `pid` 0 means this process.
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let path = if pid == 0 {
        "/proc/self/status".to_owned()
    } else {
        format!("/proc/{pid}/status")
    };
    let status = std::fs::read_to_string(path).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A `kB` field of /proc/meminfo, in KiB: `KernelStack` counts the kernel
/// stacks of every thread on the machine, which no process's RSS shows.
pub fn meminfo_kib(field: &str) -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User + system CPU seconds the process `pid` has used (/proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its closing `)`;
    // utime and stime are fields 14 and 15, the 12th and 13th after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks as f64)
}

/// CPU seconds every core of the machine has spent busy (not idle, not
/// waiting for I/O) since boot, from the first line of /proc/stat.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(busy as f64 / hz as f64)
}

/// User + system CPU seconds of this process so far.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The `p`-quantile (0..=1) of sorted samples, 0 if there are none.
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One JSON object of string, integer and float fields, on one line.
#[derive(Default)]
pub struct Json(Vec<(String, String)>);

impl Json {
    /// A string field.
    pub fn str(mut self, key: &str, value: &str) -> Json {
        let escaped: String = value
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
                c => vec![c],
            })
            .collect();
        self.0.push((key.to_owned(), format!("\"{escaped}\"")));
        self
    }

    /// A number; a missing one is `null`.
    pub fn num(mut self, key: &str, value: Option<impl Into<f64>>) -> Json {
        let text = match value.map(Into::into) {
            Some(v) if v.is_finite() => format!("{v}"),
            _ => "null".to_owned(),
        };
        self.0.push((key.to_owned(), text));
        self
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            write!(f, "{}\"{k}\": {v}", if i > 0 { ", " } else { "" })?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_sample() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&sorted, 0.5), 50);
        assert_eq!(quantile(&sorted, 0.99), 99);
        assert_eq!(quantile(&sorted, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn json_escapes_and_nulls() {
        let j = Json::default()
            .str("s", "a\"b\n")
            .num("n", Some(3u32))
            .num("f", Some(0.5))
            .num("none", None::<f64>);
        assert_eq!(
            j.to_string(),
            r#"{"s": "a\"b\u000a", "n": 3, "f": 0.5, "none": null}"#
        );
    }

    #[test]
    fn proc_reads_this_process() {
        assert!(status_field(0, "VmRSS").unwrap() > 0);
        assert!(status_field(0, "Threads").unwrap() >= 1);
        assert!(meminfo_kib("MemTotal").unwrap() > 0);
        assert!(machine_busy_seconds().unwrap() >= own_cpu_seconds() * 0.5);
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        // Our pid and "self" name the same process (Tgid: unlike Threads, it
        // cannot change between the two reads while other tests run).
        assert_eq!(status_field(me, "Tgid"), Some(u64::from(me)));
        assert_eq!(status_field(0, "Tgid"), Some(u64::from(me)));
    }
}
