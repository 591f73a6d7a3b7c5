//! `PATCHALL_*` environment variables, read once.
//!
//! A bad value is reported once on stderr (raw write) and the default is used:
//! a typo in an environment variable must never take a program down.

use std::sync::OnceLock;
use std::time::Duration;

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
    /// `PATCHALL_STACK_SIZE`: usable bytes per coroutine stack.
    pub stack_size: usize,
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
    /// `PATCHALL_GREEN_TLS`: `own` gives every green thread and coroutine its
    /// own thread-local storage and thread descriptor (when glibc's layout and
    /// the CPU allow it, see `runtime::tls`); `shared` (the default) has them
    /// use their OS thread's.
    pub own_tls: bool,
    /// `PATCHALL_TIMESLICE`: how long a coroutine whose hooked calls keep
    /// completing at once may hold its thread before one of them yields
    /// (`5ms`, `500us`; a bare number is milliseconds). None (`0`, `off`): never.
    pub timeslice: Option<Duration>,
}

pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// Smallest stack we hand out: a signal handler plus a libc call need this much.
pub const MIN_STACK_SIZE: usize = 16 * 1024;
/// Largest stack size accepted (`PATCHALL_STACK_SIZE`, `patchall run
/// --stack-size`): 1 GiB, 128 times glibc's default thread stack; beyond it a
/// value is a typo, and no coroutine could get such a stack anyway.
pub const MAX_STACK_SIZE: usize = 1 << 30;
pub(crate) const DEFAULT_OFFLOAD_THREADS: usize = 64;
/// Go's scheduler preempts after 10 ms; we ask half that, since a yield here
/// costs a few microseconds, not a signal.
pub(crate) const DEFAULT_TIMESLICE: Duration = Duration::from_millis(5);
/// Shorter slices than this would spend more time switching than running.
const MIN_TIMESLICE: Duration = Duration::from_micros(100);
/// Longer than this is a typo (a unit forgotten), not a plan.
const MAX_TIMESLICE: Duration = Duration::from_secs(60);
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
        let stack_size = parse_or_warn(get("PATCHALL_STACK_SIZE"), "PATCHALL_STACK_SIZE", |v| {
            parse_size(v).filter(|n| (MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(n))
        })
        .unwrap_or(DEFAULT_STACK_SIZE);
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
        let timeslice = parse_or_warn(get("PATCHALL_TIMESLICE"), "PATCHALL_TIMESLICE", |v| match v
            .to_ascii_lowercase()
            .as_str()
        {
            "0" | "off" => Some(None),
            v => parse_duration(v)
                .filter(|d| (MIN_TIMESLICE..=MAX_TIMESLICE).contains(d))
                .map(Some),
        })
        .unwrap_or(Some(DEFAULT_TIMESLICE));
        let own_tls = parse_or_warn(get("PATCHALL_GREEN_TLS"), "PATCHALL_GREEN_TLS", |v| match v
            .to_ascii_lowercase()
            .as_str()
        {
            "own" => Some(true),
            "shared" => Some(false),
            _ => None,
        })
        .unwrap_or(false);
        Config {
            own_tls,
            workers,
            stack_size,
            stack_mode,
            green_threads,
            native_threads,
            offload_threads,
            offload_files,
            timeslice,
        }
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
            _ => None,
        });
        assert_eq!(c.workers, None);
        assert_eq!(c.stack_size, DEFAULT_STACK_SIZE);
        assert_eq!(c.stack_mode, StackMode::Guarded);
        assert!(!c.green_threads);
        assert!(!c.own_tls);
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
            _ => None,
        });
        assert!(c.own_tls);
        assert_eq!(c.offload_threads, 8);
        assert_eq!(c.offload_files, OffloadFiles::Always);
        assert_eq!(c.stack_size, 64 << 10);
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
