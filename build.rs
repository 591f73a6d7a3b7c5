//! Builds `libpatchall.so` for the launcher to carry, so that `cargo install
//! patchall` alone gives a working `patchall run` (src/bin/patchall/library.rs
//! writes it out on first use).
//!
//! The library is a cdylib of its own (preload/lib.rs) that depends on this
//! package, so this script cannot be one of its dependencies: it runs a second
//! cargo on a manifest written into OUT_DIR, with its own target directory (the
//! outer build holds the lock on its own) and `PATCHALL_EMBED=0`, so that this
//! script, run again for that build's `patchall`, stops there. Only crates this
//! package already depends on are needed, so the inner build runs `--offline`.
//!
//! When: `PATCHALL_EMBED=1` or `0` decides; unset, release builds (what `cargo
//! install` makes) embed and others do not, so `cargo test` pays nothing. A
//! build that embeds sets `cfg(patchall_embedded)` for every target of this
//! package, with `PATCHALL_EMBEDDED_LIB` (the file) and `PATCHALL_EMBEDDED_HASH`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATCHALL_EMBED");
    println!("cargo::rustc-check-cfg=cfg(patchall_embedded)");
    if !wanted() {
        return;
    }
    // The inner build reads the library's sources, so they decide a rerun.
    for input in ["src", "preload", "Cargo.toml"] {
        println!("cargo::rerun-if-changed={input}");
    }
    let lib = build_library();
    let bytes = fs::read(&lib).unwrap_or_else(|e| panic!("read {}: {e}", lib.display()));
    println!("cargo::rustc-cfg=patchall_embedded");
    println!("cargo::rustc-env=PATCHALL_EMBEDDED_LIB={}", lib.display());
    println!("cargo::rustc-env=PATCHALL_EMBEDDED_HASH={}", hash(&bytes));
}

fn wanted() -> bool {
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    match env::var("PATCHALL_EMBED").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        Err(_) => release,
        Ok(other) => {
            println!(
                "cargo::warning=ignoring PATCHALL_EMBED={other:?} (expected 1 or 0); \
                 embedding the library: {release}"
            );
            release
        }
    }
}

/// Builds the cdylib with a second cargo; returns the library's path.
fn build_library() -> PathBuf {
    let var = |name: &str| env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"));
    let package = PathBuf::from(var("CARGO_MANIFEST_DIR"));
    let dir = PathBuf::from(var("OUT_DIR")).join("embed");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    // The outer workspace's profile is not this manifest's: the library's code
    // is the same as the workspace release build's, without its debug info.
    let manifest = format!(
        "[package]\n\
         name = \"patchall-embedded\"\n\
         version = \"0.0.0\"\n\
         edition = \"2024\"\n\
         publish = false\n\
         \n\
         [lib]\n\
         name = \"patchall\"\n\
         crate-type = [\"cdylib\"]\n\
         path = {}\n\
         \n\
         [dependencies]\n\
         patchall = {{ path = {} }}\n\
         \n\
         [profile.release]\n\
         debug = false\n\
         strip = \"debuginfo\"\n\
         \n\
         # Its own workspace, never the one around OUT_DIR.\n\
         [workspace]\n",
        toml_string(&package.join("preload/lib.rs")),
        toml_string(&package),
    );
    let manifest_path = dir.join("Cargo.toml");
    fs::write(&manifest_path, manifest)
        .unwrap_or_else(|e| panic!("write {}: {e}", manifest_path.display()));

    let target = var("TARGET");
    let target_dir = dir.join("target");
    let out = Command::new(var("CARGO"))
        .args(["build", "--release", "--offline", "--color", "never"])
        .arg("--manifest-path")
        .arg(&manifest_path)
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--target", &target])
        .env("PATCHALL_EMBED", "0")
        .output()
        .unwrap_or_else(|e| panic!("run cargo: {e}"));
    assert!(
        out.status.success(),
        "building libpatchall.so to embed failed (set PATCHALL_EMBED=0 to build \
         the launcher without it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = target_dir.join(target).join("release/libpatchall.so");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

/// A TOML basic string holding `path`.
fn toml_string(path: &Path) -> String {
    let text = path.to_str().expect("a UTF-8 package path");
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => write!(quoted, "\\u{:04X}", u32::from(c)).unwrap(),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// FNV-1a, 64 bits, in hex: names the cache directory of this library build.
/// The launcher compares the cached file byte for byte before use, so the name
/// need not resist forgery; it only keeps builds apart.
fn hash(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}
