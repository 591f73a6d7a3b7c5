//! The differential suite (issue 13): every scenario of `tests/diff/*.c` runs
//! natively, under `LD_PRELOAD`, and under `patchall run --green-threads` on 1
//! and 2 workers; each mode's stdout and exit status must equal the native
//! run's, unless `tests/diff/differences*.txt` lists the difference (one file
//! per group of scenario files, so that parallel work never edits one list).
//!
//! `differences*.txt`, one line per known difference (`#` comments allowed):
//!
//! ```text
//! <file>/<scenario> <modes: preload,green1,green2,own1,own2> <by-design|bug> <reason>
//! ```
//!
//! A mode written with a trailing `?` (`green1,green2?`) may or may not
//! differ from run to run (a race in patchall, not in the scenario): never
//! stale. The test fails on a difference not listed, on a listed one that no
//! longer occurs (a stale line), and on a `by-design` line whose scenario
//! docs/limits.md does not name (its list of differences kept by design is this
//! file's).
//!
//! Switches (environment):
//! - `PATCHALL_DIFF_ONLY=GLOB[,GLOB...]`: run only the matching scenarios
//!   (`*` and `?`, on `<file>/<scenario>`); lines of others are not checked.
//! - `PATCHALL_DIFF_MODES=preload,green1,green2,own1,own2`: run these modes
//!   (default: all; `own1`/`own2` are green threads with
//!   `PATCHALL_GREEN_TLS=own`, the default, `green1`/`green2` with `shared`).
//! - `PATCHALL_DIFF_NATIVE_TWICE=1`: run native twice and fail on scenarios
//!   whose native output varies (a scenario bug: its output must be stable).
//! - `PATCHALL_DIFF_JOBS=N`: runs at a time (default 2, the CI's cores).
//! - `PATCHALL_DIFF_VERBOSE=1`: print every scenario's native output.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{cc, preload_lib, root};

const PATCHALL: &str = env!("CARGO_BIN_EXE_patchall");

/// Longest one scenario may run in one mode; its process group is killed then.
const LIMIT: Duration = Duration::from_secs(20);

/// The modes compared with native, in report order: `own1` and `own2` are
/// green threads with TLS of their own (`PATCHALL_GREEN_TLS=own`, the
/// default), `green1` and `green2` with their OS thread's (`shared`).
const MODES: [&str; 5] = ["preload", "green1", "green2", "own1", "own2"];

#[derive(Clone, Debug, PartialEq, Eq)]
struct RunResult {
    stdout: String,
    /// "exit N", "signal N (NAME)" or "timeout".
    end: String,
    stderr: String,
    took: Duration,
}

impl RunResult {
    fn same(&self, other: &RunResult) -> bool {
        self.stdout == other.stdout && self.end == other.end
    }
}

/// `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    let items: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!items.is_empty()).then_some(items)
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("1") | Ok("yes") | Ok("true")
    )
}

/// Compiles every `tests/diff/*.c` (two at a time); returns (stem, program).
fn compile_all() -> Vec<(String, PathBuf)> {
    let src_dir = root().join("tests/diff");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("diff");
    std::fs::create_dir_all(&out_dir).expect("create the diff output directory");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src_dir)
        .expect("read tests/diff")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no scenarios in {}", src_dir.display());
    // A program newer than its source and every header is up to date.
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let headers = std::fs::read_dir(&src_dir)
        .expect("read tests/diff")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "h"))
        .filter_map(|p| mtime(&p))
        .max();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(src) = sources.get(i) else { break };
                    let stem = src.file_stem().unwrap().to_string_lossy();
                    let out = out_dir.join(&*stem);
                    let fresh = mtime(&out).is_some_and(|built| {
                        mtime(src).is_some_and(|t| t < built) && headers.is_none_or(|t| t < built)
                    });
                    if fresh {
                        continue;
                    }
                    cc(
                        src,
                        &out,
                        &[
                            "-O1",
                            "-g",
                            "-Wextra",
                            "-Werror",
                            "-D_GNU_SOURCE",
                            "-I",
                            src_dir.to_str().unwrap(),
                        ],
                    );
                }
            });
        }
    });
    sources
        .iter()
        .map(|src| {
            let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
            let prog = out_dir.join(&stem);
            (stem, prog)
        })
        .collect()
}

/// The command for `prog scenario` in `mode`.
fn command(mode: &str, prog: &Path, scenario: &str) -> Command {
    let mut c = match mode {
        "native" | "native2" => Command::new(prog),
        "preload" => {
            let mut c = Command::new(prog);
            c.env("LD_PRELOAD", preload_lib());
            c
        }
        "green1" | "green2" | "own1" | "own2" => {
            let mut c = Command::new(PATCHALL);
            c.args(["run", "--green-threads", "--"]).arg(prog);
            c.env(
                "PATCHALL_WORKERS",
                if mode.ends_with('1') { "1" } else { "2" },
            );
            c.env(
                "PATCHALL_GREEN_TLS",
                if mode.starts_with("own") {
                    "own"
                } else {
                    "shared"
                },
            );
            c
        }
        other => panic!("unknown mode {other}"),
    };
    c.arg(scenario);
    c
}

/// Runs `cmd` in a process group of its own, stdin /dev/null, with `LIMIT`;
/// whatever of its group is left when it ends is killed too (a scenario's
/// stray child must not hold the output pipe open).
fn run_bounded(mut cmd: Command) -> RunResult {
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        let explicit = cmd.get_envs().any(|(k, _)| k == key);
        if (name.starts_with("PATCHALL_") || name == "LD_PRELOAD") && !explicit {
            cmd.env_remove(&key);
        }
    }
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pgid = child.id() as libc::pid_t;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break s;
        }
        if start.elapsed() > LIMIT {
            timed_out = true;
            // SAFETY: kill(2) on the process group this run created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            break child.wait().expect("wait for killed child");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = start.elapsed();
    // SAFETY: as above; ESRCH when nothing of the group is left.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let end = if timed_out {
        "timeout".to_owned()
    } else if let Some(code) = status.code() {
        format!("exit {code}")
    } else {
        let sig = status.signal().unwrap_or(0);
        format!("signal {sig} ({})", signal_name(sig))
    };
    RunResult {
        stdout: out.join().expect("stdout reader"),
        end,
        stderr: err.join().expect("stderr reader"),
        took,
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGALRM => "SIGALRM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGSYS => "SIGSYS",
        _ => "?",
    }
}

#[derive(Debug)]
struct Listed {
    modes: BTreeSet<String>,
    /// Modes marked `?`: they differ only sometimes.
    sometimes: BTreeSet<String>,
    kind: String,
    /// "differences.txt:12", for messages.
    at: String,
}

/// Parses every `differences*.txt` in `dir`; panics on a malformed line (a
/// clear error).
fn read_differences(dir: &Path) -> BTreeMap<String, Listed> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read tests/diff")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("differences") && n.ends_with(".txt"))
        })
        .collect();
    files.sort();
    let mut map = BTreeMap::new();
    for file in files {
        let fname = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).expect("read a differences file");
        for (i, raw) in text.lines().enumerate() {
            read_line(&mut map, format!("{fname}:{}", i + 1), raw);
        }
    }
    map
}

fn read_line(map: &mut BTreeMap<String, Listed>, n: String, raw: &str) {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return;
    }
    let mut f = line.split_whitespace();
    let (Some(name), Some(modes), Some(kind)) = (f.next(), f.next(), f.next()) else {
        panic!("{n}: want `<file>/<scenario> <modes> <by-design|bug> <reason>`: {raw:?}");
    };
    assert!(f.next().is_some(), "{n}: a line needs a reason: {raw:?}");
    assert!(
        name.contains('/'),
        "{n}: scenario is <file>/<name>: {name:?}"
    );
    assert!(
        kind == "by-design" || kind == "bug",
        "{n}: kind is by-design or bug, not {kind:?}"
    );
    let mut sometimes = BTreeSet::new();
    let modes: BTreeSet<String> = modes
        .split(',')
        .map(|m| match m.strip_suffix('?') {
            Some(m) => {
                sometimes.insert(m.to_owned());
                m.to_owned()
            }
            None => m.to_owned(),
        })
        .collect();
    for m in &modes {
        assert!(
            MODES.contains(&m.as_str()),
            "{n}: unknown mode {m:?} (preload, green1, green2, own1, own2)"
        );
    }
    let prev = map.insert(
        name.to_owned(),
        Listed {
            modes,
            sometimes,
            kind: kind.to_owned(),
            at: n.clone(),
        },
    );
    assert!(
        prev.is_none(),
        "{n}: {name} listed twice (one line per scenario)"
    );
}

/// The first differing stdout lines of two runs, with a line of context.
fn show_difference(native: &RunResult, other: &RunResult, mode: &str) -> String {
    let mut s = String::new();
    if native.end != other.end {
        s += &format!("    ended: native {}, {mode} {}\n", native.end, other.end);
    }
    let a: Vec<&str> = native.stdout.lines().collect();
    let b: Vec<&str> = other.stdout.lines().collect();
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        let from = i.saturating_sub(1);
        s += &format!("    stdout differs at line {}:\n", i + 1);
        for (label, v) in [("native", &a), (mode, &b)] {
            for (j, l) in v.iter().enumerate().skip(from).take(4) {
                s += &format!("      {label:>7} {:>3}: {l}\n", j + 1);
            }
            if v.len() <= i {
                s += &format!("      {label:>7}    : (ends after {} lines)\n", v.len());
            }
        }
    }
    let tail: Vec<&str> = other.stderr.lines().rev().take(3).collect();
    for l in tail.iter().rev() {
        s += &format!("      {mode} stderr: {l}\n");
    }
    s
}

#[test]
fn differential_suite() {
    let t0 = Instant::now();
    preload_lib();
    assert!(Path::new(PATCHALL).is_file(), "{PATCHALL} was not built");
    let programs = compile_all();

    // Scenario names, from each program's --list.
    let mut all: Vec<(String, PathBuf, String)> = Vec::new();
    for (stem, prog) in &programs {
        let listed = run_bounded({
            let mut c = Command::new(prog);
            c.arg("--list");
            c
        });
        assert_eq!(listed.end, "exit 0", "{stem} --list: {listed:?}");
        for name in listed.stdout.lines() {
            all.push((format!("{stem}/{name}"), prog.clone(), name.to_owned()));
        }
    }
    let names: BTreeSet<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names.len(), all.len(), "a scenario name is listed twice");

    let differences = read_differences(&root().join("tests/diff"));
    let limits =
        std::fs::read_to_string(root().join("docs/limits.md")).expect("read docs/limits.md");
    let mut problems: Vec<String> = Vec::new();
    for (name, l) in &differences {
        if !names.contains(name.as_str()) {
            problems.push(format!("{}: {name} is no scenario: remove it", l.at));
        }
        if l.kind == "by-design" && !limits.contains(name.as_str()) {
            problems.push(format!(
                "{}: {name} is by-design but docs/limits.md does not name it \
                 (its list of differences kept by design must hold `{name}`)",
                l.at
            ));
        }
    }

    let only = env_list("PATCHALL_DIFF_ONLY");
    let modes: Vec<&str> = match env_list("PATCHALL_DIFF_MODES") {
        Some(m) => {
            for x in &m {
                assert!(
                    MODES.contains(&x.as_str()),
                    "PATCHALL_DIFF_MODES: unknown mode {x:?}"
                );
            }
            MODES
                .iter()
                .copied()
                .filter(|x| m.iter().any(|y| y == x))
                .collect()
        }
        None => MODES.to_vec(),
    };
    let twice = env_flag("PATCHALL_DIFF_NATIVE_TWICE");
    let verbose = env_flag("PATCHALL_DIFF_VERBOSE");
    let jobs: usize = std::env::var("PATCHALL_DIFF_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(2);
    let selected: Vec<&(String, PathBuf, String)> = all
        .iter()
        .filter(|(full, _, _)| {
            only.as_ref()
                .is_none_or(|globs| globs.iter().any(|g| glob(g, full)))
        })
        .collect();
    assert!(
        !selected.is_empty(),
        "PATCHALL_DIFF_ONLY={only:?} matches no scenario"
    );

    let mut run_modes: Vec<&str> = vec!["native"];
    if twice {
        run_modes.push("native2");
    }
    run_modes.extend(&modes);
    let work: Vec<(usize, &str)> = (0..selected.len())
        .flat_map(|i| run_modes.iter().map(move |m| (i, *m)))
        .collect();
    let results: Mutex<BTreeMap<(usize, String), RunResult>> = Mutex::new(BTreeMap::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(i, mode)) = work.get(k) else { break };
                    let (_, prog, name) = selected[i];
                    let r = run_bounded(command(mode, prog, name));
                    results.lock().unwrap().insert((i, mode.to_owned()), r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_mode: BTreeMap<&str, usize> = BTreeMap::new();
    let mut slow: Vec<(Duration, String)> = Vec::new();
    let mut mode_time: BTreeMap<&str, Duration> = BTreeMap::new();
    for ((_, mode), r) in &results {
        *mode_time.entry(mode.as_str()).or_default() += r.took;
    }
    for (i, (full, _, _)) in selected.iter().enumerate() {
        let native = &results[&(i, "native".to_owned())];
        slow.push((native.took, full.clone()));
        if verbose {
            println!("== {full} ({}):\n{}", native.end, native.stdout);
        }
        if native.end == "timeout" || native.end == "exit 99" {
            problems.push(format!(
                "{full}: broken natively ({}): fix the scenario\n{}{}",
                native.end, native.stdout, native.stderr
            ));
        }
        if twice {
            let again = &results[&(i, "native2".to_owned())];
            if !native.same(again) {
                counts
                    .entry("unstable natively")
                    .and_modify(|c| *c += 1)
                    .or_insert(1);
                problems.push(format!(
                    "{full}: native output varies between two runs (a scenario bug)\n{}",
                    show_difference(native, again, "native2")
                ));
            }
        }
        let listed = differences.get(full.as_str());
        let mut differing: BTreeSet<String> = BTreeSet::new();
        let mut report = String::new();
        for &mode in &modes {
            let r = &results[&(i, mode.to_owned())];
            if !native.same(r) {
                *per_mode.entry(mode).or_insert(0) += 1;
                differing.insert(mode.to_owned());
                report += &format!("  {mode}:\n{}", show_difference(native, r, mode));
            }
        }
        let listed_here: BTreeSet<String> = listed
            .map(|l| {
                l.modes
                    .iter()
                    .filter(|m| modes.contains(&m.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let unlisted: Vec<&String> = differing.difference(&listed_here).collect();
        let stale: Vec<&String> = listed_here
            .difference(&differing)
            .filter(|m| listed.is_none_or(|l| !l.sometimes.contains(*m)))
            .collect();
        if let Some(l) = listed {
            if !differing.is_empty() {
                *counts
                    .entry(if l.kind == "bug" {
                        "listed bug"
                    } else {
                        "listed by-design"
                    })
                    .or_insert(0) += 1;
            }
        }
        if !unlisted.is_empty() {
            *counts.entry("not listed").or_insert(0) += 1;
            problems.push(format!(
                "{full}: differs in {} (not in tests/diff/differences*.txt)\n{report}",
                unlisted
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        if !stale.is_empty() {
            *counts.entry("stale").or_insert(0) += 1;
            let l = listed.unwrap();
            problems.push(format!(
                "{}: {full} no longer differs in {}: remove it{}",
                l.at,
                stale
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                if stale.len() < l.modes.len() {
                    " (from the line's modes)"
                } else {
                    ""
                }
            ));
        }
    }
    slow.sort();
    println!(
        "differential suite: {} scenarios in {} files ({} selected), {} runs, modes native,{} \
         ({} at a time), {:.1} s",
        all.len(),
        programs.len(),
        selected.len(),
        results.len(),
        modes.join(","),
        jobs,
        t0.elapsed().as_secs_f64()
    );
    println!("  differing scenarios per mode: {per_mode:?}");
    println!("  differences by kind: {counts:?}");
    let slowest: Vec<String> = slow
        .iter()
        .rev()
        .take(5)
        .map(|(d, n)| format!("{n} {} ms", d.as_millis()))
        .collect();
    println!("  slowest natively: {}", slowest.join(", "));
    let per_mode: Vec<String> = mode_time
        .iter()
        .map(|(m, d)| format!("{m} {:.1} s", d.as_secs_f64()))
        .collect();
    println!("  time in runs per mode: {}", per_mode.join(", "));
    if !problems.is_empty() {
        for p in &problems {
            println!("{p}");
        }
        panic!(
            "{} problem(s) in the differential suite (listed above)",
            problems.len()
        );
    }
}
