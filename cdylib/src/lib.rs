//! `libpatchall.so`: the patchall hooks for `LD_PRELOAD`.

pub use patchall::hooks;

/// Decides green threads once, before any program code runs (a preloaded
/// library's constructor runs before the program's `__libc_start_main`). Only
/// reads the environment; a panic is caught, never unwinds into the loader.
#[ctor::ctor]
fn init() {
    let _ = std::panic::catch_unwind(|| {
        patchall::hooks::green::set_enabled(patchall::config().green_threads);
    });
}
