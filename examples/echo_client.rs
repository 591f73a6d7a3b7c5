//! The echo server's client, as interactive as gevent's tutorial: each line typed
//! on stdin goes to the server, and the echo comes back on stdout. Plain
//! `std::net` and `std::io` inside `patchall::spawn`.
//!
//! ```sh
//! cargo run --example echo_client -- --addr 127.0.0.1:8000
//! ```

#[path = "support/args.rs"]
mod args;

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;

fn main() -> io::Result<()> {
    let [addr] =
        <[String; 1]>::try_from(args::flags("echo_client", &[("--addr", "127.0.0.1:8000")]))
            .expect("one flag asked for");
    let client = patchall::spawn(move || -> io::Result<()> {
        let stream = TcpStream::connect(&addr)?;
        let mut from_server = BufReader::new(&stream);
        let mut to_server = &stream;
        let mut stdout = io::stdout().lock();
        for line in io::stdin().lock().lines() {
            let mut line = line?;
            line.push('\n');
            to_server.write_all(line.as_bytes())?;
            let mut echo = String::new();
            if from_server.read_line(&mut echo)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server hung up",
                ));
            }
            stdout.write_all(echo.as_bytes())?;
            stdout.flush()?;
        }
        Ok(())
    })?;
    client
        .join()
        .map_err(|_| io::Error::other("the client panicked"))?
}
