//! Bounds of `PATCHALL_*` values that the launcher checks too.
//!
//! The launcher (src/bin/patchall/) includes this file by path instead of using
//! the library: naming anything of the `patchall` crate would link it, and with
//! it every hook, into the launcher. So this file stands alone: no `crate::`
//! paths, no dependencies.

/// Smallest stack we hand out: a signal handler plus a libc call need this much.
pub const MIN_STACK_SIZE: usize = 16 * 1024;
/// Largest stack size accepted (`PATCHALL_STACK_SIZE`, `patchall run
/// --stack-size`): 1 GiB, 128 times glibc's default thread stack; beyond it a
/// value is a typo, and no coroutine could get such a stack anyway.
pub const MAX_STACK_SIZE: usize = 1 << 30;
