//! The `patchall` launcher: options, LD_PRELOAD, exit status, refusals (static,
//! set-id), where it finds the library, and the do-no-harm set run through it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Outcome, TempDir, cc, preload_lib, run};

const PATCHALL: &str = env!("CARGO_BIN_EXE_patchall");

/// `patchall ARGS...`, with the library built next to it.
fn patchall(args: &[&str]) -> Command {
    let lib = preload_lib();
    assert_eq!(
        lib.parent(),
        Path::new(PATCHALL).parent(),
        "cargo puts the launcher and the library in one directory"
    );
    let mut c = Command::new(PATCHALL);
    c.args(args);
    c
}

/// `inner`, run through `patchall run --`.
fn launched(inner: Command) -> Command {
    common::launched_with(&[], inner)
}

/// Asserts patchall itself failed with `code` and a `patchall: ` message holding
/// every one of `words`, and that the command never ran (no stdout).
fn refused(out: &Outcome, code: i32, words: &[&str]) {
    assert_eq!(out.status.code(), Some(code), "{out:?}");
    assert!(out.stderr.starts_with("patchall: "), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    for w in words {
        assert!(out.stderr.contains(w), "stderr lacks {w:?}: {out:?}");
    }
    assert_eq!(out.stdout, "", "{out:?}");
}

#[test]
fn help_and_version() {
    for args in [&["--help"][..], &["-h"], &["help"], &["run", "--help"]] {
        let out = run(patchall(args));
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            out.stdout
                .contains("patchall run [OPTIONS] [--] CMD [ARGS...]"),
            "{out:?}"
        );
        for documented in ["--green-threads", "--stack-size", "PATCHALL_LIB", "126"] {
            assert!(out.stdout.contains(documented), "help lacks {documented}");
        }
        assert_eq!(out.stderr, "");
    }
    for flag in ["--version", "-V"] {
        let out = run(patchall(&[flag]));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            out.stdout,
            format!("patchall {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "no command given"),
        (&["frobnicate"], "unknown command `frobnicate`"),
        (&["run"], "no command given"),
        (&["run", "--"], "no command given"),
        (&["run", "--green-threads"], "no command given"),
        (
            &["run", "--bogus", "--", "true"],
            "unknown option `--bogus`",
        ),
        (&["run", "--green-threads=1", "true"], "unknown option"),
        (
            &["run", "--stack-size", "1k", "true"],
            "too small; at least 16384",
        ),
        (&["run", "--stack-size=lots", "true"], "--stack-size lots"),
        // Too large, whether or not it fits in 64 bits (it said "at least").
        (
            &["run", "--stack-size", "99999999999999999999", "true"],
            "too large; at most 1073741824",
        ),
        (
            &["run", "--stack-size", "18446744073709551615", "true"],
            "too large; at most 1073741824",
        ),
        (&["run", "--stack-size", "2g", "true"], "too large"),
        // Only what the help documents: digits, then k, m or g.
        (
            &["run", "--stack-size", "64kb", "true"],
            "expected a number of bytes",
        ),
        (
            &["run", "--stack-size", " 64k", "true"],
            "expected a number of bytes",
        ),
        (
            &["run", "--stack-size", "64 k", "true"],
            "expected a number of bytes",
        ),
        (
            &["run", "--stack-size", "0x10000", "true"],
            "expected a number of bytes",
        ),
        (
            &["run", "--stack-size=", "true"],
            "expected a number of bytes",
        ),
        (
            &["run", "--stacks", "sparse", "true"],
            "`guarded` or `dense`",
        ),
        (&["run", "--stack-size"], "--stack-size needs a value"),
    ];
    for (args, message) in cases {
        refused(&run(patchall(args)), 2, &[message]);
    }
}

#[test]
fn exit_status_passes_through() {
    let out = run(patchall(&["run", "--", "sh", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = run(patchall(&["run", "sh", "-c", "echo out; echo err >&2"]));
    assert!(out.status.success());
    assert_eq!((&*out.stdout, &*out.stderr), ("out\n", "err\n"));
    // exec, not a child: a signal that kills the command kills "patchall".
    let out = run(patchall(&["run", "--", "sh", "-c", "kill -TERM $$"]));
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{out:?}");
}

#[test]
fn preloads_the_library_first_and_keeps_existing_entries() {
    let lib = preload_lib().to_str().expect("utf-8 path");
    let out = run(patchall(&["run", "--", "printenv", "LD_PRELOAD"]));
    assert_eq!(out.stdout, format!("{lib}\n"), "{out:?}");

    let mut c = patchall(&["run", "--", "printenv", "LD_PRELOAD"]);
    c.env("LD_PRELOAD", "libm.so.6");
    let out = run(c);
    assert_eq!(out.stdout, format!("{lib}:libm.so.6\n"), "{out:?}");
    assert_eq!(out.stderr, "", "the loader accepted both entries");

    // The loader really maps it into the command.
    let out = run(patchall(&["run", "--", "cat", "/proc/self/maps"]));
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains(lib), "libpatchall.so not mapped");
}

#[test]
fn options_set_the_variables() {
    let env_of = |opts: &[&str], name: &str| {
        let mut args = vec!["run"];
        args.extend_from_slice(opts);
        args.extend(["--", "printenv", name]);
        run(patchall(&args))
    };
    assert_eq!(
        env_of(&["--green-threads"], "PATCHALL_GREEN_THREADS").stdout,
        "1\n"
    );
    assert_eq!(
        env_of(&["--stack-size", "64k"], "PATCHALL_STACK_SIZE").stdout,
        "65536\n"
    );
    assert_eq!(
        env_of(&["--stack-size=1M"], "PATCHALL_STACK_SIZE").stdout,
        "1048576\n"
    );
    for (given, bytes) in [
        ("16384", "16384\n"),
        ("1g", "1073741824\n"),
        ("64K", "65536\n"),
    ] {
        assert_eq!(
            env_of(&["--stack-size", given], "PATCHALL_STACK_SIZE").stdout,
            bytes
        );
    }
    assert_eq!(
        env_of(&["--stacks", "dense"], "PATCHALL_STACKS").stdout,
        "dense\n"
    );
    assert_eq!(
        env_of(&["--stacks=guarded"], "PATCHALL_STACKS").stdout,
        "guarded\n"
    );
    // Without the option the variable is not invented (printenv exits 1).
    let unset = env_of(&[], "PATCHALL_GREEN_THREADS");
    assert_eq!((unset.status.code(), &*unset.stdout), (Some(1), ""));
}

#[test]
fn finds_the_command_as_execvp_does() {
    let dir = TempDir::new("launcher-path");
    let script = dir.path().join("hello-patchall");
    std::fs::write(&script, "#!/bin/sh\necho \"hello $1\"\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let denied = dir.path().join("not-executable");
    std::fs::write(&denied, "#!/bin/sh\necho ran\n").expect("write file");

    let path = format!("/nonexistent:{}:/usr/bin:/bin", dir.path().display());
    let mut c = patchall(&["run", "--", "hello-patchall", "world"]);
    c.env("PATH", &path);
    let out = run(c);
    assert_eq!(out.stdout, "hello world\n", "a script is run: {out:?}");

    // argv[0] is the name as given, not the resolved path.
    let out = run(patchall(&["run", "--", "cat", "/proc/self/cmdline"]));
    assert_eq!(out.stdout, "cat\0/proc/self/cmdline\0");

    refused(
        &run(patchall(&["run", "--", "no-such-command-patchall"])),
        127,
        &["no-such-command-patchall: command not found"],
    );
    refused(
        &run(patchall(&["run", "--", "./no-such-file"])),
        127,
        &["./no-such-file: no such file"],
    );
    let mut c = patchall(&["run", "--", "not-executable"]);
    c.env("PATH", &path);
    refused(&run(c), 126, &["not-executable: permission denied"]);
    let out = run(patchall(&["run", "--", denied.to_str().unwrap()]));
    refused(&out, 126, &["cannot run", "Permission denied"]);
}

#[test]
fn static_programs_are_refused() {
    let dir = TempDir::new("launcher-static");
    let src = dir.path().join("hello.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(void) { puts(\"ran\"); return 0; }\n",
    )
    .expect("write source");
    for (flag, kind) in [("-static", "(static,"), ("-static-pie", "(static-pie,")] {
        let bin = dir.path().join(format!("hello{flag}"));
        cc(&src, &bin, &[flag]);
        assert_eq!(
            run(Command::new(&bin)).stdout,
            "ran\n",
            "{flag} works plain"
        );
        let out = run(patchall(&["run", "--", bin.to_str().unwrap()]));
        refused(
            &out,
            126,
            &["statically linked", kind, "LD_PRELOAD", "dynamic loader"],
        );
    }
    // The same program linked dynamically runs.
    let bin = dir.path().join("hello-dynamic");
    cc(&src, &bin, &[]);
    let out = run(patchall(&["run", "--", bin.to_str().unwrap()]));
    assert_eq!(out.stdout, "ran\n", "{out:?}");
}

/// A minimal ELF file: header and program headers, no code.
struct Synthetic {
    bits: u8,
    big_endian: bool,
    machine: u16,
    /// `p_type` of each program header: PT_LOAD = 1, PT_DYNAMIC = 2,
    /// PT_INTERP = 3, PT_NOTE = 4, PT_PHDR = 6.
    types: &'static [u32],
    /// `e_phnum` is PN_XNUM; the count is in section header 0's `sh_info`.
    xnum: bool,
}

impl Synthetic {
    fn bytes(&self) -> Vec<u8> {
        let (ehsize, phentsize, shentsize) = if self.bits == 64 {
            (64, 56, 64)
        } else {
            (52, 32, 40)
        };
        let shoff = ehsize + phentsize * self.types.len();
        let mut v = vec![0u8; shoff + shentsize];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = if self.bits == 64 { 2 } else { 1 };
        v[5] = if self.big_endian { 2 } else { 1 };
        let mut put = |at: usize, value: usize, len: usize| {
            let field = &mut v[at..at + len];
            field.copy_from_slice(&(value as u64).to_le_bytes()[..len]);
            if self.big_endian {
                field.reverse();
            }
        };
        let count = self.types.len();
        let phnum = if self.xnum { 0xffff } else { count };
        put(18, self.machine.into(), 2);
        if self.bits == 64 {
            put(32, ehsize, 8); // e_phoff
            put(40, shoff, 8); // e_shoff
            put(54, phentsize, 2);
            put(56, phnum, 2);
            put(shoff + 44, count, 4); // sh_info
        } else {
            put(28, ehsize, 4);
            put(32, shoff, 4);
            put(42, phentsize, 2);
            put(44, phnum, 2);
            put(shoff + 28, count, 4);
        }
        for (i, &t) in self.types.iter().enumerate() {
            put(ehsize + i * phentsize, t as usize, 4);
        }
        v
    }
}

/// The launcher's ELF reader on both classes and byte orders, seen through its
/// refusals.
#[test]
fn reads_elf_of_either_class_and_byte_order() {
    let dir = TempDir::new("launcher-elf");
    let lib = preload_lib().to_str().unwrap();
    let elf = |bits, big_endian, machine, types, xnum| Synthetic {
        bits,
        big_endian,
        machine,
        types,
        xnum,
    };
    let cases = [
        (
            elf(32, false, 3, &[6, 3, 1, 2], false),
            "is a 32-bit ELF program for machine 3",
        ),
        (
            elf(64, true, 2, &[3, 1, 2], false),
            "is a 64-bit ELF program for machine 2",
        ),
        (
            elf(32, false, 3, &[1, 3], true),
            "is a 32-bit ELF program for machine 3",
        ),
        (
            elf(32, true, 20, &[1, 1], false),
            "statically linked (static,",
        ),
        (
            elf(64, true, 62, &[1, 2], false),
            "statically linked (static-pie,",
        ),
        (
            elf(64, false, 62, &[1, 1, 4], true),
            "statically linked (static,",
        ),
    ];
    for (i, (image, why)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("elf-{i}"));
        std::fs::write(&path, image.bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = run(patchall(&["run", "--", path.to_str().unwrap()]));
        let mut words = vec![*why];
        if why.contains("machine") {
            words.extend([lib, "the loader would skip the library"]);
        }
        refused(&out, 126, &words);
    }
}

/// A copy of `cat` in `dir` named `name` with `mode`, owned by `owner` (uid, gid)
/// when given.
fn cat_copy(dir: &Path, name: &str, mode: u32, owner: Option<(u32, u32)>) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy("/bin/cat", &path).expect("copy /bin/cat");
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
    }
    // After chown, which clears set-id bits.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn set_id_programs_are_refused() {
    let dir = TempDir::new("launcher-setid");
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let maps = "/proc/self/maps";

    // Set-uid to ourselves changes no id: the loader honours LD_PRELOAD, so
    // patchall runs it (and the library is mapped).
    let own = cat_copy(dir.path(), "own-setuid", 0o4755, None);
    let out = run(patchall(&["run", "--", own.to_str().unwrap(), maps]));
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("libpatchall.so"), "{out:?}");

    let mut foreign = Vec::new();
    if uid == 0 {
        let nobody = 65534;
        foreign.push((
            cat_copy(dir.path(), "setuid", 0o4755, Some((nobody, gid))),
            "is set-user-ID (owner uid 65534)",
        ));
        foreign.push((
            cat_copy(dir.path(), "setgid", 0o2755, Some((uid, nobody))),
            "is set-group-ID (group gid 65534)",
        ));
        // Without group execute permission the bit is not set-gid.
        let locking = cat_copy(dir.path(), "sgid-nox", 0o2745, Some((uid, nobody)));
        let out = run(patchall(&["run", "--", locking.to_str().unwrap(), maps]));
        assert!(out.stdout.contains("libpatchall.so"), "{out:?}");
    } else {
        let system = ["/usr/bin/passwd", "/bin/su", "/usr/bin/chsh", "/bin/mount"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o4000 != 0 && m.uid() != uid)
            })
            .expect("as non-root this test needs a set-uid program of another user (passwd, su)");
        foreign.push((system, "is set-user-ID (owner uid 0)"));
    }
    for (path, why) in foreign {
        let out = run(patchall(&["run", "--", path.to_str().unwrap(), maps]));
        refused(&out, 126, &[why, "secure-execution", "ignores LD_PRELOAD"]);
    }
}

/// Where the launcher looks for the library, and what it says when it is missing.
#[test]
fn library_location() {
    let lib = preload_lib();
    let dir = TempDir::new("launcher-lib");
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).expect("mkdir bin");
    let alone = bin_dir.join("patchall");
    std::fs::copy(PATCHALL, &alone).expect("copy patchall");
    let cache = dir.path().join("cache");
    let run_alone = |env: Option<&Path>| {
        let mut c = Command::new(&alone);
        c.args(["run", "--", "printenv", "LD_PRELOAD"])
            .env("XDG_CACHE_HOME", &cache);
        if let Some(lib) = env {
            c.env("PATCHALL_LIB", lib);
        }
        run(c)
    };

    let out = run_alone(None);
    let next_to = bin_dir.join("libpatchall.so");
    let installed = dir.path().join("lib/libpatchall.so");
    if cfg!(patchall_embedded) {
        // Last comes the library built into the launcher (tests/install.rs
        // tests its cache).
        let preloaded = out.stdout.trim_end();
        assert!(
            out.status.success()
                && preloaded.starts_with(cache.join("patchall").to_str().unwrap())
                && preloaded.ends_with("/libpatchall.so"),
            "{out:?}"
        );
    } else {
        refused(
            &out,
            125,
            &[
                "libpatchall.so not found",
                next_to.to_str().unwrap(),
                installed.to_str().unwrap(),
                "PATCHALL_LIB",
            ],
        );
    }

    let missing = dir.path().join("nowhere/libpatchall.so");
    refused(
        &run_alone(Some(&missing)),
        125,
        &[missing.to_str().unwrap()],
    );

    // PATCHALL_LIB wins and is made absolute.
    let out = run_alone(Some(lib));
    assert_eq!(out.stdout, format!("{}\n", lib.display()), "{out:?}");

    // PREFIX/bin/patchall finds PREFIX/lib/libpatchall.so.
    std::fs::create_dir(dir.path().join("lib")).expect("mkdir lib");
    std::fs::copy(lib, &installed).expect("copy lib");
    let out = run_alone(None);
    assert_eq!(out.stdout, format!("{}\n", installed.display()), "{out:?}");

    // Next to the executable comes first.
    std::fs::copy(lib, &next_to).expect("copy lib");
    let out = run_alone(None);
    assert_eq!(out.stdout, format!("{}\n", next_to.display()), "{out:?}");

    // A path LD_PRELOAD would split.
    let odd = dir.path().join("a:b");
    std::fs::create_dir(&odd).expect("mkdir");
    std::fs::copy(lib, odd.join("libpatchall.so")).expect("copy lib");
    refused(
        &run_alone(Some(&odd.join("libpatchall.so"))),
        125,
        &["LD_PRELOAD splits entries"],
    );

    // Not a library.
    let text = dir.path().join("not-a-lib.so");
    std::fs::write(&text, "hello").expect("write");
    refused(
        &run_alone(Some(&text)),
        125,
        &["is not an ELF shared library"],
    );

    // ELF files that are not libpatchall.so: preloaded, the command would run
    // silently unpatched.
    let src = dir.path().join("main.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").expect("write");
    let (pie, exe, obj) = (
        dir.path().join("pie"),
        dir.path().join("exe"),
        dir.path().join("main.o"),
    );
    cc(&src, &pie, &["-fPIE", "-pie"]);
    cc(&src, &exe, &["-no-pie"]);
    cc(&src, &obj, &["-c"]);
    let not_ours = "PATCHALL_LIB must name libpatchall.so";
    refused(
        &run_alone(Some(&pie)),
        125,
        &["is a program", "does not define pa_spawn", not_ours],
    );
    refused(
        &run_alone(Some(&exe)),
        125,
        &["is an ELF executable, not a shared library", not_ours],
    );
    refused(
        &run_alone(Some(&obj)),
        125,
        &["is an ELF object file", not_ours],
    );
    let libz = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists());
    if let Some(other) = libz {
        refused(
            &run_alone(Some(other)),
            125,
            &["is a shared library but not libpatchall.so", not_ours],
        );
    }
}

/// The launcher names nothing of the patchall crate, so no hook is linked into
/// it: run under a preloaded library (as it is when a program under patchall
/// runs `patchall run` again), a launcher defining `read` or `pthread_create`
/// would take over those calls in its own process.
#[test]
fn the_launcher_defines_no_hooks() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only", PATCHALL])
        .output()
        .unwrap_or_else(|e| panic!("nm not found ({e}): binutils is needed"));
    assert!(out.status.success(), "{out:?}");
    let defined = String::from_utf8_lossy(&out.stdout);
    let hooks: Vec<&str> = defined
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| ["read", "connect", "accept", "pthread_create", "pa_spawn"].contains(s))
        .collect();
    assert!(hooks.is_empty(), "the launcher defines {hooks:?}");
    // The same check finds them in the library.
    let lib = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(preload_lib())
        .output()
        .expect("nm");
    assert!(String::from_utf8_lossy(&lib.stdout).contains(" T pthread_create"));
}

/// The command sees the signal mask, SIGPIPE disposition and standard fds it
/// would see without patchall (std's runtime ignores SIGPIPE and opens closed
/// standard fds before `main`; `Command::exec` resets SIGPIPE to the default).
#[test]
fn process_state_passes_through() {
    common::require("python3");
    let setup = "import os, signal, sys\n\
                 signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n\
                 signal.signal(signal.SIGPIPE, signal.SIG_IGN)\n\
                 os.execvp(sys.argv[1], sys.argv[1:])\n";
    let grep = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"];
    let mut plain = Command::new("python3");
    plain.args(["-c", setup]).args(grep);
    let mut through = Command::new("python3");
    through
        .args(["-c", setup, PATCHALL, "run", "--"])
        .args(grep);
    let (plain, through) = (run(plain), run(through));
    assert!(plain.status.success(), "{plain:?}");
    assert_eq!(plain, through);
    // And from a parent with nothing blocked or ignored (Command resets both).
    let mut args = vec!["run", "--"];
    args.extend(grep);
    let mut direct = Command::new(grep[0]);
    direct.args(&grep[1..]);
    assert_eq!(run(direct), run(patchall(&args)));

    // A closed stdin stays closed (std's runtime would open /dev/null on it).
    let probe = "if [ -e /proc/self/fd/0 ]; then echo open; else echo closed; fi";
    let closed_stdin = |launcher: &[&str]| {
        let mut c = Command::new("sh");
        c.args(["-c", "exec 0<&-; exec \"$@\"", "sh"])
            .args(launcher)
            .args(["sh", "-c", probe]);
        run(c)
    };
    let without = closed_stdin(&[]);
    assert_eq!(without.stdout, "closed\n", "{without:?}");
    assert_eq!(without, closed_stdin(&[PATCHALL, "run", "--"]));
    let field = |name: &str| {
        let line = plain.stdout.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_ne!(field("SigBlk:") & (1 << (libc::SIGUSR1 - 1)), 0);
    assert_ne!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0);
}

#[test]
fn do_no_harm_python() {
    common::do_no_harm_python(&launched);
}

#[test]
fn do_no_harm_curl() {
    common::do_no_harm_curl(&launched);
}

#[test]
fn do_no_harm_git() {
    common::do_no_harm_git(&launched);
}

#[test]
fn do_no_harm_ls() {
    common::do_no_harm_ls(&launched);
}
