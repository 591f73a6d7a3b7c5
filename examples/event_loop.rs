//! The tutorial's last section, event-driven I/O: one loop asks the kernel which
//! fds are ready and calls the callback registered for each, on mio — the
//! reactor patchall's scheduler runs on. No coroutines: this is what they hide.
//!
//! An echo server with a callback per fd; a client thread sends three lines.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

type Callback = Box<dyn FnMut(&mut Poll, &mut Loop) -> io::Result<()>>;

/// Callbacks by token, and what they ask the loop to do next.
struct Loop {
    next: usize,
    added: Vec<(Token, Callback)>,
    removed: Vec<Token>,
    done: bool,
}

fn on_readable_conn(token: Token, mut conn: TcpStream) -> Callback {
    Box::new(move |poll: &mut Poll, lp: &mut Loop| {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => {
                    println!("[loop] {token:?}: peer closed, unregistering");
                    poll.registry().deregister(&mut conn)?;
                    lp.removed.push(token);
                    lp.done = true;
                    return Ok(());
                }
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for line in text.lines() {
                        println!("[loop] {token:?}: readable, echoing {line:?}");
                    }
                    conn.write_all(&buf[..n])?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
}

fn main() -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("an address"))?;
    let addr = listener.local_addr()?;
    const LISTENER: Token = Token(0);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut callbacks: HashMap<Token, Callback> = HashMap::new();
    callbacks.insert(
        LISTENER,
        Box::new(move |poll: &mut Poll, lp: &mut Loop| {
            while let Ok((mut conn, _)) = listener.accept() {
                lp.next += 1;
                let token = Token(lp.next);
                println!("[loop] listener readable: accepted connection {token:?}");
                poll.registry()
                    .register(&mut conn, token, Interest::READABLE)?;
                lp.added.push((token, on_readable_conn(token, conn)));
            }
            Ok(())
        }),
    );

    let client = std::thread::spawn(move || -> io::Result<Vec<String>> {
        let mut s = std::net::TcpStream::connect(addr)?;
        let mut reader = BufReader::new(s.try_clone()?);
        let mut got = Vec::new();
        for line in ["hello", "event", "loop"] {
            s.write_all(format!("{line}\n").as_bytes())?;
            let mut echo = String::new();
            reader.read_line(&mut echo)?;
            got.push(echo.trim_end().to_string());
        }
        Ok(got)
    });

    let mut events = Events::with_capacity(64);
    let mut lp = Loop {
        next: 0,
        added: Vec::new(),
        removed: Vec::new(),
        done: false,
    };
    while !lp.done {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            if let Some(cb) = callbacks.get_mut(&event.token()) {
                cb(&mut poll, &mut lp)?;
            }
        }
        callbacks.extend(lp.added.drain(..));
        for t in lp.removed.drain(..) {
            callbacks.remove(&t);
        }
        if lp.done {
            break;
        }
        // The client closes after its third echo; the loop ends when it sees that.
        if client.is_finished() && callbacks.len() == 1 {
            break;
        }
    }
    let echoed = client.join().expect("client thread")?;
    println!("[client] got back {echoed:?}");
    Ok(())
}
