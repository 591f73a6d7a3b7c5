//! The hand-written epoll loop (mio, edge-triggered) for scripts/bench: one
//! thread, no tasks, no coroutines, one shared read buffer. The reference
//! every other server is compared with: the limit of this machine.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Echo bytes the socket did not take yet; nothing is read meanwhile.
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let listener = patchall_bench::listen()?;
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; patchall_bench::ECHO_BUF];
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let slot = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut stream,
                                Token(slot),
                                Interest::READABLE,
                            )?;
                            conns[slot] = Some(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("echo_mio: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns[slot].as_mut() else {
                continue;
            };
            if serve(conn, &mut buf, &poll, slot).is_err() {
                let mut conn = conns[slot].take().expect("a live connection");
                let _ = poll.registry().deregister(&mut conn.stream);
                free.push(slot);
            }
        }
    }
}

/// Flushes what is pending, then echoes what there is to read. `Err` closes.
fn serve(conn: &mut Conn, buf: &mut [u8], poll: &Poll, slot: usize) -> io::Result<()> {
    if !conn.pending.is_empty() {
        let n = match conn.stream.write(&conn.pending) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            other => other?,
        };
        conn.pending.drain(..n);
        if !conn.pending.is_empty() {
            return Ok(());
        }
        poll.registry()
            .reregister(&mut conn.stream, Token(slot), Interest::READABLE)?;
    }
    loop {
        let n = match conn.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let written = match conn.stream.write(&buf[..n]) {
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written < n {
            conn.pending.extend_from_slice(&buf[written..n]);
            return poll.registry().reregister(
                &mut conn.stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            );
        }
        // A short read drained the socket: the next bytes to arrive raise a
        // new edge, so the read that would only say WouldBlock is skipped
        // (tokio does the same).
        if n < buf.len() {
            return Ok(());
        }
    }
}
