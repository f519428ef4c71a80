//! `--connect ADDR --request ...` (DESIGN §7): sends one request to any
//! FastCGI server (ours, php-fpm, fcgiwrap) the way a web server would,
//! prints the raw CGI response, and tells by its status whether the
//! server is healthy.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::api::Params;
use crate::cgi::response;
use crate::error::{Error, Result};
use crate::fcgi::params;
use crate::fcgi::record::{self, RecordType, Status};
use crate::listen::BindAddr;

/// What came back.
#[derive(Debug, Default)]
pub struct Answer {
    /// The STDOUT stream: the CGI response.
    pub stdout: Vec<u8>,
    /// The STDERR stream.
    pub stderr: Vec<u8>,
    /// `appStatus` of END_REQUEST.
    pub app_status: u32,
    /// `protocolStatus` of END_REQUEST.
    pub protocol_status: u8,
}

impl Answer {
    /// The HTTP status of the response, if it has a valid header block.
    pub fn status(&self) -> Option<u16> {
        match response::parse_head(&self.stdout) {
            Ok(Status::Complete(h, _)) => Some(h.status),
            _ => None,
        }
    }
}

/// A connection to the server, either kind.
enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    fn connect(addr: &BindAddr, timeout: Duration) -> Result<Sock> {
        let what = |e| Error::io(format!("connecting to {addr}"), e);
        let sock = match addr {
            BindAddr::Unix(p) => {
                Sock::Unix(UnixStream::connect(p).map_err(what)?)
            }
            BindAddr::Tcp(hp) => {
                Sock::Tcp(TcpStream::connect(hp.as_str()).map_err(what)?)
            }
        };
        let set = |r: io::Result<()>| r.map_err(what);
        match &sock {
            Sock::Unix(s) => {
                set(s.set_read_timeout(Some(timeout)))?;
                set(s.set_write_timeout(Some(timeout)))?;
            }
            Sock::Tcp(s) => {
                set(s.set_read_timeout(Some(timeout)))?;
                set(s.set_write_timeout(Some(timeout)))?;
            }
        }
        Ok(sock)
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => (&*s).read(buf),
            Sock::Tcp(s) => (&*s).read(buf),
        }
    }

    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sock::Unix(s) => (&*s).write_all(buf),
            Sock::Tcp(s) => (&*s).write_all(buf),
        }
    }

    fn close(&self) {
        let _ = match self {
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

/// Sends one RESPONDER request with `params` and `body` to `addr` and
/// reads the whole answer (waits for each read at most `timeout`).
pub fn send(
    addr: &BindAddr,
    params_in: &Params,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer> {
    let conn = Sock::connect(addr, timeout)?;
    let id = 1;
    let mut out = Vec::new();
    record::push_record(
        &mut out,
        RecordType::BeginRequest,
        id,
        &[0, 1, 0, 0, 0, 0, 0, 0],
    );
    let mut stream = Vec::new();
    for (n, v) in params_in.iter() {
        params::push_pair(&mut stream, n, v);
    }
    record::push_stream(&mut out, RecordType::Params, id, &stream);
    record::push_end_of_stream(&mut out, RecordType::Params, id);
    record::push_stream(&mut out, RecordType::Stdin, id, body);
    record::push_end_of_stream(&mut out, RecordType::Stdin, id);
    // The request goes out from another thread while the answer is read:
    // a server may answer (and stop reading) before the body is all in.
    std::thread::scope(|s| {
        let sender = s.spawn(|| conn.write_all(&out));
        let answer = receive(&conn, id, addr, timeout);
        // Unblocks the sender if the server stopped reading the body.
        conn.close();
        // A failed send shows as a failed or short answer.
        let _ = sender.join();
        answer
    })
}

/// Reads records until the END_REQUEST of request `id`.
fn receive(
    conn: &Sock,
    id: u16,
    addr: &BindAddr,
    timeout: Duration,
) -> Result<Answer> {
    let mut answer = Answer::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Status::Complete(r, used) = record::parse_record(&buf)? {
            if r.request_id == id {
                match r.rtype {
                    RecordType::Stdout => {
                        answer.stdout.extend_from_slice(r.content)
                    }
                    RecordType::Stderr => {
                        answer.stderr.extend_from_slice(r.content)
                    }
                    RecordType::EndRequest => {
                        let c = r.content;
                        if c.len() < 8 {
                            return Err(Error::protocol(
                                "END_REQUEST body shorter than 8 bytes",
                            ));
                        }
                        answer.app_status =
                            u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                        answer.protocol_status = c[4];
                        return Ok(answer);
                    }
                    _ => {}
                }
            }
            buf.drain(..used);
        }
        let n = conn.read(&mut chunk).map_err(|e| {
            let e = if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer for {} s", timeout.as_secs()),
                )
            } else {
                e
            };
            Error::io(format!("reading the answer from {addr}"), e)
        })?;
        if n == 0 {
            return Err(Error::protocol(format!(
                "{addr} closed the connection before END_REQUEST"
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
