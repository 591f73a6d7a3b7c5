//! `patchall check [--json] [OPTIONS] [--] CMD [ARGS...]`: without running CMD,
//! whether `LD_PRELOAD` can take effect on it (the launcher's own refusals),
//! and what patchall does with each blocking call CMD and its libraries import
//! (the table in calls.rs).
//!
//! The libraries are the ones the dynamic loader would map: `ld.so --list CMD`
//! (what `ldd` runs), with the loader that runs patchall itself. It maps the
//! objects and prints where it found them, and runs none of their code (no
//! constructor, no relocation): unlike reading /etc/ld.so.cache ourselves, it
//! follows every rule the loader has (`LD_LIBRARY_PATH`, `DT_RPATH`,
//! `DT_RUNPATH` with `$ORIGIN`, glibc-hwcaps subdirectories, the distribution's
//! default directories, `LD_PRELOAD`) because it is the loader. The program's
//! own `PT_INTERP` is never run: a crafted file could name anything there.
//! Libraries opened later with `dlopen` (plugins, Python's extension modules)
//! are not seen.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::calls::{self, Group, Kind};
use crate::elf::{self, Image};
use crate::options::{self, CHECK};
use crate::{Failure, check_preloadable, fail, find_library, print, resolve, status};

/// Exit status: LD_PRELOAD takes effect, and nothing CMD imports blocks the OS
/// thread when it waits: green threads are safe to try.
const SAFE: i32 = 0;
/// LD_PRELOAD takes effect, but CMD imports calls that block the OS thread (the
/// `Blocks` group): green threads run, and each such wait stalls those that
/// share the thread.
const BLOCKING: i32 = 1;
/// How many scripts may name a script as their interpreter (the kernel's own
/// limit is 4 levels).
const MAX_SCRIPTS: usize = 4;

/// The object that imports calls: the program or one of its libraries.
struct Object {
    /// As the loader names it (`libcurl.so.4`), or the program's file name.
    name: String,
    path: PathBuf,
}

/// What `check` found.
struct Report {
    command: String,
    /// The scripts passed through on the way to the program (`#!` lines).
    scripts: Vec<(PathBuf, String)>,
    program: PathBuf,
    /// Why LD_PRELOAD cannot take effect (the launcher's refusal), if so.
    refused: Option<Failure>,
    /// The loader that listed the libraries, or why they were not listed.
    loader: Result<PathBuf, String>,
    libraries: Vec<Object>,
    missing: Vec<String>,
    offload_files: String,
    /// Syscall dispatch will be on: not `--syscall-dispatch off` (nor
    /// PATCHALL_SYSCALL_DISPATCH=off), and the kernel has it.
    dispatch: bool,
    /// Imported calls the table knows: the call, its group, its importers.
    calls: Vec<(&'static str, &'static Group, Vec<String>)>,
}

pub fn main(args: &[OsString]) -> Result<(), Failure> {
    let parsed = options::parse(CHECK, args)?;
    if parsed.help {
        return print(&crate::help());
    }
    let Some(given) = parsed.command.first() else {
        return fail(
            status::USAGE,
            "no command given: `patchall check [--json] [OPTIONS] -- CMD [ARGS...]`",
        );
    };
    let json = parsed.has("--json");
    // The option, else the environment, as the library reads them (a bad
    // value means the default).
    let setting = |var: &str| {
        parsed
            .var(var)
            .map(str::to_owned)
            .or_else(|| std::env::var(var).ok())
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let offload_files = setting("PATCHALL_OFFLOAD_FILES")
        .filter(|v| ["auto", "always", "off"].contains(&v.as_str()))
        .unwrap_or_else(|| "auto".to_owned());
    // Green threads turn it on unless told `off`, where the kernel has it.
    let dispatch =
        setting("PATCHALL_SYSCALL_DISPATCH").is_none_or(|v| v != "off") && kernel_has_dispatch();
    let command = given.to_string_lossy().into_owned();
    let report = match find_library().and_then(|lib| Ok((lib, resolve(given)?))) {
        Ok(((lib, lib_elf), path)) => Report {
            offload_files,
            dispatch,
            ..inspect(command, path, &lib, &lib_elf)
        },
        Err(failure) if json => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{{\"command\":{},\"preload\":false,\"reason\":{},\"green_threads\":\"no\",\"status\":{}}}",
                quote(&command),
                quote(&failure.message),
                failure.status
            );
            print(&out)?;
            return Err(Failure {
                status: failure.status,
                message: String::new(),
            });
        }
        Err(failure) => return Err(failure),
    };
    let code = report.status();
    print(&if json { report.json() } else { report.text() })?;
    match code {
        SAFE => Ok(()),
        // The report said it all: exit with its status, without a message.
        status => Err(Failure {
            status,
            message: String::new(),
        }),
    }
}

/// Does this kernel offer Syscall User Dispatch? Turning it off for this
/// thread is a no-op that fails with EINVAL where the prctl is unknown.
fn kernel_has_dispatch() -> bool {
    // linux/prctl.h (libc does not name them).
    const PR_SET_SYSCALL_USER_DISPATCH: libc::c_int = 59;
    const PR_SYS_DISPATCH_OFF: libc::c_ulong = 0;
    // SAFETY: PR_SYS_DISPATCH_OFF takes no pointers; it only clears this
    // thread's (unset) dispatch state.
    unsafe { libc::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0) == 0 }
}

/// The report on `path` (what `command` names), for the default settings.
fn inspect(command: String, mut path: PathBuf, lib: &Path, lib_elf: &elf::Elf) -> Report {
    let mut report = Report {
        command,
        scripts: Vec::new(),
        program: path.clone(),
        refused: None,
        loader: Err(String::new()),
        libraries: Vec::new(),
        missing: Vec::new(),
        offload_files: "auto".to_owned(),
        dispatch: false,
        calls: Vec::new(),
    };
    // A script: its interpreter is what runs, preloaded (LD_PRELOAD is
    // inherited). A file that is neither ELF nor script goes to /bin/sh, as
    // execvp hands it on ENOEXEC.
    loop {
        let next = match elf::inspect(&path) {
            Ok(Image::Script) => None,
            Ok(Image::Other) => Some("no #! line: execvp runs it with /bin/sh"),
            Ok(Image::Elf(_)) => break,
            // A script's missing interpreter: execve fails as for CMD itself.
            Err(e) => {
                let status = match e.kind() {
                    std::io::ErrorKind::NotFound => status::NOT_FOUND,
                    _ => status::CANNOT_RUN,
                };
                report.refused = Some(Failure {
                    status,
                    message: format!("{}: {e}", path.display()),
                });
                report.program = path;
                return report;
            }
        };
        let next = if report.scripts.len() == MAX_SCRIPTS {
            Err(Failure {
                status: status::CANNOT_RUN,
                message: format!("{}: too many nested #! interpreters", path.display()),
            })
        } else if let Some(why) = next {
            Ok((why.to_owned(), PathBuf::from("/bin/sh")))
        } else {
            interpreter(&path)
        };
        match next {
            Ok((line, interpreter)) => {
                report.scripts.push((path, line));
                path = interpreter;
            }
            Err(failure) => {
                report.refused = Some(failure);
                report.program = path;
                return report;
            }
        }
    }
    report.program = path.clone();
    if let Err(failure) = check_preloadable(&path, lib, lib_elf) {
        report.refused = Some(failure);
        return report;
    }
    let mut objects = vec![Object {
        name: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        ),
        path: path.clone(),
    }];
    report.loader = list_libraries(&path).map(|(loader, libraries, missing)| {
        report.missing = missing;
        report.libraries = libraries;
        loader
    });
    objects.extend(report.libraries.iter().map(|o| Object {
        name: o.name.clone(),
        path: o.path.clone(),
    }));
    let mut imports: BTreeMap<&'static str, (&'static Group, Vec<String>)> = BTreeMap::new();
    for object in &objects {
        let Ok(symbols) = elf::dynamic_symbols(&object.path) else {
            continue;
        };
        // patchall's own library (preloaded already): its imports are its own.
        if symbols
            .iter()
            .any(|(n, defined)| *defined && n == elf::MARKER.as_bytes())
        {
            continue;
        }
        for (name, defined) in symbols {
            if defined {
                continue;
            }
            let Some(group) = std::str::from_utf8(&name).ok().and_then(calls::find) else {
                continue;
            };
            let call = group
                .names
                .iter()
                .find(|n| n.as_bytes() == name)
                .expect("find returned the group that names it");
            let importers = &mut imports.entry(call).or_insert((group, Vec::new())).1;
            if !importers.contains(&object.name) {
                importers.push(object.name.clone());
            }
        }
    }
    report.calls = imports
        .into_iter()
        .map(|(call, (group, by))| (call, group, by))
        .collect();
    report
}

/// A script's `#!` line and the program it runs: the interpreter, or for
/// `#!/usr/bin/env NAME`, NAME found through PATH as `env` would.
fn interpreter(script: &Path) -> Result<(String, PathBuf), Failure> {
    let mut head = [0u8; 256];
    let n = fs::File::open(script)
        .and_then(|mut f| f.read(&mut head))
        .or_else(|e| fail(status::CANNOT_RUN, format!("{}: {e}", script.display())))?;
    let line = head[2..n].split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim().to_owned();
    let mut words = line.split_whitespace();
    let Some(interp) = words.next() else {
        return fail(
            status::CANNOT_RUN,
            format!("{}: an empty #! line", script.display()),
        );
    };
    let interp = PathBuf::from(interp);
    if interp.file_name().is_some_and(|n| n == "env") {
        // `env [-S] [-i] [VAR=value]... NAME`: NAME is looked up in PATH.
        let name = words.find(|w| !w.starts_with('-') && !w.contains('='));
        if let Some(name) = name {
            return Ok((format!("#!{line}"), resolve(name.as_ref())?));
        }
    }
    Ok((format!("#!{line}"), interp))
}

/// The libraries `ld.so --list` says the loader would map for `program`, the
/// names it could not find, and the loader used.
type Listing = (PathBuf, Vec<Object>, Vec<String>);

fn list_libraries(program: &Path) -> Result<Listing, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find patchall itself: {e}"))?;
    let loader = match elf::inspect(&exe) {
        Ok(Image::Elf(elf::Elf {
            interp: Some(loader),
            ..
        })) => loader,
        _ => return Err("patchall itself has no dynamic loader to ask".to_owned()),
    };
    let out = Command::new(&loader)
        .arg("--list")
        .arg(program)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {} --list: {e}", loader.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut libraries, mut missing) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim) {
        // `name => /path (0x…)`, `name => not found`, `/path (0x…)` (the
        // loader, a preloaded library), `linux-vdso.so.1 (0x…)`.
        let (name, place) = match line.split_once(" => ") {
            Some((name, place)) => (name, place),
            None => (line, line),
        };
        if place == "not found" {
            missing.push(name.to_owned());
            continue;
        }
        let place = place.rsplit_once(" (").map_or(place, |(p, _)| p);
        if !place.starts_with('/') {
            continue;
        }
        let path = PathBuf::from(place);
        let name = if name.starts_with('/') {
            path.file_name()
                .map_or_else(|| place.to_owned(), |n| n.to_string_lossy().into())
        } else {
            name.to_owned()
        };
        if !libraries.iter().any(|o: &Object| o.path == path) {
            libraries.push(Object { name, path });
        }
    }
    if !out.status.success() && libraries.is_empty() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} --list failed ({}): {}",
            loader.display(),
            out.status,
            why.trim()
        ));
    }
    Ok((loader, libraries, missing))
}

impl Report {
    /// What a call does here: its group's kind, with `--offload-files off`
    /// turning the file calls into calls that block the thread.
    fn kind(&self, group: &Group) -> Kind {
        match group.kind {
            Kind::Files if self.offload_files == "off" => Kind::Sometimes,
            _ if group.caught && self.dispatch => Kind::Parks,
            kind => kind,
        }
    }

    fn what(&self, group: &Group) -> &'static str {
        match (group.kind, self.offload_files.as_str()) {
            (Kind::Files, "off") => "blocks the thread (--offload-files off)",
            (Kind::Files, "always") => "on the pool",
            _ if group.caught && self.dispatch => {
                "the system call inside is trapped (syscall dispatch) and parks"
            }
            _ => group.what,
        }
    }

    fn status(&self) -> i32 {
        if let Some(failure) = &self.refused {
            return failure.status;
        }
        if self.blocking().next().is_some() {
            BLOCKING
        } else {
            SAFE
        }
    }

    fn blocking(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.calls
            .iter()
            .filter(|(_, g, _)| self.kind(g) == Kind::Blocks)
            .map(|(call, _, _)| *call)
    }

    fn verdict(&self) -> &'static str {
        match self.status() {
            SAFE => "safe",
            BLOCKING => "blocking-calls",
            _ => "no",
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        for (script, line) in &self.scripts {
            let _ = writeln!(
                w,
                "{}: a script ({line}): its interpreter runs, preloaded",
                script.display()
            );
        }
        if let Some(failure) = &self.refused {
            let _ = writeln!(w, "{}", failure.message);
            let _ = writeln!(
                w,
                "green threads: no: LD_PRELOAD cannot take effect, patchall run stops here (status {})",
                failure.status
            );
            return out;
        }
        let _ = writeln!(
            w,
            "{}: dynamically linked: LD_PRELOAD takes effect",
            self.program.display()
        );
        match &self.loader {
            Ok(loader) => {
                let _ = write!(
                    w,
                    "libraries: {} (as {} --list finds them",
                    self.libraries.len(),
                    loader.display()
                );
                if self.missing.is_empty() {
                    let _ = writeln!(w, ")");
                } else {
                    let _ = writeln!(w, "; not found: {})", self.missing.join(", "));
                }
            }
            Err(why) => {
                let _ = writeln!(
                    w,
                    "libraries: not listed ({why}); the program's own imports only"
                );
            }
        }
        let blocking: Vec<_> = self.blocking().collect();
        let _ = match blocking.len() {
            0 => writeln!(
                w,
                "green threads: safe to try: no imported call blocks the OS thread \
                 (exit status 0)"
            ),
            n => writeln!(
                w,
                "green threads: they run, but {n} imported call{} the OS thread, and every \
                 green thread on it, while waiting (exit status 1): {}",
                if n == 1 { " blocks" } else { "s block" },
                blocking.join(", ")
            ),
        };
        let sections = [
            (
                Kind::Parks,
                "cooperative: in a coroutine, parks it while waiting",
            ),
            (
                Kind::Offloaded,
                "offloaded: an offload-pool thread waits, the coroutine parks",
            ),
            (Kind::Files, "file calls (--offload-files {mode})"),
            (
                Kind::Green,
                "cooperative with --green-threads (without: glibc's, as natively)",
            ),
            (
                Kind::Sometimes,
                "block the OS thread in some uses (and every green thread on it)",
            ),
            (
                Kind::Blocks,
                "block the OS thread when waiting (and every green thread on it): not hooked",
            ),
        ];
        let width = self
            .calls
            .iter()
            .filter(|(_, g, _)| g.kind != Kind::Quiet)
            .map(|(c, _, _)| c.len())
            .max()
            .unwrap_or(0);
        for (kind, title) in sections {
            let rows: Vec<_> = self
                .calls
                .iter()
                .filter(|(_, g, _)| self.kind(g) == kind)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(w, "\n{}:", title.replace("{mode}", &self.offload_files));
            for (call, group, by) in rows {
                let _ = writeln!(
                    w,
                    "  {call:width$}  {}  [{}]",
                    self.what(group),
                    importers(by)
                );
            }
        }
        let quiet: Vec<_> = self
            .calls
            .iter()
            .filter(|(_, g, _)| g.kind == Kind::Quiet)
            .map(|(c, _, _)| *c)
            .collect();
        if !quiet.is_empty() {
            let _ = writeln!(
                w,
                "\nalso hooked, never waiting ({}): {}",
                quiet.len(),
                quiet.join(" ")
            );
        }
        out
    }

    fn json(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = write!(w, "{{\"command\":{}", quote(&self.command));
        let scripts: Vec<_> = self
            .scripts
            .iter()
            .map(|(p, line)| {
                format!(
                    "{{\"path\":{},\"line\":{}}}",
                    quote(&p.display().to_string()),
                    quote(line)
                )
            })
            .collect();
        let _ = write!(w, ",\"scripts\":[{}]", scripts.join(","));
        let _ = write!(
            w,
            ",\"program\":{},\"preload\":{}",
            quote(&self.program.display().to_string()),
            self.refused.is_none()
        );
        if let Some(failure) = &self.refused {
            let _ = write!(w, ",\"reason\":{}", quote(&failure.message));
        }
        let libraries: Vec<_> = self
            .libraries
            .iter()
            .map(|o| {
                format!(
                    "{{\"name\":{},\"path\":{}}}",
                    quote(&o.name),
                    quote(&o.path.display().to_string())
                )
            })
            .collect();
        let missing: Vec<_> = self.missing.iter().map(|m| quote(m)).collect();
        let _ = write!(
            w,
            ",\"libraries\":[{}],\"missing\":[{}]",
            libraries.join(","),
            missing.join(",")
        );
        if let Err(why) = &self.loader {
            if !why.is_empty() {
                let _ = write!(w, ",\"libraries_error\":{}", quote(why));
            }
        }
        let _ = write!(w, ",\"offload_files\":{}", quote(&self.offload_files));
        let calls: Vec<_> = self
            .calls
            .iter()
            .map(|(call, group, by)| {
                let by: Vec<_> = by.iter().map(|b| quote(b)).collect();
                format!(
                    "{{\"name\":{},\"kind\":{},\"hooked\":{},\"what\":{},\"imported_by\":[{}]}}",
                    quote(call),
                    quote(self.kind(group).key()),
                    group.hooked,
                    quote(self.what(group)),
                    by.join(",")
                )
            })
            .collect();
        let _ = write!(w, ",\"calls\":[{}]", calls.join(","));
        let _ = writeln!(
            w,
            ",\"green_threads\":{},\"status\":{}}}",
            quote(self.verdict()),
            self.status()
        );
        out
    }
}

/// `a, b, c` or `a, b, c +4 more`.
fn importers(by: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = by[..by.len().min(SHOWN)].join(", ");
    if by.len() > SHOWN {
        let _ = write!(text, " +{} more", by.len() - SHOWN);
    }
    text
}

/// A JSON string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
