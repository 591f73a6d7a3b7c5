//! `patchall check`, `patchall env`, the option table behind every flag, and
//! the bash completion.

mod common;

#[allow(dead_code)]
#[path = "../src/bin/patchall/calls.rs"]
mod calls;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Outcome, TempDir, c_program, cc, preload_lib, program_or_skip, run};

const PATCHALL: &str = env!("CARGO_BIN_EXE_patchall");

/// `patchall ARGS...`, with the library built next to it.
fn patchall(args: &[&str]) -> Outcome {
    preload_lib();
    let mut c = Command::new(PATCHALL);
    c.args(args).env_remove("LD_PRELOAD");
    run(c)
}

/// `patchall check --json PROGRAM`.
fn check_json(program: &Path) -> Outcome {
    patchall(&[
        "check",
        "--json",
        "--",
        program.to_str().expect("utf-8 path"),
    ])
}

/// Asserts that the JSON report lists `call` as `kind`, imported by `by`.
fn lists(out: &Outcome, call: &str, kind: &str, by: &str) {
    let entry = format!("{{\"name\":\"{call}\",\"kind\":\"{kind}\",");
    let at = out
        .stdout
        .find(&entry)
        .unwrap_or_else(|| panic!("no {entry} in {}", out.stdout));
    let rest = &out.stdout[at..];
    let end = rest.find('}').expect("entry ends");
    assert!(
        rest[..end].contains(&format!("\"{by}\"")),
        "{call} not imported by {by}: {}",
        &rest[..end]
    );
}

/// The table in src/bin/patchall/calls.rs names exactly the symbols
/// libpatchall.so defines as hooked (the C API's `pa_*` aside), and no call
/// twice: a hook added or removed without the table fails here.
#[test]
fn table_matches_the_library_exports() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(preload_lib())
        .output()
        .expect("nm (binutils) runs");
    assert!(out.status.success(), "nm failed");
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|name| !name.starts_with("pa_"))
        .map(String::from)
        .collect();
    assert!(exported.contains("read") && exported.contains("getaddrinfo"));
    let mut hooked = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for group in calls::GROUPS {
        for name in group.names {
            assert!(seen.insert(*name), "{name} is in the table twice");
            if group.hooked {
                hooked.insert(name.to_string());
            } else {
                assert!(
                    !exported.contains(*name),
                    "{name} is hooked now: move it to a hooked group ({:?})",
                    group.kind
                );
            }
        }
    }
    let missing: Vec<_> = exported.difference(&hooked).collect();
    let stale: Vec<_> = hooked.difference(&exported).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "hooks missing from calls.rs: {missing:?}; in calls.rs but not exported: {stale:?}"
    );
}

#[test]
fn c_program_importing_blocking_calls() {
    let program = c_program("check_blocking");
    let out = check_json(&program);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.contains("\"preload\":true"), "{out:?}");
    assert!(out.stdout.contains("\"green_threads\":\"blocking-calls\""));
    let by = "check_blocking";
    for (call, kind) in [
        ("read", "parks"),
        ("connect", "parks"),
        ("sleep", "parks"),
        ("getaddrinfo", "offloaded"),
        ("waitpid", "offloaded"),
        ("open", "files"),
        ("fsync", "files"),
        ("pthread_mutex_lock", "green"),
        ("sem_wait", "green"),
        // The read inside fgets is trapped by syscall dispatch (on with
        // green threads, and this kernel has it) and parks.
        ("fgets", "parks"),
        ("fcntl", "sometimes"),
        ("pthread_mutexattr_setpshared", "sometimes"),
        ("flock", "blocks"),
        ("msgrcv", "blocks"),
        ("semop", "blocks"),
        ("mq_receive", "blocks"),
    ] {
        lists(&out, call, kind, by);
    }
    assert!(out.stdout.contains("\"name\":\"libc.so.6\""), "{out:?}");

    // The text report: the verdict names the blocking calls, one line a call.
    let text = patchall(&["check", program.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(1), "{text:?}");
    assert!(
        text.stdout.contains("4 imported calls block the OS thread")
            && text.stdout.contains("flock, mq_receive, msgrcv, semop"),
        "{text:?}"
    );
    let flock: Vec<_> = text
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("flock "))
        .collect();
    assert_eq!(flock.len(), 1, "{text:?}");
    assert!(flock[0].contains("[check_blocking]"), "{flock:?}");
    assert_eq!(text.stderr, "");

    // `--offload-files off` makes file calls block the thread (in some uses:
    // not what the verdict counts), as the library will do.
    let off = patchall(&[
        "check",
        "--json",
        "--offload-files",
        "off",
        program.to_str().unwrap(),
    ]);
    lists(&off, "fsync", "sometimes", by);
    assert!(off.stdout.contains("\"offload_files\":\"off\""));
    // Without syscall dispatch the read inside fgets blocks the thread where
    // the FILE is a socket; flock blocks either way.
    let dispatch = patchall(&[
        "check",
        "--json",
        "--syscall-dispatch",
        "off",
        program.to_str().unwrap(),
    ]);
    lists(&dispatch, "fgets", "sometimes", by);
    lists(&dispatch, "flock", "blocks", by);
    assert_eq!(dispatch.status.code(), Some(1), "{dispatch:?}");
    let mut c = Command::new(PATCHALL);
    c.args(["check", "--json", program.to_str().unwrap()])
        .env("PATCHALL_OFFLOAD_FILES", "always");
    let always = run(c);
    lists(&always, "open", "files", by);
    assert!(
        always.stdout.contains("\"what\":\"on the pool\""),
        "{always:?}"
    );
}

#[test]
fn c_program_of_cooperative_calls_only_is_safe() {
    let program = c_program("check_cooperative");
    let out = check_json(&program);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("\"green_threads\":\"safe\""));
    lists(&out, "poll", "parks", "check_cooperative");
    lists(&out, "getaddrinfo", "offloaded", "check_cooperative");
    // The check never runs it: the program prints "ran" when it does.
    assert!(!out.stdout.contains("ran\n"));
    let text = patchall(&["check", program.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    assert!(
        text.stdout.contains("green threads: safe to try"),
        "{text:?}"
    );
}

#[test]
fn static_programs_cannot_be_preloaded() {
    let dir = TempDir::new("check-static");
    let src = dir.path().join("hello.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").expect("write source");
    let bin = dir.path().join("hello");
    cc(&src, &bin, &["-static"]);
    let out = check_json(&bin);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(out.stdout.contains("\"preload\":false"), "{out:?}");
    assert!(out.stdout.contains("statically linked (static,"), "{out:?}");
    assert!(out.stdout.contains("\"green_threads\":\"no\""), "{out:?}");
    let text = patchall(&["check", bin.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(126), "{text:?}");
    assert!(
        text.stdout
            .contains("green threads: no: LD_PRELOAD cannot take effect")
    );
    assert_eq!(text.stderr, "", "the answer is the report, not an error");
}

#[test]
fn set_id_programs_cannot_be_preloaded() {
    // SAFETY: no preconditions.
    let uid = unsafe { libc::getuid() };
    let dir = TempDir::new("check-setid");
    let program = if uid == 0 {
        let copy = dir.path().join("setuid-cat");
        std::fs::copy("/bin/cat", &copy).expect("copy /bin/cat");
        std::os::unix::fs::chown(&copy, Some(65534), None).expect("chown");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        copy
    } else {
        use std::os::unix::fs::MetadataExt;
        let Some(system) = ["/usr/bin/passwd", "/bin/su", "/usr/bin/chsh"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o4000 != 0))
        else {
            eprintln!("SKIPPED set_id_programs_cannot_be_preloaded: no set-uid program");
            return;
        };
        system
    };
    let out = check_json(&program);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(out.stdout.contains("is set-user-ID"), "{out:?}");
    assert!(out.stdout.contains("secure-execution"), "{out:?}");
}

#[test]
fn scripts_are_checked_through_their_interpreter() {
    let dir = TempDir::new("check-script");
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = check_json(&script);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    assert!(
        out.stdout.contains("\"line\":\"#!/bin/sh\""),
        "the script is named: {out:?}"
    );
    lists(&out, "read", "parks", "sh");

    // A missing interpreter: CMD cannot start, as execve would say.
    std::fs::write(&script, "#!/no/such/interpreter\n").expect("write script");
    let out = check_json(&script);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(
        out.stdout.contains("/no/such/interpreter: No such file"),
        "{out:?}"
    );

    // Without `#!`, execvp (and so `run`) hands the file to /bin/sh.
    std::fs::write(&script, "echo hi\n").expect("write script");
    let out = check_json(&script);
    assert!(
        out.stdout
            .contains("no #! line: execvp runs it with /bin/sh"),
        "{out:?}"
    );
    lists(&out, "read", "parks", "sh");

    // `#!/usr/bin/env NAME` runs NAME from PATH; a static interpreter is refused.
    let src = dir.path().join("interp.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").expect("write source");
    cc(&src, &dir.path().join("static-interp"), &["-static"]);
    std::fs::write(&script, "#!/usr/bin/env -S static-interp -x\n").expect("write script");
    let mut c = Command::new(PATCHALL);
    c.args(["check", script.to_str().unwrap()])
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()));
    let out = run(c);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(
        out.stdout
            .contains("a script (#!/usr/bin/env -S static-interp -x)"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("static-interp is statically linked"),
        "{out:?}"
    );
}

#[test]
fn missing_commands_and_usage() {
    let out = patchall(&["check", "--json", "no-such-command-here"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(out.stdout.contains("\"status\":127"), "{out:?}");
    let out = patchall(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = patchall(&["check", "--unset", "true"]);
    assert_eq!(out.status.code(), Some(2), "--unset is env's: {out:?}");
    let out = patchall(&["env", "--json"]);
    assert_eq!(out.status.code(), Some(2), "--json is check's: {out:?}");
}

#[test]
fn curl_as_installed() {
    let Some(curl) = program_or_skip("curl_as_installed", "curl", "curl") else {
        return;
    };
    let out = check_json(&curl);
    assert!(out.stdout.contains("\"preload\":true"), "{out:?}");
    assert!(out.stdout.contains("\"name\":\"libcurl.so.4\""), "{out:?}");
    lists(&out, "connect", "parks", "libcurl.so.4");
    lists(&out, "getaddrinfo", "offloaded", "libcurl.so.4");
    status_follows_the_list(&out);
}

#[test]
fn python3_as_installed() {
    // The system's python3 itself, not a wrapper earlier in PATH (pyenv's shim
    // is a script).
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        assert!(
            std::env::var("PATCHALL_TEST_REQUIRE_PROGRAMS").as_deref() != Ok("1"),
            "/usr/bin/python3 missing (Debian package python3)"
        );
        eprintln!("SKIPPED python3_as_installed: no /usr/bin/python3");
        return;
    }
    let out = check_json(python);
    let name = "python3";
    lists(&out, "accept", "parks", name);
    lists(&out, "getaddrinfo", "offloaded", name);
    lists(&out, "sem_wait", "green", name);
    status_follows_the_list(&out);
}

/// Exit status 1 exactly when a call listed blocks the thread, else 0.
fn status_follows_the_list(out: &Outcome) {
    let blocks = out.stdout.contains("\"kind\":\"blocks\"");
    assert_eq!(out.status.code(), Some(i32::from(blocks)), "{out:?}");
    let verdict = if blocks { "blocking-calls" } else { "safe" };
    assert!(
        out.stdout
            .contains(&format!("\"green_threads\":\"{verdict}\"")),
        "{out:?}"
    );
}

/// Every option of the table: a good value sets its variable (as `env` prints
/// it), a bad one is a usage error naming the option. Every option `--help`
/// lists must be here.
#[test]
fn every_option_validates_and_sets_its_variable() {
    let good: &[(&str, Option<&str>, &str, &str)] = &[
        ("--green-threads", None, "PATCHALL_GREEN_THREADS", "1"),
        ("--workers", Some("4"), "PATCHALL_WORKERS", "4"),
        ("--stack-size", Some("64k"), "PATCHALL_STACK_SIZE", "65536"),
        ("--stacks", Some("dense"), "PATCHALL_STACKS", "dense"),
        (
            "--offload-threads",
            Some("8"),
            "PATCHALL_OFFLOAD_THREADS",
            "8",
        ),
        (
            "--offload-files",
            Some("Always"),
            "PATCHALL_OFFLOAD_FILES",
            "always",
        ),
        (
            "--native-threads",
            Some("worker_main,libfoo.so"),
            "PATCHALL_NATIVE_THREADS",
            "worker_main,libfoo.so",
        ),
        ("--timeslice", Some("500us"), "PATCHALL_TIMESLICE", "500us"),
        (
            "--syscall-dispatch",
            Some("on"),
            "PATCHALL_SYSCALL_DISPATCH",
            "on",
        ),
        ("--green-tls", Some("own"), "PATCHALL_GREEN_TLS", "own"),
        ("--io", Some("Uring"), "PATCHALL_IO", "uring"),
        ("--monitor", Some("100ms"), "PATCHALL_MONITOR", "100ms"),
        (
            "--dump-signal",
            Some("usr2"),
            "PATCHALL_DUMP_SIGNAL",
            "SIGUSR2",
        ),
        ("--dump-at-exit", None, "PATCHALL_DUMP", "exit"),
        ("--stats", None, "PATCHALL_STATS", "1"),
    ];
    let bad: &[(&str, &str, &str)] = &[
        ("--workers", "0", "out of range; from 1 to 1024"),
        ("--workers", "1025", "out of range"),
        ("--workers", "two", "expected a whole number"),
        ("--stack-size", "1k", "too small"),
        ("--stacks", "sparse", "expected `guarded` or `dense`"),
        ("--offload-threads", "4097", "out of range; from 1 to 4096"),
        ("--offload-files", "sometimes", "`auto`, `always`, `off`"),
        (
            "--native-threads",
            " , ",
            "expected comma-separated patterns",
        ),
        ("--timeslice", "10us", "out of range; from 100us to 60s"),
        ("--timeslice", "2h", "expected a duration"),
        ("--syscall-dispatch", "maybe", "expected `on` or `off`"),
        ("--green-tls", "mine", "expected `own` or `shared`"),
        ("--io", "kqueue", "expected `epoll` or `uring`"),
        ("--monitor", "fast", "expected a duration"),
        (
            "--dump-signal",
            "SIGKILL",
            "expected a signal name or number",
        ),
        ("--dump-signal", "SEGV", "expected a signal name or number"),
        ("--dump-signal", "9", "expected a signal name or number"),
    ];
    for (opt, value, var, want) in good {
        let mut args = vec!["env", opt];
        args.extend(value);
        let out = patchall(&args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            out.stdout.contains(&format!("export {var}='{want}'\n")),
            "{args:?}: {out:?}"
        );
        // The `--opt=value` form, and `run`, which sets it for the command.
        let joined = value.map_or(opt.to_string(), |v| format!("{opt}={v}"));
        let out = patchall(&["run", &joined, "--", "printenv", var]);
        assert_eq!(out.stdout, format!("{want}\n"), "{joined}: {out:?}");
    }
    for (opt, value, words) in bad {
        for sub in ["run", "env", "check"] {
            let out = patchall(&[sub, opt, value, "--", "true"]);
            assert_eq!(out.status.code(), Some(2), "{sub} {opt} {value}: {out:?}");
            assert!(
                out.stderr.contains(&format!("{opt} {value}: ")) && out.stderr.contains(words),
                "{sub} {opt} {value}: {out:?}"
            );
        }
    }
    // Flags take no value; options need one.
    let out = patchall(&["run", "--stats=1", "true"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = patchall(&["run", "--monitor"]);
    assert!(out.stderr.contains("--monitor needs a value"), "{out:?}");
    // The duration bounds and off.
    for (value, want) in [("0", "off"), ("OFF", "off"), ("60s", "60s"), ("5", "5")] {
        let out = patchall(&["env", "--timeslice", value]);
        assert!(
            out.stdout.contains(&format!("PATCHALL_TIMESLICE='{want}'")),
            "{value}: {out:?}"
        );
    }
    // The bounds are the library's.
    let max_workers = patchall::MAX_WORKERS.to_string();
    assert!(
        patchall(&["env", "--workers", &max_workers])
            .status
            .success()
    );
    let min_stack = patchall::MIN_STACK_SIZE.to_string();
    let max_stack = patchall::MAX_STACK_SIZE.to_string();
    assert!(
        patchall(&["env", "--stack-size", &min_stack])
            .status
            .success()
    );
    assert!(
        patchall(&["env", "--stack-size", &max_stack])
            .status
            .success()
    );
    let under = (patchall::MIN_STACK_SIZE - 1).to_string();
    assert_eq!(
        patchall(&["env", "--stack-size", &under]).status.code(),
        Some(2)
    );

    let tested: BTreeSet<&str> = good.iter().map(|g| g.0).collect();
    let listed: BTreeSet<String> = help_options().into_iter().map(|(o, _)| o).collect();
    let untested: Vec<_> = listed
        .iter()
        .filter(|o| !tested.contains(o.as_str()) && !["--json", "--unset"].contains(&o.as_str()))
        .collect();
    assert!(
        untested.is_empty(),
        "options without a test here: {untested:?}"
    );
}

/// Whether the library (preloaded into /bin/true) warns about `var=value`.
fn library_refuses(var: &str, value: &str) -> bool {
    let mut c = Command::new("/bin/true");
    c.env("LD_PRELOAD", preload_lib())
        .env("PATCHALL_GREEN_THREADS", "1")
        .env(var, value);
    let out = run(c);
    assert!(out.status.success(), "{var}={value}: {out:?}");
    out.stderr
        .contains(&format!("ignoring bad value {var}=\"{value}\""))
}

/// The launcher accepts exactly the values the library accepts, and what it
/// sets the library reads without a warning: its checks are a copy (it does
/// not link the library), so this keeps the copy honest. Variables this build
/// of the library does not read yet are skipped, named on stderr.
#[test]
fn launcher_and_library_agree_on_values() {
    let samples: &[(&str, &str, &[&str])] = &[
        (
            "--workers",
            "PATCHALL_WORKERS",
            &["1", "1024", "0", "1025", "two"],
        ),
        (
            "--stack-size",
            "PATCHALL_STACK_SIZE",
            &["16384", "16383", "1g", "1073741825", "64k"],
        ),
        (
            "--stacks",
            "PATCHALL_STACKS",
            &["guarded", "dense", "sparse"],
        ),
        (
            "--io",
            "PATCHALL_IO",
            &["epoll", "uring", "URING", "kqueue"],
        ),
        (
            "--offload-threads",
            "PATCHALL_OFFLOAD_THREADS",
            &["1", "4096", "0", "4097"],
        ),
        (
            "--offload-files",
            "PATCHALL_OFFLOAD_FILES",
            &["auto", "always", "off", "Always", "sometimes"],
        ),
        (
            "--timeslice",
            "PATCHALL_TIMESLICE",
            &[
                "100us", "99us", "60s", "61s", "off", "0", "5", "5MS", "2h", "fast",
            ],
        ),
        (
            "--syscall-dispatch",
            "PATCHALL_SYSCALL_DISPATCH",
            &["on", "off", "ON", "maybe"],
        ),
        (
            "--green-tls",
            "PATCHALL_GREEN_TLS",
            &["own", "shared", "mine"],
        ),
        (
            "--monitor",
            "PATCHALL_MONITOR",
            &["1ms", "999us", "60s", "61s", "off", "fast"],
        ),
        (
            "--dump-signal",
            "PATCHALL_DUMP_SIGNAL",
            &[
                "SIGUSR2", "usr2", "12", "off", "SIGKILL", "9", "SEGV", "RTMIN",
            ],
        ),
    ];
    let mut skipped = Vec::new();
    for (opt, var, values) in samples {
        if !library_refuses(var, "garbage!") {
            skipped.push(*var);
            continue;
        }
        for value in *values {
            let out = patchall(&["env", opt, value]);
            let prefix = format!("export {var}='");
            let set = out
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .map(|v| v.trim_end_matches('\''));
            match set {
                Some(set) => assert!(
                    !library_refuses(var, set),
                    "{opt} {value} accepted as {var}={set}, which the library refuses"
                ),
                None => {
                    assert_eq!(out.status.code(), Some(2), "{opt} {value}: {out:?}");
                    assert!(
                        library_refuses(var, value),
                        "{opt} {value} refused, but the library accepts {var}={value}"
                    );
                }
            }
        }
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "launcher_and_library_agree_on_values: this library does not read {skipped:?} yet"
        );
    }
}

/// `(option, variable)` for each option `patchall --help` lists.
fn help_options() -> Vec<(String, Option<String>)> {
    let out = patchall(&["--help"]);
    assert!(out.status.success());
    let mut found = Vec::new();
    for line in out.stdout.lines() {
        let Some(rest) = line.strip_prefix("  --") else {
            continue;
        };
        let name = format!("--{}", rest.split_whitespace().next().unwrap());
        if name == "--help" || name == "--version" {
            continue;
        }
        found.push((name, None));
    }
    // Each option's text ends with its variable in parentheses, perhaps on a
    // later line: read the text between one option and the next.
    let text = out.stdout;
    for (i, (name, var)) in found.clone().into_iter().enumerate() {
        let start = text.find(&format!("  {name}")).unwrap();
        let end = found
            .get(i + 1)
            .and_then(|(next, _)| text.find(&format!("  {next}")))
            .unwrap_or(text.len());
        let chunk = &text[start..end];
        let found_var = chunk.find("(PATCHALL_").map(|at| {
            chunk[at + 1..]
                .split([')', '='])
                .next()
                .unwrap()
                .to_string()
        });
        found[i].1 = found_var.or(var);
    }
    found
}

/// docs/configuration.md's table of `patchall run` options is the one `--help`
/// prints.
#[test]
fn readme_lists_every_option() {
    let doc = std::fs::read_to_string(common::root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let mut documented = Vec::new();
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix("| `--") else {
            continue;
        };
        let name = format!("--{}", rest.split(['`', ' ']).next().unwrap());
        let line = line.replace("\\|", "/");
        let cells: Vec<_> = line.split('|').collect();
        let var = cells
            .get(2)
            .and_then(|c| c.split('`').nth(1))
            .filter(|v| v.starts_with("PATCHALL_"))
            .map(|v| v.split('=').next().unwrap().to_string());
        documented.push((name, var));
    }
    let mut help = help_options();
    help.sort();
    documented.sort();
    assert_eq!(
        documented, help,
        "docs/configuration.md's option table (`| \\`--name ...\\` | \\`VAR\\` |` rows) differs from --help"
    );
}

#[test]
fn env_prints_export_lines_a_shell_evaluates() {
    let lib = preload_lib().to_str().unwrap().to_owned();
    let out = patchall(&["env", "--green-threads", "--workers", "2"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        format!(
            "export LD_PRELOAD='{lib}'\nexport PATCHALL_GREEN_THREADS='1'\n\
             export PATCHALL_WORKERS='2'\n"
        )
    );
    // Evaluated by sh: set, then a second time (the library listed once, the
    // other entry kept), then undone.
    let script = format!(
        r#"eval "$({PATCHALL} env --green-threads)"; eval "$({PATCHALL} env --green-threads)"
        echo "$LD_PRELOAD|$PATCHALL_GREEN_THREADS"
        eval "$({PATCHALL} env --unset)"
        echo "${{LD_PRELOAD-unset}}|${{PATCHALL_GREEN_THREADS-unset}}""#
    );
    let mut c = Command::new("/bin/sh");
    c.args(["-c", &script]).env("LD_PRELOAD", "libm.so.6");
    let out = run(c);
    assert_eq!(
        out.stdout,
        format!("{lib}:libm.so.6|1\nlibm.so.6|unset\n"),
        "{out:?}"
    );
    let out = patchall(&["env", "--unset"]);
    assert!(
        out.stdout.starts_with("unset LD_PRELOAD\nunset "),
        "{out:?}"
    );
    for var in [
        "PATCHALL_GREEN_THREADS",
        "PATCHALL_MONITOR",
        "PATCHALL_STATS",
    ] {
        assert!(out.stdout.contains(var), "{out:?}");
    }
    // A quote in a value survives the shell.
    let out = patchall(&["env", "--native-threads", "it's"]);
    assert!(
        out.stdout
            .contains(r"export PATCHALL_NATIVE_THREADS='it'\''s'"),
        "{out:?}"
    );
    for args in [&["env", "--unset", "--stats"][..], &["env", "true"]] {
        assert_eq!(patchall(args).status.code(), Some(2), "{args:?}");
    }
}

/// What bash's completion offers for the words typed so far (the last one
/// being completed).
fn complete(words: &[&str]) -> Vec<String> {
    let script = patchall(&["completion", "bash"]).stdout;
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    let run_it = format!(
        "{script}\nCOMP_WORDS=({}); COMP_CWORD={}; _patchall; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        quoted.join(" "),
        words.len() - 1
    );
    let mut c = Command::new("bash");
    c.args(["--norc", "-c", &run_it]);
    let out = run(c);
    assert!(out.status.success(), "{out:?}");
    // printf prints one empty line for an empty COMPREPLY.
    let mut got: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    got.sort();
    got
}

#[test]
fn bash_completes_subcommands_flags_and_values() {
    assert_eq!(complete(&["patchall", "r"]), ["run"]);
    assert_eq!(complete(&["patchall", "c"]), ["check", "completion"]);
    assert_eq!(
        complete(&["patchall", "run", "--st"]),
        ["--stack-size", "--stacks", "--stats"]
    );
    assert_eq!(
        complete(&["patchall", "run", "--stacks", ""]),
        ["dense", "guarded"]
    );
    assert_eq!(
        complete(&["patchall", "run", "--stacks", "=", "d"]),
        ["dense"]
    );
    assert_eq!(
        complete(&["patchall", "check", "--offload-files", "a"]),
        ["always", "auto"]
    );
    assert_eq!(
        complete(&["patchall", "run", "--dump-signal", "SIGUSR"]),
        ["SIGUSR1", "SIGUSR2"]
    );
    assert_eq!(complete(&["patchall", "check", "--j"]), ["--json"]);
    assert!(complete(&["patchall", "run", "--j"]).is_empty());
    assert_eq!(complete(&["patchall", "env", "--un"]), ["--unset"]);
    assert_eq!(complete(&["patchall", "completion", ""]), ["bash", "zsh"]);
    // A number: nothing to offer, not the options.
    assert!(complete(&["patchall", "run", "--workers", ""]).is_empty());
    // After the options (and their values), the command and its arguments.
    let cmd = complete(&["patchall", "run", "--workers", "2", "--", "printen"]);
    assert!(cmd.contains(&"printenv".to_owned()), "{cmd:?}");
    let cmd = complete(&["patchall", "run", "--stats", "printen"]);
    assert!(cmd.contains(&"printenv".to_owned()), "{cmd:?}");
    let arg = complete(&["patchall", "run", "ls", "--st"]);
    assert!(!arg.contains(&"--stats".to_owned()), "ls's word: {arg:?}");

    // Every option --help lists is offered for `run`.
    let offered = complete(&["patchall", "run", "--"]);
    for (name, _) in help_options() {
        if name != "--json" && name != "--unset" {
            assert!(offered.contains(&name), "{name} not completed: {offered:?}");
        }
    }
}

/// Drives zsh's own completion (compinit, the script sourced) in a pseudo
/// terminal: for each line, the matches zsh lists for its last word.
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z 'PS1="%% "; autoload -Uz compinit; compinit -u -D; source "$SCRIPT"; zle -C list-all list-choices _main_complete; bindkey "^T" list-all; zstyle ":completion:*" list-prompt ""; LISTMAX=1000; echo READY-$((6*7))'
wait_for() {
  local all= chunk i
  for i in {1..200}; do
    if zpty -r -t z chunk; then all+=$chunk; [[ $all == *$1* ]] && break; else sleep 0.05; fi
  done
  print -r -- "$all"
}
wait_for READY-42 > /dev/null
n=0
for line in "$@"; do
  n=$((n + 1))
  zpty -n -w z "$line"$'\x14'
  sleep 0.3
  zpty -w z $'\x03'
  zpty -w z "echo END-\$(($n * 1000))"
  print -r -- "<<<CASE"
  wait_for "END-$((n * 1000))"
done
zpty -d z
"#;

/// Removes terminal escape sequences (`ESC [ ... letter`).
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn zsh_completes_subcommands_flags_and_values() {
    let Some(zsh) = program_or_skip("zsh_completes_subcommands_flags_and_values", "zsh", "zsh")
    else {
        return;
    };
    let dir = TempDir::new("check-zsh");
    let script = dir.path().join("_patchall");
    let out = patchall(&["completion", "zsh"]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&script, &out.stdout).expect("write the script");
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("patchall r", &["run"], &["check"]),
        (
            "patchall run --st",
            &["--stack-size", "--stacks", "--stats"],
            &["--json", "--workers"],
        ),
        (
            "patchall run --stacks ",
            &["dense", "guarded"],
            &["--stats"],
        ),
        (
            "patchall run --dump-signal=SIGUS",
            &["SIGUSR1", "SIGUSR2"],
            &["SIGHUP"],
        ),
        ("patchall check --j", &["--json"], &["--unset"]),
        ("patchall env --u", &["--unset"], &["--json"]),
    ];
    let mut c = Command::new(zsh);
    c.args(["-f", "-c", ZSH_DRIVER, "zsh"])
        .args(cases.iter().map(|(line, _, _)| *line))
        .env("SCRIPT", &script)
        .env("TERM", "xterm");
    let out = run(c);
    assert!(out.status.success(), "{out:?}");
    let text = strip_escapes(&out.stdout);
    let listed: Vec<&str> = text.split("<<<CASE").skip(1).collect();
    assert_eq!(listed.len(), cases.len(), "{text}");
    for ((line, want, not), got) in cases.iter().zip(listed) {
        let words: Vec<&str> = got.split_whitespace().collect();
        for w in *want {
            assert!(words.contains(w), "{line:?}: {w} not offered: {got}");
        }
        for w in *not {
            assert!(!words.contains(w), "{line:?}: {w} offered: {got}");
        }
    }
}
