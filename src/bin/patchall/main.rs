//! `patchall run [OPTIONS] [--] CMD [ARGS...]`: runs an unmodified, dynamically
//! linked program with `libpatchall.so` preloaded. Also `check` (check.rs: what
//! patchall would do with CMD), `env` and `completion` (shell.rs); the options
//! of all of them are one table (options.rs).
//!
//! `main` is the C entry point (`#![no_main]`): std's runtime would set SIGPIPE to
//! "ignore" before `main` (and reopen closed standard fds), and the command would
//! inherit that. A launcher passes its parent's process state through untouched,
//! then `exec`s, so the command's exit status is patchall's.

#![no_main]

mod calls;
mod check;
mod elf;
mod library;
// The bounds only: naming the `patchall` crate would link every hook into the
// launcher (tests/launcher.rs checks its dynamic symbols).
#[path = "../../limits.rs"]
mod limits;
mod options;
mod shell;

use std::ffi::{CString, OsStr, OsString, c_char, c_int};
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use elf::{Elf, Image};
use library::find_library;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP_HEAD: &str = "\
patchall: monkey.patch_all for native code. Blocking calls (read, recv, connect,
accept, sleep, poll...) of an unmodified, dynamically linked program become
cooperative inside patchall coroutines.

Usage:
  patchall run [OPTIONS] [--] CMD [ARGS...]
  patchall check [--json] [OPTIONS] [--] CMD [ARGS...]
  patchall env [OPTIONS] | patchall env --unset
  patchall completion bash|zsh
  patchall --help | --version

`run` finds CMD as execvp does (through PATH unless it contains a slash),
prepends libpatchall.so to LD_PRELOAD (keeping existing entries), sets the
PATCHALL_* variables the options ask for and executes CMD in place of itself.
`check` says, without running CMD, whether LD_PRELOAD can take effect on it and
what patchall does with each blocking call CMD and its libraries import.
`env` prints the shell lines that set what `run` would: eval \"$(patchall env
--green-threads)\". `completion` prints a completion script for bash or zsh.

Options (each sets the variable named; `check` takes them too):
";

const HELP_TAIL: &str = "  -h, --help               this text
  -V, --version            patchall's version

Environment:
  PATCHALL_LIB   the library to preload (a libpatchall.so: other files are
                 refused); default: libpatchall.so in this executable's
                 directory, then in ../lib next to it, then the copy built
                 into this executable (release builds), written once to
                 $XDG_CACHE_HOME/patchall/HASH/ (~/.cache without it)

Exit status:
  CMD's own status once it runs, or:
  2    usage error
  125  libpatchall.so not found or unusable
  126  CMD cannot run under patchall: statically linked, set-user-ID or
       set-group-ID (or with file capabilities), a different ELF class or
       machine than libpatchall.so, or not executable
  127  CMD not found
`check` exits with 0 when green threads are safe to try, 1 when CMD imports
calls that still block the OS thread (it runs, but each such wait stalls the
green threads on that thread), or 2, 125, 126, 127 as `run` would.
";

fn help() -> String {
    format!(
        "{HELP_HEAD}{}\nOf `check` and `env`:\n{}\nAll:\n{HELP_TAIL}",
        options::help(|o| o.var.is_some()),
        options::help(|o| o.var.is_none()),
    )
}

/// patchall's own exit statuses, as `env`, `nice` and `timeout` use them.
mod status {
    use std::ffi::c_int;

    pub const USAGE: c_int = 2;
    pub const LIBRARY: c_int = 125;
    pub const CANNOT_RUN: c_int = 126;
    pub const NOT_FOUND: c_int = 127;
}

/// Why patchall stops before the command runs: an exit status and a message.
struct Failure {
    status: c_int,
    message: String,
}

fn fail<T>(status: c_int, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        status,
        message: message.into(),
    })
}

/// The process entry point (see the module comment).
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match cli(&args) {
        Ok(()) => 0,
        Err(failure) => {
            // Nothing sensible is left to do if stderr is gone. (No message:
            // the status is an answer already printed, as `check`'s.)
            if !failure.message.is_empty() {
                let _ = writeln!(io::stderr(), "patchall: {}", failure.message);
            }
            failure.status
        }
    }
}

fn cli(args: &[OsString]) -> Result<(), Failure> {
    match args.first().map(|a| a.as_bytes()) {
        None => fail(status::USAGE, "no command given; try `patchall --help`"),
        Some(b"-h" | b"--help" | b"help") => print(&help()),
        Some(b"-V" | b"--version") => print(&format!("patchall {VERSION}\n")),
        Some(b"run") => match options::parse(options::RUN, &args[1..])? {
            run if run.help => print(&help()),
            run if run.command.is_empty() => fail(
                status::USAGE,
                "no command given: `patchall run [OPTIONS] -- CMD [ARGS...]`",
            ),
            run => launch(run),
        },
        Some(b"check") => check::main(&args[1..]),
        Some(b"env") => shell::env(&args[1..]),
        Some(b"completion") => shell::completion(&args[1..]),
        Some(_) => fail(
            status::USAGE,
            format!(
                "unknown command `{}`; try `patchall --help`",
                args[0].to_string_lossy()
            ),
        ),
    }
}

/// Writes to stdout; a closed or full pipe is the reader's choice, not an error.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(())
}

/// Executes the command with the library preloaded; returns only on failure.
fn launch(run: options::Parsed) -> Result<(), Failure> {
    let given = &run.command[0];
    let path = resolve(given)?;
    let (lib, lib_elf) = find_library()?;
    check_preloadable(&path, &lib, &lib_elf)?;

    let preload = preload_with(&lib);
    let mut cmd = Command::new(&path);
    cmd.arg0(given)
        .args(&run.command[1..])
        .env("LD_PRELOAD", preload)
        .envs(run.vars.iter().map(|(var, value)| (var, value)));
    let sigpipe = Sigpipe::capture();
    // SAFETY: the closure runs in this process just before execve (exec, no fork)
    // and only calls sigaction with the value captured above.
    unsafe {
        cmd.pre_exec(move || {
            sigpipe.restore();
            Ok(())
        });
    }
    let err = cmd.exec();
    let status = match err.kind() {
        io::ErrorKind::NotFound => status::NOT_FOUND,
        _ => status::CANNOT_RUN,
    };
    fail(status, format!("cannot run {}: {err}", path.display()))
}

/// `LD_PRELOAD` with `lib` first, the existing entries kept after it.
fn preload_with(lib: &Path) -> OsString {
    let mut preload = lib.as_os_str().to_owned();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    preload
}

/// Finds the file `execvp` would run for `name`: itself if it contains a slash,
/// else the first executable regular file `DIR/name` along PATH.
fn resolve(name: &OsStr) -> Result<PathBuf, Failure> {
    let shown = name.to_string_lossy();
    if name.is_empty() {
        return fail(status::NOT_FOUND, "the command name is empty");
    }
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return match fs::metadata(&path) {
            Ok(_) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fail(status::NOT_FOUND, format!("{shown}: no such file"))
            }
            Err(e) => fail(status::CANNOT_RUN, format!("{shown}: {e}")),
        };
    }
    // glibc's execvp uses this when PATH is unset.
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    let mut denied = None;
    for dir in search.as_bytes().split(|&b| b == b':') {
        // An empty entry means the current directory, as in execvp.
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        if !fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if executable(&candidate) {
            return Ok(candidate);
        }
        denied.get_or_insert(candidate);
    }
    match denied {
        Some(path) => fail(
            status::CANNOT_RUN,
            format!("{}: permission denied", path.display()),
        ),
        None => fail(status::NOT_FOUND, format!("{shown}: command not found")),
    }
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// May this process execute `path` (effective ids, as `execve` checks)?
fn executable(path: &Path) -> bool {
    c_path(path).is_some_and(|p| {
        // SAFETY: `p` is a NUL-terminated path; faccessat only reads it.
        unsafe { libc::faccessat(libc::AT_FDCWD, p.as_ptr(), libc::X_OK, libc::AT_EACCESS) == 0 }
    })
}

/// Refuses, with the reason, a command on which `LD_PRELOAD` cannot take effect.
/// Whatever cannot be read or recognised is left for `execve` to judge.
fn check_preloadable(path: &Path, lib: &Path, lib_elf: &Elf) -> Result<(), Failure> {
    let shown = path.display();
    if let Some(why) = fs::metadata(path)
        .ok()
        .and_then(|meta| secure_exec(path, &meta))
    {
        return fail(
            status::CANNOT_RUN,
            format!(
                "{shown} {why}: the kernel runs it in secure-execution mode, where the \
                 dynamic loader ignores LD_PRELOAD, so patchall cannot take effect; \
                 run it without patchall"
            ),
        );
    }
    match elf::inspect(path) {
        Ok(Image::Elf(elf)) if elf.interp.is_none() => {
            let kind = if elf.dynamic { "static-pie" } else { "static" };
            fail(
                status::CANNOT_RUN,
                format!(
                    "{shown} is statically linked ({kind}, no ELF interpreter): the kernel \
                     starts it without the dynamic loader, so LD_PRELOAD, and with it \
                     patchall, cannot take effect; only dynamically linked programs can \
                     be run under patchall"
                ),
            )
        }
        Ok(Image::Elf(elf)) if (elf.bits, elf.machine) != (lib_elf.bits, lib_elf.machine) => fail(
            status::CANNOT_RUN,
            format!(
                "{shown} is a {}-bit ELF program for machine {}, but {} is {}-bit for \
                     machine {}: the loader would skip the library; point PATCHALL_LIB at a \
                     libpatchall.so built for that target",
                elf.bits,
                elf.machine,
                lib.display(),
                lib_elf.bits,
                lib_elf.machine
            ),
        ),
        // Dynamic: preloadable. A script (`#!`) is run as it is: whether its
        // interpreter is dynamically linked is not checked.
        _ => Ok(()),
    }
}

/// Why executing `path` would change the process's ids or capabilities (the
/// kernel's secure-execution mode, `AT_SECURE`), or None.
fn secure_exec(path: &Path, meta: &Metadata) -> Option<String> {
    let c = c_path(path)?;
    // SAFETY: `c` is a NUL-terminated path and `fs` a writable statvfs.
    let nosuid = unsafe {
        let mut fs: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut fs) == 0 && fs.f_flag & libc::ST_NOSUID != 0
    };
    if nosuid {
        // Set-id bits and file capabilities are ignored on such a mount.
        return None;
    }
    // SAFETY: these calls have no preconditions.
    let (uid, euid, gid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
    let mode = meta.mode();
    if mode & libc::S_ISUID != 0 && meta.uid() != uid {
        return Some(format!("is set-user-ID (owner uid {})", meta.uid()));
    }
    // Without group execute permission the bit means mandatory locking instead.
    if mode & libc::S_ISGID != 0 && mode & libc::S_IXGRP != 0 && meta.gid() != gid {
        return Some(format!("is set-group-ID (group gid {})", meta.gid()));
    }
    // SAFETY: a size query: NUL-terminated path and name, no buffer.
    let caps = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    // Root already holds every capability, so for root nothing is gained.
    if caps >= 0 && (uid != 0 || euid != 0) {
        return Some("has file capabilities (setcap)".to_owned());
    }
    None
}

/// The SIGPIPE disposition this process was started with. `Command::exec` sets
/// SIGPIPE back to the default action (for the children of std programs, which
/// ignore it), but a command started from a parent that ignores SIGPIPE must
/// inherit that, as it would without patchall. (The signal mask passes through
/// `exec` untouched.)
#[derive(Clone, Copy)]
struct Sigpipe(libc::sigaction);

impl Sigpipe {
    fn capture() -> Sigpipe {
        // SAFETY: all-zero is a valid sigaction; a null `act` only queries.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old);
            Sigpipe(old)
        }
    }

    fn restore(&self) {
        // SAFETY: the value came from the kernel in `capture`.
        unsafe { libc::sigaction(libc::SIGPIPE, &self.0, std::ptr::null_mut()) };
    }
}
