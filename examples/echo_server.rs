//! gevent's echo server (`examples/echoserver.py`) with nothing but `std::net` and
//! `std::io` inside `patchall::spawn`: one coroutine accepts, one coroutine per
//! client echoes its lines back. Every blocking call parks its coroutine, so one
//! OS thread serves every client.
//!
//! ```sh
//! cargo run --example echo_server -- --addr 127.0.0.1:8000
//! cargo run --example echo_client -- --addr 127.0.0.1:8000   # in another shell
//! ```
//!
//! The first line printed is the bound address, so `--addr 127.0.0.1:0` works.

#[path = "support/args.rs"]
mod args;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() -> io::Result<()> {
    let addr = args::addr_arg("echo_server");
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    let server = patchall::spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
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
    })?;
    server
        .join()
        .map_err(|_| io::Error::other("the accept loop panicked"))
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
