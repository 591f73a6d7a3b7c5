//! The tokio current_thread echo server for scripts/bench: a task per client,
//! tokio's own echo example with the buffer size every peer uses.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> io::Result<()> {
    let listener = patchall_bench::listen()?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("echo_tokio: accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; patchall_bench::ECHO_BUF];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}
