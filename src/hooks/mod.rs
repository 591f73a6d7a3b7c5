//! Interposed libc calls.
