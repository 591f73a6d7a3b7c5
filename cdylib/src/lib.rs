//! `libpatchall.so`: the hooks of the `patchall` crate, for `LD_PRELOAD`.

pub use patchall;

/// Decides green threads once, before `main`, so that every user of a lock sees
/// one implementation.
#[ctor::ctor]
fn init() {
    patchall::hooks::green::set_enabled(patchall::config().green_threads);
}
