//! `PATCHALL_*` environment variables, read once.
//!
//! A bad value is reported once on stderr (raw write) and the default is used:
//! a typo in an environment variable must never take a program down.

use std::sync::OnceLock;
use std::time::Duration;

pub use crate::limits::{MAX_STACK_SIZE, MIN_STACK_SIZE};
use crate::sys::diag;

/// How coroutine stacks are laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackMode {
    /// Each stack has an unmapped guard gap below it: an overflow faults and is
    /// reported. One memory mapping per stack.
    Guarded,
    /// Stacks are carved side by side from large mappings: no per-stack guard, a
    /// canary word at the bottom is checked at every switch. For 100k–1M coroutines.
    Dense,
}

/// Which regular-file calls a coroutine hands to the offload pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffloadFiles {
    /// Whatever the page cache can serve at once (reads, path lookups) runs
    /// inline; what would wait for the disk runs on the pool, as do `fsync`,
    /// creating opens and large writes. Chosen from benches/offload.rs.
    Auto,
    /// Every file call made in a coroutine runs on the pool.
    Always,
    /// File calls block the calling thread, as without patchall.
    Off,
}

/// The runtime's configuration, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `PATCHALL_STACK_SIZE`: usable bytes per coroutine stack, and per green
    /// thread stack unless the thread's attribute asks for its own.
    pub stack_size: usize,
    /// `PATCHALL_STACK_SIZE` was given (green threads otherwise keep glibc's
    /// default thread stack).
    pub(crate) stack_size_set: bool,
    /// `PATCHALL_STACKS`: `guarded` or `dense`.
    pub stack_mode: StackMode,
    /// `PATCHALL_GREEN_THREADS`: `1` makes `pthread_create` start coroutines and
    /// `main` run as one (preload only).
    pub green_threads: bool,
    /// `PATCHALL_WORKERS`: worker threads of a `Runtime` (default: the CPUs);
    /// with green threads, the OS threads they spread over (default: 1).
    pub workers: Option<usize>,
    /// `PATCHALL_NATIVE_THREADS`: comma-separated patterns; with green threads
    /// on, a thread whose start routine's symbol name or object path contains
    /// one stays a native thread.
    pub native_threads: Vec<String>,
    /// `PATCHALL_OFFLOAD_THREADS`: the most OS threads the offload pool (DNS,
    /// file calls, waits for any child) may run at once. Threads start when a
    /// job finds none idle; all but two end after a while without work.
    pub offload_threads: usize,
    /// `PATCHALL_OFFLOAD_FILES`: `auto`, `always` or `off`.
    pub offload_files: OffloadFiles,
    /// `PATCHALL_IO`: `uring` hands a coroutine's socket reads and writes to
    /// an io_uring per scheduler (`runtime::uring`); `epoll`, the default,
    /// makes them as system calls and parks on readiness.
    pub io_uring: bool,
    /// `PATCHALL_GREEN_TLS`: `own` gives every green thread and coroutine its
    /// own thread-local storage and thread descriptor (when glibc's layout and
    /// the CPU allow it, see `runtime::tls`); `shared` has them use their OS
    /// thread's. Unset (None): green threads own, coroutines of the Rust and
    /// C APIs shared (see `runtime::tls::wanted`).
    pub own_tls: Option<bool>,
    /// `PATCHALL_TIMESLICE`: how long a coroutine whose hooked calls keep
    /// completing at once may hold its thread before one of them yields
    /// (`5ms`, `500us`; a bare number is milliseconds). None (`0`, `off`): never.
    pub timeslice: Option<Duration>,
    /// `PATCHALL_MONITOR`: a coroutine that holds its thread longer than this
    /// without a switch is reported on stderr with its stack (`100ms`; a bare
    /// number is milliseconds). None (`off`, `0`, the default): no monitor.
    pub monitor: Option<Duration>,
    /// `PATCHALL_SYSCALL_DISPATCH`: `on` or `off`; unset, on with green
    /// threads and off otherwise (see `syscall_dispatch_on`).
    pub syscall_dispatch: Option<bool>,
    /// `PATCHALL_DUMP_SIGNAL`: the signal (`SIGUSR2`, `SIGQUIT`, a name
    /// without `SIG` or a number) on which every coroutine is listed on
    /// stderr. None (the default): no signal is taken.
    pub dump_signal: Option<i32>,
    /// `PATCHALL_DUMP=exit`: list every coroutine on stderr as the process exits.
    pub dump_at_exit: bool,
    /// `PATCHALL_STATS`: `1` prints the run's statistics on stderr at exit.
    pub stats: bool,
}

pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;
pub(crate) const DEFAULT_OFFLOAD_THREADS: usize = 64;
/// Go's scheduler preempts after 10 ms; we ask half that, since a yield here
/// costs a few microseconds, not a signal.
pub(crate) const DEFAULT_TIMESLICE: Duration = Duration::from_millis(5);
/// Shorter slices than this would spend more time switching than running.
const MIN_TIMESLICE: Duration = Duration::from_micros(100);
/// Longer than this is a typo (a unit forgotten), not a plan.
const MAX_TIMESLICE: Duration = Duration::from_secs(60);
/// A monitor finer than this would spend its thread's time waking up.
const MIN_MONITOR: Duration = Duration::from_millis(1);
/// More threads than this is a typo, not a plan (each reserves a stack).
const MAX_OFFLOAD_THREADS: usize = 4096;
/// The most workers a runtime may have (`PATCHALL_WORKERS`,
/// `RuntimeBuilder::workers`). Each is an OS thread with its own scheduler,
/// epoll and eventfd; a thousand is far past any machine's use for them, and a
/// bound keeps a typo (`99999999999`) from exhausting memory.
pub const MAX_WORKERS: usize = 1024;

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The configuration in force (read from the environment on first use).
pub fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config::from_lookup(|name| std::env::var(name).ok()))
}

impl Config {
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Config {
        let given = parse_or_warn(get("PATCHALL_STACK_SIZE"), "PATCHALL_STACK_SIZE", |v| {
            parse_size(v).filter(|n| (MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(n))
        });
        let (stack_size, stack_size_set) = (given.unwrap_or(DEFAULT_STACK_SIZE), given.is_some());
        let stack_mode = parse_or_warn(get("PATCHALL_STACKS"), "PATCHALL_STACKS", |v| match v {
            "guarded" => Some(StackMode::Guarded),
            "dense" => Some(StackMode::Dense),
            _ => None,
        })
        .unwrap_or(StackMode::Guarded);
        let green_threads = parse_or_warn(
            get("PATCHALL_GREEN_THREADS"),
            "PATCHALL_GREEN_THREADS",
            parse_bool,
        )
        .unwrap_or(false);
        let native_threads = get("PATCHALL_NATIVE_THREADS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let workers = parse_or_warn(get("PATCHALL_WORKERS"), "PATCHALL_WORKERS", |v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_WORKERS).contains(n))
        });
        let offload_threads = parse_or_warn(
            get("PATCHALL_OFFLOAD_THREADS"),
            "PATCHALL_OFFLOAD_THREADS",
            |v| {
                v.parse()
                    .ok()
                    .filter(|n| (1..=MAX_OFFLOAD_THREADS).contains(n))
            },
        )
        .unwrap_or(DEFAULT_OFFLOAD_THREADS);
        let offload_files = parse_or_warn(
            get("PATCHALL_OFFLOAD_FILES"),
            "PATCHALL_OFFLOAD_FILES",
            |v| match v.to_ascii_lowercase().as_str() {
                "auto" => Some(OffloadFiles::Auto),
                "always" => Some(OffloadFiles::Always),
                "off" => Some(OffloadFiles::Off),
                _ => None,
            },
        )
        .unwrap_or(OffloadFiles::Auto);
        let io_uring = parse_or_warn(get("PATCHALL_IO"), "PATCHALL_IO", |v| {
            match v.to_ascii_lowercase().as_str() {
                "uring" => Some(true),
                "epoll" => Some(false),
                _ => None,
            }
        })
        .unwrap_or(false);
        let timeslice = parse_or_warn(get("PATCHALL_TIMESLICE"), "PATCHALL_TIMESLICE", |v| {
            parse_off_or_duration(v, MIN_TIMESLICE..=MAX_TIMESLICE)
        })
        .unwrap_or(Some(DEFAULT_TIMESLICE));
        let monitor = parse_or_warn(get("PATCHALL_MONITOR"), "PATCHALL_MONITOR", |v| {
            parse_off_or_duration(v, MIN_MONITOR..=MAX_TIMESLICE)
        })
        .unwrap_or(None);
        let syscall_dispatch = parse_or_warn(
            get("PATCHALL_SYSCALL_DISPATCH"),
            "PATCHALL_SYSCALL_DISPATCH",
            |v| match v.to_ascii_lowercase().as_str() {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            },
        );
        let dump_signal = parse_or_warn(
            get("PATCHALL_DUMP_SIGNAL"),
            "PATCHALL_DUMP_SIGNAL",
            parse_dump_signal,
        )
        .flatten();
        let dump_at_exit = parse_or_warn(get("PATCHALL_DUMP"), "PATCHALL_DUMP", |v| {
            match v.to_ascii_lowercase().as_str() {
                "exit" => Some(true),
                "" | "off" | "0" => Some(false),
                _ => None,
            }
        })
        .unwrap_or(false);
        let stats =
            parse_or_warn(get("PATCHALL_STATS"), "PATCHALL_STATS", parse_bool).unwrap_or(false);
        let own_tls = parse_or_warn(get("PATCHALL_GREEN_TLS"), "PATCHALL_GREEN_TLS", |v| match v
            .to_ascii_lowercase()
            .as_str()
        {
            "own" => Some(true),
            "shared" => Some(false),
            _ => None,
        });
        Config {
            own_tls,
            syscall_dispatch,
            dump_signal,
            dump_at_exit,
            stats,
            workers,
            stack_size,
            stack_size_set,
            stack_mode,
            green_threads,
            native_threads,
            offload_threads,
            offload_files,
            io_uring,
            timeslice,
            monitor,
        }
    }
}

impl Config {
    /// Whether threads that run a scheduler turn Syscall User Dispatch on, so
    /// that system calls coroutines make behind our hooks park too.
    pub fn syscall_dispatch_on(&self) -> bool {
        self.syscall_dispatch.unwrap_or(self.green_threads)
    }
}

/// Parses a value if present; on a bad one, warns once (per variable) and returns None.
pub(crate) fn parse_or_warn<T>(
    value: Option<String>,
    name: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let value = value?;
    let parsed = parse(value.trim());
    if parsed.is_none() {
        diag(&[
            b"patchall: ignoring bad value ",
            name.as_bytes(),
            b"=\"",
            value.as_bytes(),
            b"\"; using the default\n",
        ]);
    }
    parsed
}

/// Parses `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Parses `262144`, `256k`, `256K`, `256KiB`, `1m`, `1M`, `1MiB`, `1g`.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(digits);
    let num: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    num.checked_mul(mult)
}

/// `0`/`off` (any case) as `Some(None)`, a duration within `range` as
/// `Some(Some(d))`; None for anything else.
fn parse_off_or_duration(
    text: &str,
    range: std::ops::RangeInclusive<Duration>,
) -> Option<Option<Duration>> {
    match text.to_ascii_lowercase().as_str() {
        "0" | "off" => Some(None),
        v => parse_duration(v).filter(|d| range.contains(d)).map(Some),
    }
}

/// Signals `PATCHALL_DUMP_SIGNAL` may name: those whose default action a
/// user may sensibly trade for a dump. Faults, SIGKILL, SIGSTOP and the ones
/// glibc keeps for itself cannot be.
const DUMP_SIGNALS: [(&str, i32); 9] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("TERM", libc::SIGTERM),
    ("WINCH", libc::SIGWINCH),
    ("PWR", libc::SIGPWR),
    ("URG", libc::SIGURG),
];

/// `SIGUSR2`, `usr2`, `12`; `off`/`0`/empty is no signal (Some(None)).
fn parse_dump_signal(text: &str) -> Option<Option<i32>> {
    let upper = text.trim().to_ascii_uppercase();
    if matches!(upper.as_str(), "" | "0" | "OFF") {
        return Some(None);
    }
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match name.parse::<i32>() {
        Ok(n) => DUMP_SIGNALS.iter().find(|&&(_, s)| s == n)?.1,
        Err(_) => DUMP_SIGNALS.iter().find(|&&(n, _)| n == name)?.1,
    };
    Some(Some(sig))
}

/// Parses `5ms`, `500us`, `2s`; a bare number is milliseconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(digits);
    let num: u64 = num.parse().ok()?;
    match unit.trim() {
        "" | "ms" => Some(Duration::from_millis(num)),
        "us" | "µs" => Some(Duration::from_micros(num)),
        "s" => Some(Duration::from_secs(num)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("262144"), Some(262144));
        assert_eq!(parse_size("256k"), Some(256 << 10));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("2 G"), Some(2 << 30));
        assert_eq!(parse_size("12q"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn bad_values_fall_back_to_defaults() {
        let c = Config::from_lookup(|name| match name {
            "PATCHALL_STACK_SIZE" => Some("lots".into()),
            "PATCHALL_STACKS" => Some("sparse".into()),
            "PATCHALL_GREEN_THREADS" => Some("maybe".into()),
            "PATCHALL_OFFLOAD_THREADS" => Some("0".into()),
            "PATCHALL_OFFLOAD_FILES" => Some("sometimes".into()),
            "PATCHALL_WORKERS" => Some("99999999999".into()),
            "PATCHALL_GREEN_TLS" => Some("mine".into()),
            "PATCHALL_IO" => Some("kqueue".into()),
            _ => None,
        });
        assert!(!c.io_uring);
        assert_eq!(c.workers, None);
        assert_eq!(c.stack_size, DEFAULT_STACK_SIZE);
        assert!(!c.stack_size_set, "a bad size counts as none given");
        assert_eq!(c.stack_mode, StackMode::Guarded);
        assert!(!c.green_threads);
        assert_eq!(c.own_tls, None);
        assert_eq!(c.offload_threads, DEFAULT_OFFLOAD_THREADS);
        assert_eq!(c.offload_files, OffloadFiles::Auto);
        let c = Config::from_lookup(|name| match name {
            "PATCHALL_STACK_SIZE" => Some("64k".into()),
            "PATCHALL_STACKS" => Some("dense".into()),
            "PATCHALL_GREEN_THREADS" => Some("1".into()),
            "PATCHALL_NATIVE_THREADS" => Some(" worker_main, ,libfoo.so".into()),
            "PATCHALL_OFFLOAD_THREADS" => Some(" 8 ".into()),
            "PATCHALL_OFFLOAD_FILES" => Some("Always".into()),
            "PATCHALL_GREEN_TLS" => Some("Own".into()),
            "PATCHALL_IO" => Some("Uring".into()),
            _ => None,
        });
        assert!(c.io_uring);
        assert_eq!(c.own_tls, Some(true));
        assert_eq!(c.offload_threads, 8);
        assert_eq!(c.offload_files, OffloadFiles::Always);
        assert_eq!(c.stack_size, 64 << 10);
        assert!(c.stack_size_set);
        assert_eq!(c.stack_mode, StackMode::Dense);
        assert!(c.green_threads);
        assert_eq!(c.native_threads, ["worker_main", "libfoo.so"]);
    }

    #[test]
    fn timeslices_parse_and_bad_ones_fall_back() {
        let slice = |v: &str| {
            let v = v.to_string();
            Config::from_lookup(|name| (name == "PATCHALL_TIMESLICE").then(|| v.clone())).timeslice
        };
        assert_eq!(slice("5ms"), Some(Duration::from_millis(5)));
        assert_eq!(slice(" 2 "), Some(Duration::from_millis(2)));
        assert_eq!(slice("500us"), Some(Duration::from_micros(500)));
        assert_eq!(slice("1s"), Some(Duration::from_secs(1)));
        assert_eq!(slice("0"), None);
        assert_eq!(slice("OFF"), None);
        for bad in ["fast", "5 min", "10us", "2h", "-1ms", "3600s", ""] {
            assert_eq!(slice(bad), Some(DEFAULT_TIMESLICE), "{bad:?}");
        }
        let unset = Config::from_lookup(|_| None);
        assert_eq!(unset.timeslice, Some(DEFAULT_TIMESLICE));
    }

    #[test]
    fn the_monitor_is_off_unless_given_a_duration() {
        let monitor = |v: &str| {
            let v = v.to_string();
            Config::from_lookup(|name| (name == "PATCHALL_MONITOR").then(|| v.clone())).monitor
        };
        assert_eq!(Config::from_lookup(|_| None).monitor, None);
        assert_eq!(monitor("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(monitor(" 250 "), Some(Duration::from_millis(250)));
        assert_eq!(monitor("2s"), Some(Duration::from_secs(2)));
        assert_eq!(monitor("1ms"), Some(Duration::from_millis(1)));
        assert_eq!(monitor("off"), None);
        assert_eq!(monitor("0"), None);
        for bad in ["on", "500us", "61s", "1h", "-5ms", ""] {
            assert_eq!(monitor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dump_and_stats_variables_parse_and_bad_ones_fall_back() {
        let c = |name: &'static str, v: &'static str| {
            Config::from_lookup(move |n| (n == name).then(|| v.into()))
        };
        assert_eq!(
            c("PATCHALL_DUMP_SIGNAL", "SIGUSR2").dump_signal,
            Some(libc::SIGUSR2)
        );
        assert_eq!(
            c("PATCHALL_DUMP_SIGNAL", "quit").dump_signal,
            Some(libc::SIGQUIT)
        );
        assert_eq!(
            c("PATCHALL_DUMP_SIGNAL", " 10 ").dump_signal,
            Some(libc::SIGUSR1)
        );
        for bad in ["SIGKILL", "SIGSEGV", "9", "SIGFOO", "99", "off"] {
            assert_eq!(c("PATCHALL_DUMP_SIGNAL", bad).dump_signal, None, "{bad}");
        }
        assert_eq!(Config::from_lookup(|_| None).dump_signal, None);
        assert!(c("PATCHALL_DUMP", "exit").dump_at_exit);
        assert!(c("PATCHALL_DUMP", "EXIT").dump_at_exit);
        assert!(!c("PATCHALL_DUMP", "always").dump_at_exit);
        assert!(c("PATCHALL_STATS", "1").stats);
        assert!(!c("PATCHALL_STATS", "maybe").stats);
        assert!(!Config::from_lookup(|_| None).stats);
    }

    #[test]
    fn workers_are_bounded() {
        let workers = |v: &str| {
            Config::from_lookup(|name| (name == "PATCHALL_WORKERS").then(|| v.into())).workers
        };
        assert_eq!(workers("1"), Some(1));
        assert_eq!(workers(" 1024 "), Some(MAX_WORKERS));
        for bad in ["0", "1025", "18446744073709551616", "-1", "2x"] {
            assert_eq!(workers(bad), None, "{bad}");
        }
    }

    #[test]
    fn stack_sizes_out_of_range_are_refused() {
        let c = Config::from_lookup(|name| (name == "PATCHALL_STACK_SIZE").then(|| "1k".into()));
        assert_eq!(c.stack_size, DEFAULT_STACK_SIZE);
        let size = |v: &str| {
            Config::from_lookup(|name| (name == "PATCHALL_STACK_SIZE").then(|| v.into())).stack_size
        };
        assert_eq!(size("1g"), MAX_STACK_SIZE);
        assert_eq!(size("1073741825"), DEFAULT_STACK_SIZE);
        assert_eq!(size("18446744073709551615"), DEFAULT_STACK_SIZE);
    }
}
