//! patchall's echo server for scripts/bench: blocking std code (the same loop as
//! the std thread-per-connection peer), one coroutine per client, all on the
//! main thread: one worker.

use std::io;
use std::time::Duration;

fn main() -> io::Result<()> {
    let listener = patchall_bench::listen()?;
    let server = patchall::spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(e) = patchall::spawn(move || patchall_bench::echo_blocking(stream)) {
                        eprintln!("echo_patchall: cannot serve a client: {e}");
                    }
                }
                Err(e) => {
                    eprintln!("echo_patchall: accept: {e}");
                    patchall::sleep(Duration::from_millis(10));
                }
            }
        }
    })?;
    server
        .join()
        .map_err(|_| io::Error::other("the accept loop panicked"))
}
