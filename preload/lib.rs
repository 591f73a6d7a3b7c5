//! `libpatchall.so`: the patchall hooks for `LD_PRELOAD`.
//!
//! Every hook is a `#[unsafe(no_mangle)] pub extern "C"` function of the
//! `patchall` rlib. rustc exports such symbols from a cdylib even when they live
//! in an upstream crate: they are in the crate's exported-symbol list at the C
//! export level, rustc writes them into the linker's version script and adds a
//! synthetic object that references each one, so the linker keeps the archive
//! members that define them (no `--whole-archive`, no hand-kept list). The
//! `preload` integration test checks the `.dynsym` table of the built library for
//! every hook, so a toolchain that stopped doing this fails loudly.
//!
//! The re-export below names the crate in this one's source, so it stays linked
//! whatever the constructor does (an `--extern` crate nothing names is not
//! linked at all); it adds no symbols of its own.

pub use patchall::hooks;

/// Reads the `PATCHALL_*` variables when the library is loaded, so a bad value
/// is reported once at startup rather than at the first spawn.
///
/// Runs before `main`, possibly before the program's own constructors: it
/// reads the environment and, on a bad value, writes a warning with a raw
/// `write(2)`; with `PATCHALL_DUMP_SIGNAL` set, it installs that signal's
/// handler and starts the thread that prints the dumps, so the signal never
/// takes its default action in a program that was told of it. It never
/// touches std's stdout/stderr and never unwinds into the loader (a panic is
/// caught and dropped).
extern "C" fn init() {
    let _ = std::panic::catch_unwind(|| {
        // Green threads are decided once, before any program code runs (a
        // preloaded library's constructor runs before the program's
        // `__libc_start_main`).
        patchall::hooks::green_threads::set_enabled(patchall::config().green_threads);
        patchall::hooks::preload_init();
    });
}

/// The loader calls every function pointer in `.init_array` when it maps the
/// library, which is all a constructor crate would generate; written out, the
/// library needs no dependency beyond `patchall`, so the launcher's build
/// script can build it offline from what `patchall` itself needs.
// SAFETY: `.init_array` holds pointers to functions taking (argc, argv, envp)
// or nothing, called once by the loader; `init` takes nothing and never unwinds.
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;
