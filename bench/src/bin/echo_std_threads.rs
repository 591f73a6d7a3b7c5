//! The std thread-per-connection echo server for scripts/bench: the same
//! blocking loop as patchall's, one OS thread per client.

use std::io;
use std::time::Duration;

fn main() -> io::Result<()> {
    let listener = patchall_bench::listen()?;
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) =
                    std::thread::Builder::new().spawn(move || patchall_bench::echo_blocking(stream))
                {
                    eprintln!("echo_std_threads: cannot serve a client: {e}");
                }
            }
            Err(e) => {
                eprintln!("echo_std_threads: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}
