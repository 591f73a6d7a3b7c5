//! The launcher's options: one table drives the parser of `run`, `env` and
//! `check`, the help text, `env`'s export lines and the shell completions, so a
//! new `PATCHALL_*` variable is one row here.
//!
//! Each value is checked as the library reads it (src/config.rs; the launcher
//! does not link the library), but a bad one is a usage error here (status 2)
//! where the library would warn and use its default.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::limits::{MAX_STACK_SIZE, MIN_STACK_SIZE};
use crate::{Failure, fail, status};

/// The subcommands an option belongs to (a bit mask).
pub const RUN: u8 = 1;
pub const ENV: u8 = 2;
pub const CHECK: u8 = 4;
/// The options that set a variable: `run`, `env` and `check` (which takes
/// them so that a `run` command line can be checked as it is).
const VARS: u8 = RUN | ENV | CHECK;

/// The value an option takes, and how it is checked.
pub enum Kind {
    /// No value; sets its variable to this.
    Flag(&'static str),
    /// A whole number in this range.
    Count(u64, u64),
    /// A number of bytes, or with the suffix k, m or g (`--stack-size`).
    Size(usize, usize),
    /// One of these words.
    Choice(&'static [&'static str]),
    /// `off`, `0` or a duration (`5ms`, `500us`, `2s`; a bare number is
    /// milliseconds) in this range.
    Duration(Duration, Duration),
    /// A signal name, with or without `SIG`.
    Signal,
    /// Comma-separated patterns, at least one.
    Patterns,
    /// No value and no variable: the subcommand's own switch (`--json`...).
    Switch,
}

pub struct Opt {
    pub name: &'static str,
    /// The value's name in the help (`N`, `MODE`); empty for flags.
    pub metavar: &'static str,
    /// The variable it sets; None for a subcommand's own switch.
    pub var: Option<&'static str>,
    pub kind: Kind,
    /// Which subcommands take it.
    pub scope: u8,
    pub help: &'static str,
}

/// Signals `--dump-signal` accepts, as the library reads them (`SIGUSR2`,
/// `usr2` or `12`): those whose default action a user may sensibly trade for
/// a dump; not the fault signals, SIGKILL, SIGSTOP, or those glibc and
/// patchall keep for themselves (SIGSYS, the real-time ones...).
pub const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGTERM", libc::SIGTERM),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGPWR", libc::SIGPWR),
    ("SIGURG", libc::SIGURG),
];

pub static OPTIONS: &[Opt] = &[
    Opt {
        name: "--green-threads",
        metavar: "",
        var: Some("PATCHALL_GREEN_THREADS"),
        kind: Kind::Flag("1"),
        scope: VARS,
        help: "pthread_create starts a coroutine, main runs as one",
    },
    Opt {
        name: "--workers",
        metavar: "N",
        var: Some("PATCHALL_WORKERS"),
        kind: Kind::Count(1, 1024),
        scope: VARS,
        help: "OS threads green threads spread over (default 1), or a Runtime's \
               workers (default: the CPUs); 1 to 1024",
    },
    Opt {
        name: "--stack-size",
        metavar: "N",
        var: Some("PATCHALL_STACK_SIZE"),
        kind: Kind::Size(MIN_STACK_SIZE, MAX_STACK_SIZE),
        scope: VARS,
        help: "stack size of coroutines and of green threads (unless the thread's \
               attribute sets one), in bytes or with the suffix k, m or g: 262144, \
               256k, 1M... (16k to 1g)",
    },
    Opt {
        name: "--stacks",
        metavar: "MODE",
        var: Some("PATCHALL_STACKS"),
        kind: Kind::Choice(&["guarded", "dense"]),
        scope: VARS,
        help: "guarded: a guard gap per stack; dense: packed stacks with a canary",
    },
    Opt {
        name: "--offload-threads",
        metavar: "N",
        var: Some("PATCHALL_OFFLOAD_THREADS"),
        kind: Kind::Count(1, 4096),
        scope: VARS,
        help: "most offload-pool threads at once (DNS, files, child waits); 1 to 4096",
    },
    Opt {
        name: "--offload-files",
        metavar: "MODE",
        var: Some("PATCHALL_OFFLOAD_FILES"),
        kind: Kind::Choice(&["auto", "always", "off"]),
        scope: VARS,
        help: "file calls in a coroutine: auto (the pool when the disk would be \
               waited for), always (the pool), off (block the thread)",
    },
    Opt {
        name: "--io",
        metavar: "MODE",
        var: Some("PATCHALL_IO"),
        kind: Kind::Choice(&["epoll", "uring"]),
        scope: VARS,
        help: "a coroutine's socket reads and writes: epoll (system calls, parked \
               on readiness) or uring (operations of an io_uring per scheduler)",
    },
    Opt {
        name: "--native-threads",
        metavar: "LIST",
        var: Some("PATCHALL_NATIVE_THREADS"),
        kind: Kind::Patterns,
        scope: VARS,
        help: "comma-separated patterns: with green threads, a thread whose start \
               routine's name or file contains one stays native",
    },
    Opt {
        name: "--timeslice",
        metavar: "D",
        var: Some("PATCHALL_TIMESLICE"),
        kind: Kind::Duration(Duration::from_micros(100), Duration::from_secs(60)),
        scope: VARS,
        help: "longest run before a patched call yields: 5ms, 500us, 1s (100us to \
               60s), or off",
    },
    Opt {
        name: "--syscall-dispatch",
        metavar: "on|off",
        var: Some("PATCHALL_SYSCALL_DISPATCH"),
        kind: Kind::Choice(&["on", "off"]),
        scope: VARS,
        help: "trap system calls made outside the hooked functions (raw syscall(), \
               inside glibc) with Syscall User Dispatch",
    },
    Opt {
        name: "--green-tls",
        metavar: "own|shared",
        var: Some("PATCHALL_GREEN_TLS"),
        kind: Kind::Choice(&["own", "shared"]),
        scope: VARS,
        help: "each green thread has its own thread-local storage (own, the default) \
               or shares its OS thread's (shared)",
    },
    Opt {
        name: "--monitor",
        metavar: "D",
        var: Some("PATCHALL_MONITOR"),
        kind: Kind::Duration(Duration::from_millis(1), Duration::from_secs(60)),
        scope: VARS,
        help: "report a coroutine that holds its thread longer than D (1ms to \
               60s), with its stack; or off",
    },
    Opt {
        name: "--dump-signal",
        metavar: "SIG",
        var: Some("PATCHALL_DUMP_SIGNAL"),
        kind: Kind::Signal,
        scope: VARS,
        help: "on this signal (SIGUSR2, USR2, 12...), print every coroutine and its \
               stack",
    },
    Opt {
        name: "--dump-at-exit",
        metavar: "",
        var: Some("PATCHALL_DUMP"),
        kind: Kind::Flag("exit"),
        scope: VARS,
        help: "print every coroutine left when the program exits",
    },
    Opt {
        name: "--stats",
        metavar: "",
        var: Some("PATCHALL_STATS"),
        kind: Kind::Flag("1"),
        scope: VARS,
        help: "print the runtime's statistics at exit",
    },
    Opt {
        name: "--json",
        metavar: "",
        var: None,
        kind: Kind::Switch,
        scope: CHECK,
        help: "check: the report as one JSON object",
    },
    Opt {
        name: "--unset",
        metavar: "",
        var: None,
        kind: Kind::Switch,
        scope: ENV,
        help: "env: print the lines that undo `patchall env`: unset every \
               PATCHALL_* variable above, take the library out of LD_PRELOAD",
    },
];

/// A subcommand's parsed command line.
pub struct Parsed {
    /// The variables to set, in the table's order, each once (the last wins).
    pub vars: Vec<(&'static str, String)>,
    /// The switches given (`--json`, `--unset`).
    pub switches: Vec<&'static str>,
    /// CMD and its arguments, as given (empty if none).
    pub command: Vec<OsString>,
    pub help: bool,
}

impl Parsed {
    pub fn has(&self, switch: &str) -> bool {
        self.switches.contains(&switch)
    }

    /// The value given for `var`, if any.
    pub fn var(&self, var: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(v, _)| *v == var)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses the options of the subcommand `scope` up to CMD (the first word that
/// is not an option, or what follows `--`).
pub fn parse(scope: u8, args: &[OsString]) -> Result<Parsed, Failure> {
    let mut found: Vec<Option<String>> = OPTIONS.iter().map(|_| None).collect();
    let mut parsed = Parsed {
        vars: Vec::new(),
        switches: Vec::new(),
        command: Vec::new(),
        help: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            parsed.command = rest.cloned().collect();
            break;
        }
        if !bytes.starts_with(b"-") || bytes == b"-" {
            parsed.command = std::iter::once(arg).chain(rest).cloned().collect();
            break;
        }
        let text = arg.to_string_lossy();
        if text == "-h" || text == "--help" {
            parsed.help = true;
            return Ok(parsed);
        }
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (&*text, None),
        };
        let Some(index) = OPTIONS
            .iter()
            .position(|o| o.name == name && o.scope & scope != 0)
        else {
            return fail(
                status::USAGE,
                format!("unknown option `{text}`; try `patchall --help`"),
            );
        };
        let opt = &OPTIONS[index];
        found[index] = Some(match opt.kind {
            Kind::Flag(_) | Kind::Switch => {
                if inline.is_some() {
                    return fail(
                        status::USAGE,
                        format!("unknown option `{text}`: {name} takes no value"),
                    );
                }
                String::new()
            }
            _ => {
                let value = match inline {
                    Some(v) => v,
                    None => match rest.next() {
                        Some(v) => v.to_string_lossy().into_owned(),
                        None => return fail(status::USAGE, format!("{name} needs a value")),
                    },
                };
                validate(opt, &value)?
            }
        });
    }
    for (opt, value) in OPTIONS.iter().zip(found) {
        let Some(value) = value else { continue };
        match (opt.var, &opt.kind) {
            (Some(var), Kind::Flag(set)) => parsed.vars.push((var, (*set).to_owned())),
            (Some(var), _) => parsed.vars.push((var, value)),
            (None, _) => parsed.switches.push(opt.name),
        }
    }
    Ok(parsed)
}

/// Checks `given` for `opt`; returns the value to set.
fn validate(opt: &Opt, given: &str) -> Result<String, Failure> {
    let name = opt.name;
    let bad = |expected: &str| fail(status::USAGE, format!("{name} {given}: {expected}"));
    match opt.kind {
        Kind::Count(min, max) => {
            if given.is_empty() || !given.bytes().all(|b| b.is_ascii_digit()) {
                return bad("expected a whole number");
            }
            match given.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
                _ => bad(&format!("out of range; from {min} to {max}")),
            }
        }
        Kind::Size(min, max) => stack_size(given, min, max).map(|n| n.to_string()),
        Kind::Choice(words) => match words.iter().find(|w| w.eq_ignore_ascii_case(given)) {
            Some(word) => Ok((*word).to_owned()),
            None => bad(&format!("expected {}", one_of(words))),
        },
        Kind::Duration(min, max) => {
            if given.eq_ignore_ascii_case("off") || given == "0" {
                return Ok("off".to_owned());
            }
            match parse_duration(given) {
                Some(d) if (min..=max).contains(&d) => Ok(given.to_ascii_lowercase()),
                Some(_) => bad(&format!(
                    "out of range; from {} to {}, or off",
                    show(min),
                    show(max)
                )),
                None => bad(
                    "expected a duration such as 5ms, 500us or 2s (a bare number is \
                     milliseconds), or off",
                ),
            }
        }
        Kind::Signal => {
            let upper = given.to_ascii_uppercase();
            if upper == "OFF" || upper == "0" {
                return Ok("off".to_owned());
            }
            let name = upper.strip_prefix("SIG").unwrap_or(&upper);
            let found = match name.parse::<i32>() {
                Ok(number) => SIGNALS.iter().find(|(_, n)| *n == number),
                Err(_) => SIGNALS.iter().find(|(s, _)| &s[3..] == name),
            };
            match found {
                Some((sig, _)) => Ok((*sig).to_owned()),
                None => {
                    let names: Vec<_> = SIGNALS.iter().map(|(s, _)| *s).collect();
                    bad(&format!(
                        "expected a signal name or number, one of {} (or off)",
                        names.join(" ")
                    ))
                }
            }
        }
        Kind::Patterns => {
            if given.split(',').all(|p| p.trim().is_empty()) {
                return bad("expected comma-separated patterns such as worker_main,libfoo.so");
            }
            Ok(given.to_owned())
        }
        Kind::Flag(_) | Kind::Switch => unreachable!("flags take no value"),
    }
}

fn one_of(words: &[&str]) -> String {
    match words {
        [a, b] => format!("`{a}` or `{b}`"),
        _ => {
            let quoted: Vec<_> = words.iter().map(|w| format!("`{w}`")).collect();
            format!("one of {}", quoted.join(", "))
        }
    }
}

fn show(d: Duration) -> String {
    if d.as_micros() < 1000 {
        format!("{}us", d.as_micros())
    } else if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// `--stack-size`'s value, as the help and docs/configuration.md give it: a whole number of
/// bytes, or of KiB, MiB or GiB with the suffix `k`, `m` or `g` (either case);
/// nothing else (no spaces, no `kb`), from `min` to `max`.
fn stack_size(given: &str, min: usize, max: usize) -> Result<usize, Failure> {
    let (digits, shift) = match given.as_bytes().last() {
        Some(b'k' | b'K') => (&given[..given.len() - 1], 10),
        Some(b'm' | b'M') => (&given[..given.len() - 1], 20),
        Some(b'g' | b'G') => (&given[..given.len() - 1], 30),
        _ => (given, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return fail(
            status::USAGE,
            format!(
                "--stack-size {given}: expected a number of bytes, optionally with the \
                 suffix k, m or g, such as 65536, 64k or 1M"
            ),
        );
    }
    // Too many digits for u64 is too large, as is what the shift overflows.
    let size = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .and_then(|n| usize::try_from(n).ok());
    match size {
        Some(n) if n < min => fail(
            status::USAGE,
            format!("--stack-size {given}: too small; at least {min} bytes (16k)"),
        ),
        Some(n) if n <= max => Ok(n),
        _ => fail(
            status::USAGE,
            format!("--stack-size {given}: too large; at most {max} bytes (1g)"),
        ),
    }
}

/// `5ms`, `500us`, `2s`; a bare number is milliseconds: the syntax of the
/// library's duration variables (`PATCHALL_TIMESLICE`, `PATCHALL_MONITOR`).
/// A local copy: the launcher does not link the library.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits);
    let num: u64 = num.parse().ok()?;
    match unit {
        "" | "ms" => Some(Duration::from_millis(num)),
        "us" | "µs" => Some(Duration::from_micros(num)),
        "s" => Some(Duration::from_secs(num)),
        _ => None,
    }
}

/// The options `which` picks, as `--help` lists them: one entry per option,
/// wrapped to 80 columns.
pub fn help(which: impl Fn(&Opt) -> bool) -> String {
    let mut out = String::new();
    for opt in OPTIONS.iter().filter(|o| which(o)) {
        let head = if opt.metavar.is_empty() {
            format!("  {}", opt.name)
        } else {
            format!("  {} {}", opt.name, opt.metavar)
        };
        let text = match (opt.var, &opt.kind) {
            (Some(var), Kind::Flag(value)) => format!("{} ({var}={value})", opt.help),
            (Some(var), _) => format!("{} ({var})", opt.help),
            (None, _) => opt.help.to_owned(),
        };
        let mut line = head.clone();
        let indent = 27;
        if line.len() + 1 >= indent {
            out.push_str(&line);
            out.push('\n');
            line = String::new();
        }
        for word in text.split_whitespace() {
            if line.len() < indent {
                line.push_str(&" ".repeat(indent - line.len()));
            } else if line.len() + 1 + word.len() > 80 {
                out.push_str(&line);
                out.push('\n');
                line = " ".repeat(indent);
            } else {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The variables `patchall env --unset` clears: every one the table sets.
pub fn all_vars() -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().filter_map(|o| o.var)
}

/// The words a shell may complete after `opt` (for a choice, the choices).
pub fn values(opt: &Opt) -> Vec<&'static str> {
    match opt.kind {
        Kind::Choice(words) => words.to_vec(),
        Kind::Signal => SIGNALS.iter().map(|(s, _)| *s).collect(),
        Kind::Duration(..) => vec!["off"],
        _ => Vec::new(),
    }
}
