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

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

fn connect(addr: &BindAddr, timeout: Duration) -> Result<Box<dyn Conn>> {
    let what = || format!("connecting to {addr}");
    Ok(match addr {
        BindAddr::Unix(p) => {
            let s =
                UnixStream::connect(p).map_err(|e| Error::io(what(), e))?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| Error::io(what(), e))?;
            s.set_write_timeout(Some(timeout))
                .map_err(|e| Error::io(what(), e))?;
            Box::new(s)
        }
        BindAddr::Tcp(hp) => {
            let s = TcpStream::connect(hp.as_str())
                .map_err(|e| Error::io(what(), e))?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| Error::io(what(), e))?;
            s.set_write_timeout(Some(timeout))
                .map_err(|e| Error::io(what(), e))?;
            Box::new(s)
        }
    })
}

/// Sends one RESPONDER request with `params` and `body` to `addr` and
/// reads the whole answer (waits for each read at most `timeout`).
pub fn send(
    addr: &BindAddr,
    params_in: &Params,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer> {
    let mut conn = connect(addr, timeout)?;
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
    conn.write_all(&out)
        .map_err(|e| Error::io(format!("sending the request to {addr}"), e))?;
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
