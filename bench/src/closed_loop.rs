//! The closed-loop echo client of `loadgen` and `duel`: connections to one
//! server on one epoll set (mio, edge-triggered), each sending SIZE bytes and
//! checking the echo byte by byte. No allocation per round trip; per round
//! trip one write and one read, the system calls the raw epoll server makes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// The token of a control fd (`watch`): beyond any connection's.
const CONTROL: Token = Token(usize::MAX);

/// Longest a connect, or the first round trip on every connection, may take.
pub const SETUP_LIMIT: Duration = Duration::from_secs(120);

struct Conn {
    stream: TcpStream,
    /// What this connection sends: its own bytes, so crossed replies show.
    payload: Vec<u8>,
    /// Bytes of the current echo received so far.
    got: usize,
    sent_at: Instant,
    /// A request is out and its echo not all back.
    waiting: bool,
    alive: bool,
}

/// The connections and their epoll set.
pub struct Gen {
    poll: Poll,
    conns: Vec<Conn>,
    events: Events,
    buf: Vec<u8>,
    /// Connections that failed (connect, I/O, a wrong echo).
    pub errors: u64,
}

impl Gen {
    /// Opens `conns` connections to `addr` (blocking connects, one after
    /// another; a failed one is counted in `errors` and skipped).
    pub fn connect(addr: SocketAddr, conns: usize, size: usize) -> io::Result<Gen> {
        let start = Instant::now();
        let mut generator = Gen {
            poll: Poll::new()?,
            conns: Vec::with_capacity(conns),
            events: Events::with_capacity(1024),
            buf: vec![0u8; size.max(1)],
            errors: 0,
        };
        for i in 0..conns {
            let stream = match StdStream::connect_timeout(&addr, SETUP_LIMIT) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("loadgen: connect {i} of {conns}: {e}");
                    generator.errors += 1;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(stream);
            let token = Token(generator.conns.len());
            generator
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE)?;
            generator.conns.push(Conn {
                stream,
                payload: (0..size).map(|k| (token.0 * 7 + k) as u8).collect(),
                got: 0,
                sent_at: start,
                waiting: false,
                alive: true,
            });
        }
        Ok(generator)
    }

    /// Connections opened.
    pub fn connected(&self) -> usize {
        self.conns.len()
    }

    /// Connections still in use.
    pub fn alive(&self) -> usize {
        self.conns.iter().filter(|c| c.alive).count()
    }

    /// One round trip on every connection, so that the server has accepted
    /// and is serving each; a connection not answered within `SETUP_LIMIT`
    /// is counted as failed.
    pub fn warm(&mut self) -> io::Result<()> {
        let failed_before = self.errors;
        self.send_all(Instant::now());
        let started = self.waiting();
        let mut echoed = 0;
        let deadline = Instant::now() + SETUP_LIMIT;
        while echoed + ((self.errors - failed_before) as usize) < started
            && Instant::now() < deadline
        {
            self.turn(Duration::from_millis(100), |_, _, _, _| echoed += 1)?;
        }
        for i in 0..self.conns.len() {
            if self.conns[i].waiting {
                self.fail(i, "no echo within the setup limit");
            }
        }
        Ok(())
    }

    /// Starts a round trip on every live connection that has none out.
    pub fn send_all(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            if self.conns[i].alive && !self.conns[i].waiting {
                self.send(i, now);
            }
        }
    }

    /// Round trips out and not yet back.
    fn waiting(&self) -> usize {
        self.conns.iter().filter(|c| c.alive && c.waiting).count()
    }

    /// Starts a round trip on `i`; a connection that fails is dropped.
    pub fn send(&mut self, i: usize, now: Instant) {
        let conn = &mut self.conns[i];
        conn.got = 0;
        conn.sent_at = now;
        conn.waiting = true;
        // SIZE bytes on an idle socket: the kernel takes them whole.
        if !matches!(conn.stream.write(&conn.payload), Ok(n) if n == conn.payload.len()) {
            self.fail(i, "short write");
        }
    }

    fn fail(&mut self, i: usize, why: &str) {
        let conn = &mut self.conns[i];
        if conn.alive {
            conn.alive = false;
            self.errors += 1;
            if self.errors <= 5 {
                eprintln!("loadgen: connection {i}: {why}");
            }
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// Adds `fd` (readable: a command pipe) to the epoll set: `turn` says
    /// when it fires.
    pub fn watch(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), CONTROL, Interest::READABLE)
    }

    /// Polls once (up to `timeout`) and serves what it reported: calls
    /// `done(gen, conn, latency, now)` for every completed echo.
    pub fn turn(
        &mut self,
        timeout: Duration,
        done: impl FnMut(&mut Gen, usize, Duration, Instant),
    ) -> io::Result<()> {
        self.poll(timeout)?;
        self.serve(done);
        Ok(())
    }

    /// Polls once (up to `timeout`); true if the watched fd fired. The
    /// connections it reported wait for `serve`, so that a command read
    /// first applies to them.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<bool> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.events.clear();
                Ok(false)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(self.events.iter().any(|e| e.token() == CONTROL)),
        }
    }

    /// Reads the connections the last `poll` reported; calls `done(gen,
    /// conn, latency, now)` for every completed echo.
    pub fn serve(&mut self, mut done: impl FnMut(&mut Gen, usize, Duration, Instant)) {
        let ready: Vec<usize> = self
            .events
            .iter()
            .map(|e| e.token().0)
            .filter(|&t| t != CONTROL.0)
            .collect();
        let mut buf = std::mem::take(&mut self.buf);
        for i in ready {
            loop {
                let conn = &mut self.conns[i];
                if !conn.alive {
                    break;
                }
                let want = conn.payload.len() - conn.got;
                let n = match conn.stream.read(&mut buf[..want.max(1)]) {
                    Ok(0) => {
                        self.fail(i, "closed by the server");
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.fail(i, &e.to_string());
                        break;
                    }
                };
                if n > want || buf[..n] != conn.payload[conn.got..conn.got + n] {
                    self.fail(i, "echo differs from what was sent");
                    break;
                }
                conn.got += n;
                if conn.got == conn.payload.len() {
                    conn.waiting = false;
                    let now = Instant::now();
                    let latency = now - conn.sent_at;
                    done(self, i, latency, now);
                    // Nothing more can come before the next send.
                    break;
                }
                // Short read: the socket is drained, the rest raises a new edge.
            }
        }
        self.buf = buf;
    }
}
