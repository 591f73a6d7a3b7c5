//! Helpers shared by the integration tests: the preload library and C programs.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The directory cargo builds this profile into (`target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// `libpatchall.so`, built once per test binary with the same cargo and profile.
pub fn preload_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "patchall-preload"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building libpatchall.so failed");
        let lib = target_dir().join("libpatchall.so");
        assert!(lib.exists(), "{} missing after build", lib.display());
        lib
    })
    .clone()
}

/// Compiles `tests/c/<name>.c` (warnings are errors) and returns the binary.
pub fn cc(name: &str) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let dir = target_dir().join("c-tests");
    std::fs::create_dir_all(&dir).expect("create c-tests dir");
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling {} failed", src.display());
    out
}
