//! Installing patchall: `scripts/install` and `scripts/uninstall` under a temp
//! prefix, `cargo install --path`, and the `.deb` unpacked into a scratch root.
//! Each is checked by running what was installed, with no `PATCHALL_LIB` and
//! no build tree beside it: `examples/c/sleepy_threads.c` under
//! `--green-threads` on one OS thread, and `examples/c/capi_demo.c` built with
//! `pkg-config` against the installed library.
//!
//! One release build serves every test here (cargo install and the scripts
//! share this test's target directory, so they reuse it).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Outcome, TempDir, c_program, cc, root, run, run_limited};

/// A release build from scratch on a busy machine takes minutes, not hours.
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The target directory this test binary lives in.
fn target_dir() -> PathBuf {
    common::profile_dir()
        .parent()
        .expect("<target>/<profile>")
        .to_owned()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()))
}

/// Runs `cmd` with the build limit; panics with its output unless it succeeds.
fn succeed(cmd: Command) -> Outcome {
    let what = format!("{cmd:?}");
    let out = run_limited(cmd, BUILD_LIMIT).unwrap_or_else(|hung| panic!("{hung}"));
    assert!(out.status.success(), "{what}: {out:?}");
    out
}

/// `cargo build --release` of the launcher and the library, once.
fn release_build() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut c = cargo();
        c.args(["build", "--release", "--quiet", "--offline"])
            .args(["-p", "patchall", "-p", "patchall-preload"])
            .arg("--target-dir")
            .arg(target_dir())
            .current_dir(root());
        succeed(c);
    });
}

/// A script of this repository, building (if it does) in this test's target dir.
fn script(name: &str) -> Command {
    let mut c = Command::new(root().join("scripts").join(name));
    c.env("CARGO_TARGET_DIR", target_dir());
    c
}

/// Every file and directory under `dir`, relative, with a file's contents.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let rel = path.strip_prefix(dir).expect("under dir").to_owned();
            if path.is_dir() {
                pending.push(path);
                found.insert(rel, None);
            } else {
                found.insert(rel, Some(std::fs::read(&path).expect("read")));
            }
        }
    }
    found
}

fn names(tree: &BTreeMap<PathBuf, Option<Vec<u8>>>) -> Vec<String> {
    tree.keys().map(|p| p.display().to_string()).collect()
}

/// What scripts/install puts under a prefix (directories end in `/`).
const INSTALLED: &[&str] = &[
    "bin/",
    "bin/patchall",
    "include/",
    "include/patchall.h",
    "lib/",
    "lib/libpatchall.so",
    "lib/pkgconfig/",
    "lib/pkgconfig/patchall.pc",
    "share/",
    "share/man/",
    "share/man/man1/",
    "share/man/man1/patchall.1",
    "share/man/man3/",
    "share/man/man3/pa_detach.3",
    "share/man/man3/pa_in_coroutine.3",
    "share/man/man3/pa_join.3",
    "share/man/man3/pa_run.3",
    "share/man/man3/pa_self.3",
    "share/man/man3/pa_sleep_ms.3",
    "share/man/man3/pa_sleep_ns.3",
    "share/man/man3/pa_spawn.3",
    "share/man/man3/pa_yield.3",
    "share/man/man3/patchall.3",
];

/// What scripts/install adds to INSTALLED when the launcher prints completion
/// scripts (`patchall completion bash|zsh`), under /usr or another prefix.
fn completions(usr: bool) -> Vec<String> {
    let mut extra = Vec::new();
    let zsh = if usr {
        "vendor-completions/_patchall"
    } else {
        "site-functions/_patchall"
    };
    for (shell, dir, file) in [
        ("bash", "share/bash-completion/", "completions/patchall"),
        ("zsh", "share/zsh/", zsh),
    ] {
        let mut c = Command::new(target_dir().join("release/patchall"));
        c.args(["completion", shell]);
        if run(c).status.success() {
            let sub = file.split_once('/').unwrap().0;
            extra.extend([
                dir.to_owned(),
                format!("{dir}{sub}/"),
                format!("{dir}{file}"),
            ]);
        }
    }
    extra
}

/// The launcher with a clean environment: no `PATCHALL_LIB` (run_limited drops
/// every inherited `PATCHALL_*`), and a home of its own, so that a library it
/// writes to its cache lands in `home` and nowhere else.
fn launcher(patchall: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(patchall);
    c.args(args)
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("LD_LIBRARY_PATH");
    c
}

/// The library `patchall run` preloads, as the command sees `LD_PRELOAD`.
fn preloaded(patchall: &Path, home: &Path) -> PathBuf {
    let out = run(launcher(
        patchall,
        home,
        &["run", "--", "printenv", "LD_PRELOAD"],
    ));
    assert!(out.status.success(), "{out:?}");
    PathBuf::from(out.stdout.trim_end())
}

/// `examples/c/sleepy_threads.c`'s 1,000 sleeping pthreads under `patchall run
/// --green-threads`: every one wakes, on one OS thread.
fn sleepy_threads_on_one_os_thread(patchall: &Path, home: &Path) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c");
    std::fs::create_dir_all(&dir).expect("create the C output directory");
    let sleepy = dir.join("install_sleepy_threads");
    cc(
        &root().join("examples/c/sleepy_threads.c"),
        &sleepy,
        &["-O2", "-Wextra", "-Werror"],
    );
    let out = run(launcher(
        patchall,
        home,
        &["run", "--green-threads", "--", sleepy.to_str().unwrap()],
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.matches(" woke\n").count(), 1000, "{out:?}");
    let summary = out.stdout.lines().last().unwrap_or_default();
    assert!(
        summary.ends_with("OS threads while they slept: 1"),
        "{summary:?}"
    );
}

/// `examples/c/capi_demo.c` built with `pkg-config --cflags --libs patchall`
/// from `pkgconfig`, run without LD_LIBRARY_PATH: the installed library's
/// `read` parks the reader while the sleepers wake.
fn capi_demo_through_pkg_config(pkgconfig: &Path, dir: &Path) {
    let mut flags = Command::new("pkg-config");
    flags
        .args(["--cflags", "--libs", "patchall"])
        .env("PKG_CONFIG_PATH", pkgconfig);
    let flags = run(flags);
    assert!(flags.status.success(), "pkg-config: {flags:?}");
    let flags: Vec<&str> = flags.stdout.split_whitespace().collect();
    let demo = dir.join("capi_demo");
    cc(&root().join("examples/c/capi_demo.c"), &demo, &flags);
    let mut c = Command::new(&demo);
    c.env_remove("LD_LIBRARY_PATH");
    let out = run(c);
    assert!(out.status.success(), "{out:?}");
    let at = |line: &str| {
        out.stdout
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} in {out:?}"))
    };
    let got = at("reader: got \"hello through a pipe\"");
    for woke in ["sleeper 30 ms: awake", "sleeper 90 ms: awake"] {
        assert!(at(woke) < got, "{out:?}");
    }
    assert!(
        out.stdout
            .ends_with("main: joining the writer again: ESRCH\n")
    );
}

#[test]
fn scripts_install_and_uninstall() {
    let dir = TempDir::new("install");
    let prefix = dir.path().join("prefix");
    let home = dir.path().join("home");
    // Something already there, in a directory install also uses: both stay.
    let theirs = prefix.join("share/man/man1/theirs.1");
    std::fs::create_dir_all(theirs.parent().unwrap()).expect("mkdir");
    std::fs::create_dir_all(&home).expect("mkdir home");
    std::fs::write(&theirs, ".TH THEIRS 1\n").expect("write");
    let before = tree(&prefix);

    release_build();
    let mut install = script("install");
    install.arg("--prefix").arg(&prefix);
    let out = succeed(install);
    assert!(out.stdout.contains("installed patchall"), "{out:?}");

    let mut want: Vec<String> = INSTALLED.iter().map(|p| p.to_string()).collect();
    want.extend(completions(false));
    want.extend(
        [
            "share/man/man1/theirs.1",
            "share/patchall/",
            "share/patchall/installed",
        ]
        .map(String::from),
    );
    want.sort();
    let after = tree(&prefix);
    let mut got: Vec<String> = after
        .iter()
        .map(|(p, f)| format!("{}{}", p.display(), if f.is_none() { "/" } else { "" }))
        .collect();
    got.sort();
    assert_eq!(got, want);
    let mode = |rel: &str| prefix.join(rel).metadata().expect("stat").mode() & 0o777;
    assert_eq!(mode("bin/patchall"), 0o755);
    assert_eq!(mode("lib/libpatchall.so"), 0o644);

    let patchall = prefix.join("bin/patchall");
    assert_eq!(
        preloaded(&patchall, &home),
        prefix.join("lib/libpatchall.so")
    );
    sleepy_threads_on_one_os_thread(&patchall, &home);
    // The installed library was used, so the launcher wrote nothing to a cache.
    assert_eq!(names(&tree(&home)), Vec::<String>::new());
    capi_demo_through_pkg_config(&prefix.join("lib/pkgconfig"), dir.path());

    let mut uninstall = script("uninstall");
    uninstall.arg("--prefix").arg(&prefix);
    succeed(uninstall);
    assert_eq!(names(&tree(&prefix)), names(&before));
    assert_eq!(tree(&prefix), before);
}

#[test]
fn install_refuses_bad_arguments() {
    for (args, says) in [
        (&["--prefix", "relative"][..], "absolute"),
        (&["--bogus"], "unknown argument"),
        (&["--prefix"], "usage"),
    ] {
        let mut c = script("install");
        c.arg("--no-build").args(args);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(says), "{args:?}: {out:?}");
    }
    let dir = TempDir::new("uninstall-nothing");
    let mut c = script("uninstall");
    c.arg("--prefix").arg(dir.path());
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("nothing installed"), "{out:?}");
}

/// `cargo install --path`: the launcher alone, which carries the library and
/// writes it to a private cache on first use.
#[test]
fn cargo_install_carries_the_library() {
    let dir = TempDir::new("cargo-install");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    release_build();
    let mut install = cargo();
    install
        .args(["install", "--quiet", "--offline", "--path"])
        .arg(root())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--target-dir")
        .arg(target_dir());
    succeed(install);
    let bin = dir.path().join("root/bin");
    assert_eq!(names(&tree(&bin)), ["patchall"]);
    let patchall = bin.join("patchall");

    // XDG_CACHE_HOME unset: ~/.cache.
    let lib = preloaded(&patchall, &home);
    let hash_dir = lib.parent().expect("the hash directory");
    assert_eq!(hash_dir.parent(), Some(&*home.join(".cache/patchall")));
    for private in [hash_dir, &home.join(".cache/patchall")] {
        let meta = private.symlink_metadata().expect("stat");
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o777, 0o700, "{}", private.display());
    }
    assert_eq!(names(&tree(hash_dir)), ["libpatchall.so"]);
    let written = lib.metadata().expect("stat").modified().expect("mtime");

    sleepy_threads_on_one_os_thread(&patchall, &home);
    // Checked and reused, not written again.
    assert_eq!(lib.metadata().unwrap().modified().unwrap(), written);

    // A damaged copy is replaced; a symbolic link is not followed.
    let good = std::fs::read(&lib).expect("read the library");
    std::fs::write(&lib, b"damaged").expect("write");
    assert_eq!(preloaded(&patchall, &home), lib);
    assert_eq!(std::fs::read(&lib).expect("read"), good);
    let elsewhere = dir.path().join("elsewhere.so");
    std::fs::write(&elsewhere, b"not the library").expect("write");
    std::fs::remove_file(&lib).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, &lib).expect("symlink");
    assert_eq!(preloaded(&patchall, &home), lib);
    assert!(!lib.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not the library");

    // A cache directory others may write to is refused.
    std::fs::set_permissions(hash_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = run(launcher(&patchall, &home, &["run", "--", "true"]));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        out.stderr.contains("writable by others") && out.stderr.contains("XDG_CACHE_HOME"),
        "{out:?}"
    );
    std::fs::set_permissions(hash_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    // XDG_CACHE_HOME, when set, is the cache.
    let xdg = dir.path().join("xdg");
    let mut c = launcher(&patchall, &home, &["run", "--", "printenv", "LD_PRELOAD"]);
    c.env("XDG_CACHE_HOME", &xdg);
    let out = run(c);
    assert!(
        out.stdout
            .starts_with(xdg.join("patchall/").to_str().unwrap()),
        "{out:?}"
    );

    // A relative XDG_CACHE_HOME is invalid (XDG): ~/.cache again.
    let mut c = launcher(&patchall, &home, &["run", "--", "printenv", "LD_PRELOAD"]);
    c.env("XDG_CACHE_HOME", "relative/cache");
    assert_eq!(PathBuf::from(run(c).stdout.trim_end()), lib);
    // Nowhere to write it: a clear refusal, not a run without the library.
    let mut c = launcher(&patchall, &home, &["run", "--", "true"]);
    c.env_remove("HOME");
    let out = run(c);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        out.stderr.contains("neither XDG_CACHE_HOME nor HOME"),
        "{out:?}"
    );

    nothing_left_in_the_program(&patchall, &home);
}

/// The crate as published: `cargo package --list` holds every file the build
/// reads (the launcher's build script builds the library from `preload/` and
/// `src/`), and the packaged crate, unpacked outside any workspace as cargo
/// unpacks a registry download, installs a launcher that carries its library.
#[test]
fn packaged_crate_installs_a_working_launcher() {
    let mut list = cargo();
    list.args([
        "package",
        "--list",
        "--offline",
        "--allow-dirty",
        "-p",
        "patchall",
    ])
    .current_dir(root());
    let list = succeed(list).stdout;
    let listed: Vec<&str> = list.lines().collect();
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "build.rs".to_owned(),
    ];
    let mut pending = vec![root().join("src"), root().join("preload")];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            needed.push(path.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    for file in &needed {
        assert!(listed.contains(&file.as_str()), "the crate lacks {file}");
    }

    let dir = TempDir::new("packaged");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    let mut package = cargo();
    package
        .args([
            "package",
            "--quiet",
            "--offline",
            "--allow-dirty",
            "--no-verify",
        ])
        .args(["-p", "patchall", "--target-dir"])
        .arg(target_dir())
        .current_dir(root());
    succeed(package);
    let name = format!("patchall-{}", env!("CARGO_PKG_VERSION"));
    let packaged = target_dir().join(format!("package/{name}.crate"));
    // Unpacked again only when the crate changed, so that a rerun's install
    // is incremental.
    let unpacked = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaged");
    let seen = unpacked.join("unpacked.crate");
    let bytes = std::fs::read(&packaged).expect("read the .crate");
    if std::fs::read(&seen).ok().as_ref() != Some(&bytes) {
        let _ = std::fs::remove_dir_all(&unpacked);
        std::fs::create_dir_all(&unpacked).expect("mkdir");
        // `-m`: files dated now. `cargo package` dates every file 2006, so
        // a changed crate unpacked over the same path would look older than
        // the last build in the shared target directory and not be rebuilt.
        let mut tar = Command::new("tar");
        tar.arg("-xmzf").arg(&packaged).arg("-C").arg(&unpacked);
        succeed(tar);
        // This checkout's workspace encloses target/: an empty [workspace]
        // makes the crate its own, as in ~/.cargo/registry/src.
        let manifest = unpacked.join(&name).join("Cargo.toml");
        let mut text = std::fs::read_to_string(&manifest).expect("read Cargo.toml");
        text.push_str("\n[workspace]\n");
        std::fs::write(&manifest, text).expect("write Cargo.toml");
        std::fs::write(&seen, &bytes).expect("write");
    }
    let mut install = cargo();
    install
        .args(["install", "--quiet", "--offline", "--path"])
        .arg(unpacked.join(&name))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--target-dir")
        .arg(target_dir());
    succeed(install);
    let patchall = dir.path().join("root/bin/patchall");
    assert!(preloaded(&patchall, &home).starts_with(home.join(".cache/patchall")));
    sleepy_threads_on_one_os_thread(&patchall, &home);
}

/// Runs tests/c/fds_env.c natively and under the launcher (first with an
/// empty cache, then with a full one): the same fds, and the environment
/// differs only by `LD_PRELOAD` and the variables the options ask for.
fn nothing_left_in_the_program(patchall: &Path, home: &Path) {
    let probe = c_program("fds_env");
    let cache = home.join("fresh-cache");
    let report = |mut c: Command| {
        c.env("XDG_CACHE_HOME", &cache).env("PROBE_MARK", "kept");
        let out = run(c);
        assert!(out.status.success(), "{out:?}");
        // Pipes and sockets differ per run only in their inode number.
        let fds: Vec<String> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("fd "))
            .map(|l| match l.find(":[") {
                Some(at) => l[..at].to_owned(),
                None => l.to_owned(),
            })
            .collect();
        let env: BTreeMap<String, String> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("env "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        (fds, env)
    };
    let (native_fds, native_env) = report(launcher(&probe, home, &[]));
    assert!(native_env.contains_key("PROBE_MARK"));
    for (options, extra) in [
        (&[][..], &[][..]),
        (&["--green-threads"], &[("PATCHALL_GREEN_THREADS", "1")][..]),
        (&[], &[]),
    ] {
        let mut args = vec!["run"];
        args.extend(options);
        args.extend(["--", probe.to_str().unwrap()]);
        let (fds, mut env) = report(launcher(patchall, home, &args));
        let lib = env.remove("LD_PRELOAD").expect("LD_PRELOAD set");
        assert!(lib.starts_with(cache.to_str().unwrap()), "{lib}");
        for (name, value) in extra {
            assert_eq!(env.remove(*name).as_deref(), Some(*value), "{options:?}");
        }
        assert_eq!(env, native_env, "{options:?}");
        // Green threads start the runtime in main, which has fds of its own.
        if options.is_empty() {
            assert_eq!(fds, native_fds);
        }
    }
}

/// `scripts/deb` builds a package of the same files under /usr; unpacked into a
/// scratch root, its launcher finds its library in ../lib and runs programs.
#[test]
fn deb_package_installs_and_runs() {
    let dir = TempDir::new("deb");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    release_build();
    let mut deb = script("deb");
    deb.args(["--no-build", "--out"]).arg(dir.path());
    let out = succeed(deb);
    let deb = PathBuf::from(out.stdout.trim_end());
    assert!(deb.is_file(), "{out:?}");

    let mut field = Command::new("dpkg-deb");
    field.arg("--field").arg(&deb).args(["Package", "Depends"]);
    let fields = succeed(field).stdout;
    assert!(fields.contains("Package: patchall\n"), "{fields}");
    assert!(fields.contains("Depends: libc6 (>= 2."), "{fields}");

    let scratch = dir.path().join("root");
    let mut unpack = Command::new("dpkg");
    unpack.arg("-x").arg(&deb).arg(&scratch);
    succeed(unpack);
    let usr = scratch.join("usr");
    let mut want: Vec<String> = INSTALLED
        .iter()
        .map(|p| {
            // Debian policy: man pages gzipped.
            if p.starts_with("share/man/") && !p.ends_with('/') {
                format!("{p}.gz")
            } else {
                p.to_string()
            }
        })
        .collect();
    want.extend(completions(true));
    want.extend(
        [
            "share/doc/",
            "share/doc/patchall/",
            "share/doc/patchall/copyright",
        ]
        .map(String::from),
    );
    want.sort();
    let unpacked = tree(&usr);
    let mut got: Vec<String> = unpacked
        .iter()
        .map(|(p, f)| format!("{}{}", p.display(), if f.is_none() { "/" } else { "" }))
        .collect();
    got.sort();
    assert_eq!(got, want);

    let patchall = usr.join("bin/patchall");
    assert_eq!(preloaded(&patchall, &home), usr.join("lib/libpatchall.so"));
    sleepy_threads_on_one_os_thread(&patchall, &home);
}

/// The man page documents every option of `patchall --help` and every
/// variable the library reads.
#[test]
fn man_page_covers_options_and_variables() {
    let page = std::fs::read_to_string(root().join("man/patchall.1"))
        .expect("read man/patchall.1")
        .replace("\\-", "-");
    let mut help = Command::new(env!("CARGO_BIN_EXE_patchall"));
    help.arg("--help");
    let help = run(help);
    let options: Vec<&str> = help
        .stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    assert!(options.contains(&"--green-threads"), "{help:?}");
    for option in options {
        assert!(page.contains(option), "man/patchall.1 lacks {option}");
    }
    let mut variables = Vec::new();
    let mut pending = vec![root().join("src"), root().join("preload")];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices("\"PATCHALL_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            // Set by build.rs for the launcher's compilation, not read at run time.
            if !name.starts_with("PATCHALL_EMBEDDED_") {
                variables.push(name);
            }
        }
    }
    assert!(variables.iter().any(|v| v == "PATCHALL_STACK_SIZE"));
    for variable in variables {
        assert!(page.contains(&variable), "man/patchall.1 lacks {variable}");
    }
    assert!(
        page.contains(&format!("\"patchall {}\"", env!("CARGO_PKG_VERSION"))),
        "man/patchall.1's .TH names another version"
    );
}
