//! CGI/1.1 (RFC 3875): the transport that serves exactly one request from
//! the environment and stdin to stdout, and the pure CGI pieces shared
//! with the FastCGI side (the response header parser).

pub mod child;
pub mod env;
pub mod exec;
pub mod response;

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::api::{
    self, Body, Handler, Output, Params, Request, Response, Role,
    StderrHandle, Transport,
};
use crate::error::{Error, Result};

/// The process environment as params, in no particular order.
fn env_params() -> Params {
    std::env::vars_os()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Output to our own stdout and stderr (CGI mode and `--request`).
pub(crate) struct StdOutput;

impl Output for StdOutput {
    fn stdout(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(data)?;
        out.flush()
    }

    fn stderr(&self) -> StderrHandle {
        StderrHandle::new(Arc::new(|data: &[u8]| {
            io::stderr().lock().write_all(data)
        }))
    }
}

/// Serves the one CGI request this process was started for: params from
/// the environment, the body from stdin (no more than `CONTENT_LENGTH`
/// bytes, as RFC 3875 §4.2 requires), the response to stdout.
pub fn serve_cgi(handler: &dyn Handler) -> Result<()> {
    let params = env_params();
    let length = params
        .get(b"CONTENT_LENGTH")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0u64);
    // Not io::stdin(): its buffer would read past CONTENT_LENGTH, which
    // RFC 3875 §4.2 forbids (the bytes after the body are not ours).
    let stdin = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("duplicating stdin", e))?;
    let body = Body::from_reader(std::fs::File::from(stdin).take(length));
    let mut req = Request::new(params, Role::Responder, Transport::Cgi, body);
    let aborted = Arc::new(AtomicBool::new(false));
    let mut resp = Response::new(Box::new(StdOutput), aborted);
    api::dispatch(handler, &mut req, &mut resp);
    resp.flush()
        .map_err(|e| Error::io("writing the CGI response to stdout", e))
}
