//! Which `libpatchall.so` `patchall run` preloads. The first that exists wins:
//!
//! 1. `PATCHALL_LIB` (nothing else is tried when it is set);
//! 2. `libpatchall.so` next to this executable (a build tree, `target/<profile>/`);
//! 3. `../lib/libpatchall.so` from it (an installed layout: `PREFIX/bin`, `PREFIX/lib`);
//! 4. the copy built into this executable (release builds, see build.rs), written
//!    once to `$XDG_CACHE_HOME/patchall/<hash>/libpatchall.so` (`~/.cache` when
//!    XDG_CACHE_HOME is unset), so that `cargo install` alone gives a working
//!    launcher.
//!
//! The cache is checked before every use: its directories are the user's own
//! and writable by no one else, and the file holds exactly the embedded bytes
//! (else it is written again, to a temporary name renamed into place, so a
//! concurrent launcher never preloads half a file). The command inherits
//! nothing from this: std opens every file close-on-exec, and the environment
//! is not touched.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::elf::{self, Elf, Image};
use crate::{Failure, fail, status};

/// The library built into this executable and the name of its cache directory.
#[cfg(patchall_embedded)]
const EMBEDDED: Option<(&[u8], &str)> = Some((
    include_bytes!(env!("PATCHALL_EMBEDDED_LIB")),
    env!("PATCHALL_EMBEDDED_HASH"),
));
#[cfg(not(patchall_embedded))]
const EMBEDDED: Option<(&[u8], &str)> = None;

/// The library to preload (see the module comment): its absolute path and ELF facts.
pub fn find_library() -> Result<(PathBuf, Elf), Failure> {
    let found = match std::env::var_os("PATCHALL_LIB").filter(|v| !v.is_empty()) {
        Some(lib) => {
            let lib = PathBuf::from(lib);
            if !lib.is_file() {
                return not_found(&[lib]);
            }
            lib
        }
        None => {
            let beside = beside_executable();
            let present = beside
                .as_ref()
                .ok()
                .and_then(|c| c.iter().find(|c| c.is_file()));
            match (present, EMBEDDED, beside.as_ref()) {
                (Some(lib), _, _) => lib.clone(),
                (None, Some((bytes, hash)), _) => cached(bytes, hash)?,
                (None, None, Ok(looked)) => return not_found(looked),
                (None, None, Err(e)) => {
                    return fail(
                        status::LIBRARY,
                        format!(
                            "cannot locate the patchall executable ({e}) to find \
                             libpatchall.so next to it; set PATCHALL_LIB to the library's path"
                        ),
                    );
                }
            }
        }
    };
    let lib = fs::canonicalize(&found).or_else(|e| {
        fail(
            status::LIBRARY,
            format!("cannot use {}: {e}", found.display()),
        )
    })?;
    if lib
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|&b| b == b':' || b == b' ')
    {
        return fail(
            status::LIBRARY,
            format!(
                "{}: LD_PRELOAD splits entries at ':' and ' ', so this path cannot be \
                 preloaded; move the library or point PATCHALL_LIB at a copy",
                lib.display()
            ),
        );
    }
    match elf::inspect(&lib) {
        Ok(Image::Elf(elf)) => {
            is_patchall(&lib, &elf)?;
            Ok((lib, elf))
        }
        Ok(_) => fail(
            status::LIBRARY,
            format!("{} is not an ELF shared library", lib.display()),
        ),
        Err(e) => fail(
            status::LIBRARY,
            format!("cannot read {}: {e}", lib.display()),
        ),
    }
}

/// `DIR/libpatchall.so` and `DIR/../lib/libpatchall.so`, DIR this executable's.
fn beside_executable() -> io::Result<Vec<PathBuf>> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let mut candidates = vec![dir.join("libpatchall.so")];
    candidates.extend(dir.parent().map(|p| p.join("lib/libpatchall.so")));
    Ok(candidates)
}

fn not_found<T>(looked: &[PathBuf]) -> Result<T, Failure> {
    let looked: Vec<_> = looked.iter().map(|c| c.display().to_string()).collect();
    fail(
        status::LIBRARY,
        format!(
            "libpatchall.so not found (looked for {}); build it with \
             `cargo build -p patchall-preload` (same profile as patchall), \
             or set PATCHALL_LIB to its path",
            looked.join(" and ")
        ),
    )
}

/// Refuses an ELF file that is not libpatchall.so: preloaded, a program or
/// another library would leave the command running silently unpatched. Ours is
/// a shared object (ET_DYN with a dynamic section) that defines `pa_spawn`.
fn is_patchall(lib: &Path, elf: &Elf) -> Result<(), Failure> {
    let shown = lib.display();
    if elf.kind != elf::ET_DYN || !elf.dynamic {
        let what = match elf.kind {
            elf::ET_EXEC => "an ELF executable",
            elf::ET_REL => "an ELF object file",
            _ => "an ELF file",
        };
        return fail(
            status::LIBRARY,
            format!(
                "{shown} is {what}, not a shared library: PATCHALL_LIB must name libpatchall.so"
            ),
        );
    }
    match elf::defines(lib, elf::MARKER) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let what = if elf.interp.is_some() {
                "a program (it has an ELF interpreter)"
            } else {
                "a shared library"
            };
            fail(
                status::LIBRARY,
                format!(
                    "{shown} is {what} but not libpatchall.so (it does not define {}): \
                     PATCHALL_LIB must name libpatchall.so",
                    elf::MARKER
                ),
            )
        }
        Err(e) => fail(status::LIBRARY, format!("cannot read {shown}: {e}")),
    }
}

/// The embedded library's file in the user's cache, written there if it is
/// missing or differs.
fn cached(bytes: &[u8], hash: &str) -> Result<PathBuf, Failure> {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        // The XDG specification: a relative path is invalid and ignored.
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        });
    let Some(home) = home else {
        return fail(
            status::LIBRARY,
            "no library next to patchall, and neither XDG_CACHE_HOME nor HOME is set \
             to write its embedded one to; set PATCHALL_LIB to a libpatchall.so",
        );
    };
    let cannot = |what: &str, path: &Path, why: &dyn std::fmt::Display| Failure {
        status: status::LIBRARY,
        message: format!(
            "cannot {what} {} for the embedded libpatchall.so: {why}; set XDG_CACHE_HOME \
             to another directory, or PATCHALL_LIB to a libpatchall.so",
            path.display()
        ),
    };
    // XDG: the cache directory is created 0700 when missing.
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)
        .map_err(|e| cannot("create", &home, &e))?;
    let dir = home.join("patchall");
    private_dir(&dir).map_err(|e| cannot("use", &dir, &e))?;
    let dir = dir.join(hash);
    private_dir(&dir).map_err(|e| cannot("use", &dir, &e))?;
    if noexec(&dir) {
        return Err(cannot(
            "use",
            &dir,
            &"it is on a file system mounted noexec, where the loader cannot map a library",
        ));
    }
    let lib = dir.join("libpatchall.so");
    if !holds(&lib, bytes) {
        write_atomically(&lib, bytes).map_err(|e| cannot("write", &lib, &e))?;
    }
    Ok(lib)
}

/// Creates `dir` (0700) if missing; refuses it unless it is a directory, not a
/// symbolic link, owned by this user and writable by no one else (someone who
/// could write there could swap the library under us).
fn private_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    owned_and_private(&meta)
}

fn owned_and_private(meta: &fs::Metadata) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(io::Error::other(format!(
            "owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "writable by others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Whether `dir` is on a file system mounted noexec.
fn noexec(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path and `fs` a writable statvfs.
    unsafe {
        let mut fs: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut fs) == 0 && fs.f_flag & libc::ST_NOEXEC != 0
    }
}

/// Whether `lib` is a regular file of ours, writable by no one else, holding
/// exactly `bytes`. A symbolic link is not followed (and so never trusted).
fn holds(lib: &Path, bytes: &[u8]) -> bool {
    let Ok(mut file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(lib)
    else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !meta.is_file() || meta.len() != bytes.len() as u64 || owned_and_private(&meta).is_err() {
        return false;
    }
    // In pieces: a buffer the library's size would cost as much in page faults
    // as the comparison itself.
    let mut chunk = [0u8; 64 * 1024];
    let mut rest = bytes;
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return rest.is_empty(),
            Ok(n) if n <= rest.len() && chunk[..n] == rest[..n] => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
}

/// Writes `bytes` to a temporary file beside `lib`, then renames it to `lib`.
fn write_atomically(lib: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = OsString::from(".libpatchall.so.");
    name.push(std::process::id().to_string());
    let tmp = lib.with_file_name(name);
    // Left by a launcher with this pid that died before its rename.
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(bytes)?;
        drop(file);
        fs::rename(&tmp, lib)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}
