//! gevent's echo server (`examples/echoserver.py`) with nothing but `std::net` and
//! `std::io` inside `patchall::spawn`: one coroutine accepts, one coroutine per
//! client echoes its lines back. Every blocking call parks its coroutine, so one
//! OS thread serves every client.
//!
//! With `--workers N` (N > 1) the same server runs on N cores: one listener is
//! shared by an accept loop on every worker of a `patchall::Runtime`; each
//! accepted client is served by a coroutine on the worker that accepted it (a
//! coroutine never migrates). The kernel wakes every parked accept loop on a new
//! connection; the one that calls `accept` first gets it, the others see
//! `EAGAIN` and park again. Each worker prints a line when it serves its first
//! client.
//!
//! ```sh
//! cargo run --example echo_server -- --addr 127.0.0.1:8000 [--workers 2]
//! cargo run --example echo_client -- --addr 127.0.0.1:8000   # in another shell
//! ```
//!
//! The first line printed is the bound address, so `--addr 127.0.0.1:0` works.

#[path = "support/args.rs"]
mod args;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

fn main() -> io::Result<()> {
    let [addr, workers] = <[String; 2]>::try_from(args::flags(
        "echo_server",
        &[("--addr", "127.0.0.1:8000"), ("--workers", "1")],
    ))
    .expect("two flags asked for");
    let Ok(workers @ 1..) = workers.parse::<usize>() else {
        eprintln!("echo_server: --workers takes a number of threads, at least 1");
        std::process::exit(2);
    };
    let listener = Arc::new(TcpListener::bind(&addr)?);
    println!("listening on {}", listener.local_addr()?);
    if workers == 1 {
        // No runtime: the accept loop and its clients are coroutines of main's
        // thread.
        return finish(patchall::spawn(move || accept_loop(&listener, None))?.join());
    }
    let rt = patchall::Runtime::builder().workers(workers).build()?;
    // Least-loaded placement puts the i-th loop on the i-th worker.
    let loops = (0..workers)
        .map(|i| {
            let listener = listener.clone();
            rt.spawn(move || accept_loop(&listener, Some(i)))
        })
        .collect::<io::Result<Vec<_>>>()?;
    loops.into_iter().try_for_each(|h| finish(h.join()))
}

fn finish(joined: patchall::Result<()>) -> io::Result<()> {
    joined.map_err(|_| io::Error::other("an accept loop panicked"))
}

/// Accepts clients for ever, each served by a coroutine on this thread.
/// `worker` names the worker running this loop, if there are several.
fn accept_loop(listener: &TcpListener, worker: Option<usize>) {
    let mut served = 0u64;
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                served += 1;
                if let (Some(i), 1) = (worker, served) {
                    // Whoever started us may have stopped reading: no panic.
                    let _ = writeln!(io::stdout(), "worker {i} serves its first client");
                }
                // Spawned from a worker's coroutine: stays on that worker.
                if let Err(e) = patchall::spawn(move || echo(stream)) {
                    // No stack to be had: this client goes, the server stays.
                    eprintln!("echo_server: cannot serve a client: {e}");
                }
            }
            Err(e) => {
                // Out of fds, most likely: let clients leave, then go on.
                eprintln!("echo_server: accept: {e}");
                patchall::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Sends every line back until the client closes (or the connection fails).
/// Only the accept loop prints: two coroutines printing at once could find
/// stdout's lock held by the other, parked mid-write.
fn echo(stream: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        writer.write_all(&line)?;
    }
}
