//! A program that is stuck, and what `patchall::run_info()` says about it: a
//! consumer waits on a channel whose producer waits for a socket that never
//! speaks.
//!
//! ```text
//! cargo run --example run_info
//! PATCHALL_DUMP=exit PATCHALL_STATS=1 cargo run --example run_info   # the same at exit
//! ```
//!
//! Prints, for example:
//!
//! ```text
//! patchall: run info of process 4242: 1 worker, 2 coroutines
//! worker 1 (thread 4242): 2 coroutines
//!   coroutine 1 "producer": parked in recv (fd 5, read)
//!   coroutine 2 "consumer": parked in channel recv
//! ```
//!
//! How long each has waited (`for 0.100 s`) is shown for waits that began
//! while waits were timed: with `PATCHALL_DUMP_SIGNAL`, `PATCHALL_DUMP` or
//! `PATCHALL_STATS` set, or after a first `run_info()`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let _client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    let (tx, rx) = patchall::sync::unbounded::<Vec<u8>>();
    patchall::Builder::new().name("producer").spawn(move || {
        let mut buf = vec![0; 64];
        // Nobody writes to `_client`: this waits for good.
        let n = server.read(&mut buf).unwrap_or(0);
        buf.truncate(n);
        tx.send(buf).ok();
    })?;
    patchall::Builder::new()
        .name("consumer")
        .spawn(move || rx.recv().map(|b| b.len()).unwrap_or(0))?;
    // This thread drives both coroutines into their waits.
    patchall::sleep(Duration::from_millis(100));
    print!("{}", patchall::run_info());
    // Exits with both still waiting.
    Ok(())
}
