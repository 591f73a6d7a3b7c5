//! The targets patchall is for: any other stops the build here, with one
//! message, rather than deep inside the code that assumes them.
//!
//! glibc on Linux is what this crate is written against: its symbol
//! versions, private functions and thread descriptor (runtime::tls, which
//! checks the layout at startup), Linux's system calls (Syscall User
//! Dispatch, epoll, signalfd, pidfd). x86_64 is the architecture it is built
//! and tested on. aarch64 is the other one the design allows (its
//! fixed-arity variadic hooks are ABI-correct there, see `hook!`), but the
//! port is not done: the SIGSYS handler reads x86_64 registers
//! (runtime::dispatch), green-thread TLS switches the fs base
//! (runtime::tls), the monitor reads RIP, `dlopen` (hooks::dl) is x86_64
//! assembly; those still fail to build there.

#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!(
    "patchall supports Linux with glibc (target_env = \"gnu\") on x86_64 or aarch64 only"
);
