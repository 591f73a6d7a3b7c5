//! The preload face: `libpatchall.so` under `LD_PRELOAD`, outside coroutines.
//!
//! Contract 1 of docs/DESIGN.md: a preloaded program that never spawns behaves exactly
//! as without the preload. The C probes in `tests/c/` print one deterministic line
//! per scenario; each runs plain and preloaded, in three compile variants, and the
//! two runs must match each other and the probe's `.expected` file. Real programs
//! (python3, curl, git, ls) must give the same output and exit code too.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Outcome, TempDir, first_difference, preload_lib, root, run, same_outcome};

/// Every symbol the library must export (docs/DESIGN.md: "hook every alias").
const REQUIRED_SYMBOLS: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "socket",
    "socketpair",
    "accept",
    "accept4",
    "connect",
    "close",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "ioctl",
    "setsockopt",
    "pipe",
    "pipe2",
    "sleep",
    "usleep",
    "nanosleep",
    "clock_nanosleep",
    "poll",
    "ppoll",
    "__poll",
    "select",
    "pselect",
    "epoll_wait",
    "epoll_pwait",
    "__read_chk",
    "__recv_chk",
    "__recvfrom_chk",
    "__poll_chk",
    "__close",
    "sigaction",
    "signal",
    "sysv_signal",
    "siginterrupt",
    "sigsuspend",
    "__sigsuspend",
    "pause",
    "sigpause",
    "__sigpause",
    "__xpg_sigpause",
    "sigwait",
    "sigwaitinfo",
    "sigtimedwait",
    "__sigtimedwait",
    "epoll_pwait2",
    "getaddrinfo",
    "getnameinfo",
    "gethostbyname",
    "gethostbyname2",
    "gethostbyname_r",
    "gethostbyname2_r",
    "gethostbyaddr",
    "gethostbyaddr_r",
    "open",
    "open64",
    "__open",
    "__open64",
    "openat",
    "openat64",
    "creat",
    "creat64",
    "__open_2",
    "__open64_2",
    "__openat_2",
    "__openat64_2",
    "pread",
    "pread64",
    "__pread_chk",
    "__pread64_chk",
    "pwrite",
    "pwrite64",
    "preadv",
    "preadv64",
    "pwritev",
    "pwritev64",
    "fsync",
    "fdatasync",
    "waitpid",
    "__waitpid",
    "wait4",
    "wait",
    "wait3",
    "waitid",
    "fork",
    "__fork",
    "execve",
    "execv",
    "execvp",
    "execvpe",
    "fexecve",
    "execveat",
    "posix_spawn",
    "posix_spawnp",
    "posix_spawn_file_actions_adddup2",
];

/// Longest any single child process may run before the test kills it.
/// `cmd` with our library preloaded.
fn preloaded(mut cmd: Command) -> Command {
    cmd.env("LD_PRELOAD", preload_lib());
    cmd
}

/// Runs the command plain and preloaded; asserts identical status, stdout and
/// stderr; returns the plain outcome.
fn same_with_and_without(make: impl Fn() -> Command) -> Outcome {
    same_outcome(make, &preloaded)
}

/// Undefined (`imported = true`) or defined dynamic symbols of an ELF file.
fn dynamic_symbols(file: &Path, imported: bool) -> BTreeSet<String> {
    let flag = if imported {
        "--undefined-only"
    } else {
        "--defined-only"
    };
    let out = Command::new("nm")
        .args(["-D", flag])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("nm not found ({e}): binutils is needed"));
    assert!(
        out.status.success(),
        "nm -D {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap_or(s).to_owned())
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Plain,
    /// `-D_FILE_OFFSET_BITS=64`: `fcntl` becomes `fcntl64`, `open` `open64`.
    LargeFile,
    /// `-O2 -D_FORTIFY_SOURCE=2`: `read` becomes `__read_chk`, `poll` `__poll_chk`…
    Fortify,
}

const VARIANTS: [Variant; 3] = [Variant::Plain, Variant::LargeFile, Variant::Fortify];

impl Variant {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::Plain => &["-O0"],
            Variant::LargeFile => &["-O0", "-D_FILE_OFFSET_BITS=64"],
            Variant::Fortify => &["-O2", "-D_FORTIFY_SOURCE=2"],
        }
    }
}

/// Compiles `tests/c/<probe>.c` with the system `cc` into `dir`.
fn compile(probe: &str, variant: Variant, dir: &Path) -> PathBuf {
    let src = root().join("tests/c").join(format!("{probe}.c"));
    let bin = dir.join(format!("{probe}-{variant:?}"));
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-pthread"])
        .args(variant.flags())
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cc not found ({e}): the probes need a C compiler"));
    assert!(
        out.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Runs one probe in every compile variant, plain and preloaded. Both runs must
/// succeed, match each other, and match `tests/c/<probe>.expected`; each variant
/// must import the libc entry points it exists to exercise. With `overflow`, the
/// fortified build is also run in its overflow mode: the checking variant must
/// abort the same way with and without the preload.
fn probe(name: &str, imports: &[(Variant, &[&str])], overflow: bool) {
    let expected = std::fs::read_to_string(root().join("tests/c").join(format!("{name}.expected")))
        .expect("read the probe's .expected file");
    assert!(
        expected.ends_with("done\n"),
        "{name}.expected must end with `done`"
    );
    let dir = TempDir::new(name);
    let command = |bin: &Path, args: &[&str]| {
        let mut c = Command::new(bin);
        // A core dump, if any, lands in the temp dir and goes with it.
        c.arg(dir.path()).args(args).current_dir(dir.path());
        c
    };
    for variant in VARIANTS {
        let bin = compile(name, variant, dir.path());
        let imported = dynamic_symbols(&bin, true);
        for sym in imports
            .iter()
            .filter(|(v, _)| *v == variant)
            .flat_map(|(_, s)| *s)
        {
            assert!(
                imported.contains(*sym),
                "{name} ({variant:?}) should call {sym}; it imports {imported:?}"
            );
        }
        let plain = same_with_and_without(|| command(&bin, &[]));
        assert!(
            plain.status.success(),
            "{name} ({variant:?}) failed: {plain:?}"
        );
        assert_eq!(plain.stderr, "", "{name} ({variant:?}) wrote to stderr");
        assert!(
            plain.stdout == expected,
            "{name} ({variant:?}) output differs from {name}.expected{}",
            first_difference(&expected, &plain.stdout)
        );
        if overflow && variant == Variant::Fortify {
            let aborted = same_with_and_without(|| command(&bin, &["overflow"]));
            assert_eq!(
                aborted.status.signal(),
                Some(libc::SIGABRT),
                "{name} overflow: {aborted:?}"
            );
            assert!(
                aborted.stderr.contains("buffer overflow detected"),
                "{aborted:?}"
            );
            assert_eq!(aborted.stdout, "", "the overflowing call must not return");
        }
    }
}

#[test]
fn exports_every_hook() {
    let exported = dynamic_symbols(preload_lib(), false);
    let missing: Vec<_> = REQUIRED_SYMBOLS
        .iter()
        .filter(|s| !exported.contains(**s))
        .collect();
    assert!(
        missing.is_empty(),
        "libpatchall.so does not export {missing:?}; it exports {exported:?}"
    );
}

/// The loader, asked with `LD_DEBUG=bindings`, says which object satisfies each
/// symbol a probe imports: every one the library exports must bind to it.
#[test]
fn hooks_are_interposed_at_run_time() {
    let dir = TempDir::new("bindings");
    let exported = dynamic_symbols(preload_lib(), false);
    let cases = [
        (
            "probe_net",
            Variant::Plain,
            &["read", "recv", "connect", "accept4"][..],
        ),
        (
            "probe_io",
            Variant::Fortify,
            &["__read_chk", "write", "writev"][..],
        ),
    ];
    for (name, variant, must) in cases {
        let bin = compile(name, variant, dir.path());
        let hooked: BTreeSet<_> = dynamic_symbols(&bin, true)
            .intersection(&exported)
            .cloned()
            .collect();
        for sym in must {
            assert!(
                hooked.contains(*sym),
                "{name} ({variant:?}) should import hooked {sym}"
            );
        }
        let mut cmd = Command::new(&bin);
        cmd.arg(dir.path())
            .env("LD_DEBUG", "bindings")
            .env("LD_BIND_NOW", "1");
        let out = run(preloaded(cmd));
        assert!(out.status.success(), "{out:?}");
        let from_probe = format!("binding file {} ", bin.display());
        let bound_to_us: BTreeSet<_> = out
            .stderr
            .lines()
            .filter(|l| l.contains(&from_probe) && l.contains("libpatchall.so"))
            .filter_map(|l| l.split('`').nth(1)?.split('\'').next())
            .map(str::to_owned)
            .collect();
        let elsewhere: Vec<_> = hooked.difference(&bound_to_us).collect();
        assert!(
            elsewhere.is_empty(),
            "{name}: the loader bound {elsewhere:?} elsewhere; to libpatchall.so: {bound_to_us:?}"
        );
    }
}

#[test]
fn constructor_warns_once_about_a_bad_variable() {
    let with = |value: &str| {
        let mut cmd = Command::new("true");
        cmd.env("PATCHALL_STACK_SIZE", value);
        // `run` drops inherited PATCHALL_* variables, not the ones set here.
        let out = run(preloaded(cmd));
        assert!(out.status.success(), "{out:?}");
        out.stderr
    };
    let bad = with("lots");
    assert_eq!(
        bad.matches("PATCHALL_STACK_SIZE").count(),
        1,
        "one warning expected, got {bad:?}"
    );
    assert!(bad.starts_with("patchall: ignoring bad value"), "{bad:?}");
    assert_eq!(with("512k"), "", "a good value must not warn");
}

#[test]
fn probe_io_pipes() {
    probe("probe_io", &[(Variant::Fortify, &["__read_chk"])], true);
}

#[test]
fn probe_net_sockets() {
    let plain: &[&str] = &["recvmmsg", "sendmmsg", "accept4", "setsockopt"];
    probe(
        "probe_net",
        &[
            (Variant::Plain, plain),
            (Variant::Fortify, &["__recv_chk", "__recvfrom_chk"]),
        ],
        true,
    );
}

#[test]
fn probe_wait_poll_select_sleep() {
    let plain: &[&str] = &[
        "poll",
        "ppoll",
        "select",
        "pselect",
        "epoll_wait",
        "epoll_pwait",
        "nanosleep",
        "clock_nanosleep",
        "sleep",
        "usleep",
    ];
    probe(
        "probe_wait",
        &[(Variant::Plain, plain), (Variant::Fortify, &["__poll_chk"])],
        true,
    );
}

#[test]
fn probe_fd_lifetime_and_flags() {
    let plain: &[&str] = &["fcntl", "dup", "dup2", "dup3", "__close", "ioctl", "pipe2"];
    probe(
        "probe_fd",
        &[
            (Variant::Plain, plain),
            (Variant::LargeFile, &["fcntl64", "open64"]),
        ],
        false,
    );
}

#[test]
fn probe_offloadable_calls() {
    let plain: &[&str] = &[
        "getaddrinfo",
        "getnameinfo",
        "gethostbyname",
        "gethostbyname2",
        "gethostbyname_r",
        "gethostbyname2_r",
        "gethostbyaddr",
        "gethostbyaddr_r",
        "open",
        "openat",
        "creat",
        "pread",
        "pwrite",
        "preadv",
        "pwritev",
        "fsync",
        "fdatasync",
        "waitpid",
        "wait4",
        "wait",
        "wait3",
        "waitid",
        "fork",
        "execv",
        "posix_spawn",
        "posix_spawnp",
        "posix_spawn_file_actions_adddup2",
    ];
    let large: &[&str] = &[
        "open64",
        "openat64",
        "creat64",
        "pread64",
        "pwrite64",
        "preadv64",
        "pwritev64",
    ];
    probe(
        "probe_offload",
        &[
            (Variant::Plain, plain),
            (Variant::LargeFile, large),
            (Variant::Fortify, &["__open_2", "__openat_2", "__pread_chk"]),
        ],
        false,
    );
}

#[test]
fn probe_signal_dispositions() {
    let plain: &[&str] = &[
        "sigaction",
        "signal",
        "sysv_signal",
        "siginterrupt",
        "sigtimedwait",
        "sigwaitinfo",
        "sigwait",
        "sigsuspend",
        "__xpg_sigpause",
        "pause",
    ];
    probe("probe_signal", &[(Variant::Plain, plain)], false);
}

#[test]
fn do_no_harm_python() {
    common::do_no_harm_python(&preloaded);
}

#[test]
fn do_no_harm_curl() {
    common::do_no_harm_curl(&preloaded);
}

#[test]
fn do_no_harm_git() {
    common::do_no_harm_git(&preloaded);
}

#[test]
fn do_no_harm_ls() {
    common::do_no_harm_ls(&preloaded);
}
