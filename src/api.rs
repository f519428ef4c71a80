//! The handler contract shared by every transport: [`Handler`] receives a
//! [`Request`] (params, a streaming [`Body`]) and writes a CGI-style
//! answer to a [`Response`]. FastCGI, plain CGI and the in-process
//! `--request` runner all build these same two values, so a handler
//! cannot tell which gateway it runs under unless it asks
//! [`Request::transport`].

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::cgi::response::MAX_HEAD;
use crate::fcgi::record::Status;

pub use crate::fcgi::record::Role;

/// Serves requests. Implemented for every
/// `Fn(&mut Request, &mut Response) -> io::Result<()>` closure that is
/// `Send + Sync`, so a plain function is a handler.
///
/// The handler writes a CGI response: a header block (`Status:`,
/// `Content-Type:`, `Location:` ..., each line ended by `\r\n` or `\n`),
/// an empty line, then the body. Returning an error before anything was
/// written makes the server answer `500 Internal Server Error`; after
/// that the error is only logged (the client already has a status line).
pub trait Handler: Send + Sync + 'static {
    /// Serves one request.
    fn handle(&self, req: &mut Request, resp: &mut Response)
        -> io::Result<()>;

    /// Called when the server exits with requests still in flight (the
    /// grace period ran out, or a second signal came): release what
    /// would outlive the process, such as child processes.
    fn stop(&self) {}
}

impl<F> Handler for F
where
    F: Fn(&mut Request, &mut Response) -> io::Result<()>
        + Send
        + Sync
        + 'static,
{
    fn handle(
        &self,
        req: &mut Request,
        resp: &mut Response,
    ) -> io::Result<()> {
        self(req, resp)
    }
}

/// How the request reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A FastCGI connection from a web server.
    FastCgi,
    /// A CGI/1.1 invocation: environment variables and stdin.
    Cgi,
    /// Built in process by `--request` (a hand test).
    Local,
}

/// A request's params (CGI meta-variables) in the order received, repeats
/// included, as bytes. They live in one buffer with an index, so a
/// request costs two allocations however many params it has; under
/// FastCGI the buffer is the PARAMS stream itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    raw: Vec<u8>,
    /// (name start, value start, value end) in `raw`.
    index: Vec<(u32, u32, u32)>,
}

impl Params {
    /// No params.
    pub fn new() -> Params {
        Params::default()
    }

    /// Over a buffer and an index into it (the FastCGI PARAMS stream).
    pub(crate) fn from_parts(
        raw: Vec<u8>,
        index: Vec<(u32, u32, u32)>,
    ) -> Params {
        Params { raw, index }
    }

    /// The buffer and the index, for reuse.
    pub(crate) fn into_parts(self) -> (Vec<u8>, Vec<(u32, u32, u32)>) {
        (self.raw, self.index)
    }

    /// Appends a pair.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let start = at(self.raw.len());
        self.raw.extend_from_slice(name);
        let mid = at(self.raw.len());
        self.raw.extend_from_slice(value);
        self.index.push((start, mid, at(self.raw.len())));
    }

    /// How many pairs, repeats included.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True if and only if there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The pairs in the order received.
    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&[u8], &[u8])> + '_ {
        self.index.iter().map(|&(a, b, c)| {
            let (a, b, c) = (a as usize, b as usize, c as usize);
            (&self.raw[a..b], &self.raw[b..c])
        })
    }

    /// The value of `name`; when a name repeats, the last value wins.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(N, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Params {
        let mut p = Params::new();
        for (n, v) in pairs {
            p.push(n.as_ref(), v.as_ref());
        }
        p
    }
}

/// One request: its params (CGI meta-variables), role and body.
pub struct Request {
    params: Params,
    role: Role,
    transport: Transport,
    body: Body,
}

impl Request {
    /// Builds a request. `params` are kept in the order received.
    pub fn new(
        params: Params,
        role: Role,
        transport: Transport,
        body: Body,
    ) -> Request {
        Request {
            params,
            role,
            transport,
            body,
        }
    }

    /// The value of param `name`; when a name repeats, the last value wins
    /// (as in php-fpm: nginx sends `SCRIPT_NAME` twice in some configs).
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params.get(name.as_bytes())
    }

    /// The value of param `name` as text, if and only if it is present
    /// and valid UTF-8.
    pub fn param_str(&self, name: &str) -> Option<&str> {
        self.param(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every param in the order received, repeats included.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Takes the params out (when the request is over).
    pub(crate) fn take_params(&mut self) -> Params {
        std::mem::take(&mut self.params)
    }

    /// The role the web server asked for (always `Responder` for a
    /// request that reaches a handler).
    pub fn role(&self) -> Role {
        self.role
    }

    /// How the request reached us.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The request body, read as a stream.
    pub fn body(&mut self) -> &mut Body {
        &mut self.body
    }
}

/// The request body: bytes of FastCGI `STDIN` records, or CGI stdin up to
/// `CONTENT_LENGTH`. Reading it after the client went away fails with
/// `ConnectionAborted`.
pub struct Body {
    inner: Box<dyn BodySource>,
}

/// A source of body bytes; implemented by each transport.
pub(crate) trait BodySource: Read + Send {
    /// True if and only if the whole body has been read.
    fn finished(&self) -> bool;

    /// See [`Body::abort_watch`].
    fn abort_watch(&self) -> AbortWatch {
        AbortWatch(None)
    }
}

struct EmptyBody;

impl Read for EmptyBody {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl BodySource for EmptyBody {
    fn finished(&self) -> bool {
        true
    }
}

struct ReaderBody<R> {
    inner: R,
    done: bool,
}

impl<R: Read + Send> Read for ReaderBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
        }
        Ok(n)
    }
}

impl<R: Read + Send> BodySource for ReaderBody<R> {
    fn finished(&self) -> bool {
        self.done
    }
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Body {
        Body {
            inner: Box::new(EmptyBody),
        }
    }

    /// A body read from any reader until it ends.
    pub fn from_reader<R: Read + Send + 'static>(r: R) -> Body {
        Body {
            inner: Box::new(ReaderBody {
                inner: r,
                done: false,
            }),
        }
    }

    pub(crate) fn from_source(source: Box<dyn BodySource>) -> Body {
        Body { inner: source }
    }

    /// True if and only if the body has been read to its end.
    pub fn is_finished(&self) -> bool {
        self.inner.finished()
    }

    /// A handle that tells, without waiting, whether the web server has
    /// aborted the request or hung up; usable from another thread while
    /// this body is being read. For handlers that wait on something else
    /// (a child process) and must stop when the client goes away.
    pub fn abort_watch(&self) -> AbortWatch {
        self.inner.abort_watch()
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// Tells whether a request was aborted; see [`Body::abort_watch`].
#[derive(Clone)]
pub struct AbortWatch(Option<Arc<dyn Fn() -> bool + Send + Sync>>);

impl AbortWatch {
    pub(crate) fn new(
        poll: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> AbortWatch {
        AbortWatch(Some(poll))
    }

    /// True if and only if the web server aborted the request or hung up.
    /// Never waits; always false under CGI, where the web server ends the
    /// process itself.
    pub fn poll(&self) -> bool {
        self.0.as_ref().is_some_and(|p| p())
    }
}

/// Where a response goes; implemented by each transport.
pub(crate) trait Output: Send {
    /// Sends stdout bytes now.
    fn stdout(&mut self, data: &[u8]) -> io::Result<()>;
    /// A writer for stderr that may be used from another thread.
    fn stderr(&self) -> StderrHandle;
}

/// A function that sends stderr bytes somewhere.
pub(crate) type StderrSink =
    Arc<dyn Fn(&[u8]) -> io::Result<()> + Send + Sync>;

/// Writes to the request's stderr stream (FastCGI `STDERR`, which web
/// servers put in their error log; in CGI mode our own stderr). Cheap to
/// clone and usable from any thread.
#[derive(Clone)]
pub struct StderrHandle {
    sink: StderrSink,
}

impl StderrHandle {
    pub(crate) fn new(sink: StderrSink) -> StderrHandle {
        StderrHandle { sink }
    }

    /// Sends `data` to the stderr stream now.
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        (self.sink)(data)
    }
}

impl Write for StderrHandle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Size at which buffered stdout is sent without waiting for a flush.
const STDOUT_BUFFER: usize = 32 * 1024;

/// The response: a CGI header block, then the body, written with `Write`.
///
/// Writes are buffered so that a small response leaves in one packet;
/// [`Write::flush`] sends what is buffered at once (a progress page or
/// a long poll calls it after each piece).
pub struct Response {
    out: Box<dyn Output>,
    buf: Vec<u8>,
    written: u64,
    aborted: Arc<AtomicBool>,
    /// The header block as far as the bytes already sent tell (the rest
    /// is in `buf`), for the status.
    sent: Sent,
}

impl Response {
    pub(crate) fn new(
        out: Box<dyn Output>,
        aborted: Arc<AtomicBool>,
    ) -> Response {
        Response::with_buffer(out, aborted, Vec::new())
    }

    /// A response that buffers in `buf` (empty, maybe with capacity).
    pub(crate) fn with_buffer(
        out: Box<dyn Output>,
        aborted: Arc<AtomicBool>,
        buf: Vec<u8>,
    ) -> Response {
        Response {
            out,
            buf,
            written: 0,
            aborted,
            sent: Sent::Partial(Vec::new()),
        }
    }

    /// The status the header block written so far gives; None if it is
    /// not complete or not valid.
    pub(crate) fn status(&self) -> Option<u16> {
        match &self.sent {
            Sent::Known(status) => *status,
            Sent::Partial(start) => head_status(start, &self.buf).flatten(),
        }
    }

    /// Sends `data` as stdout, noting what it tells of the header block.
    fn send(
        out: &mut dyn Output,
        sent: &mut Sent,
        data: &[u8],
    ) -> io::Result<()> {
        if let Sent::Partial(start) = sent {
            match head_status(start, data) {
                Some(status) => *sent = Sent::Known(status),
                // Both fit in MAX_HEAD bytes (see `head_status`).
                None => start.extend_from_slice(data),
            }
        }
        out.stdout(data)
    }

    /// True if and only if some stdout byte was written (buffered or
    /// sent): from then on the status line is out of our hands.
    pub fn is_started(&self) -> bool {
        self.written > 0
    }

    /// True if and only if the client aborted the request or went away.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    /// A handle for the stderr stream, usable from other threads.
    pub fn stderr(&self) -> StderrHandle {
        self.out.stderr()
    }

    /// The shared abort flag, for code that waits on something else
    /// (a child process) and must notice the client going away.
    pub fn abort_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.aborted)
    }

    fn aborted_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "client aborted the request",
        )
    }

    /// Takes what is buffered and not yet sent (used when the transport
    /// ends the request and sends the tail with END_REQUEST).
    pub(crate) fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// What the bytes already sent tell of the header block.
enum Sent {
    /// Its start (empty before anything is sent): not complete yet.
    Partial(Vec<u8>),
    /// It ended, or proved invalid, within them: its status if valid.
    Known(Option<u16>),
}

/// The status of the header block at the start of `start` then `more`:
/// Some(Some) if it is complete, Some(None) if it is not a valid one (or
/// not within [`MAX_HEAD`] bytes), None if more bytes could still complete
/// it (so `start` and `more` together are at most [`MAX_HEAD`] bytes).
fn head_status(start: &[u8], more: &[u8]) -> Option<Option<u16>> {
    let joined;
    let b = if start.is_empty() {
        more
    } else {
        let n = more.len().min(MAX_HEAD + 1 - start.len());
        joined = [start, &more[..n]].concat();
        &joined[..]
    };
    match crate::cgi::response::parse_head(b) {
        Ok(Status::Complete(head, _)) => Some(Some(head.status)),
        Ok(Status::Partial) if b.len() <= MAX_HEAD => None,
        _ => Some(None),
    }
}

impl Write for Response {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.is_aborted() {
            return Err(Self::aborted_error());
        }
        self.written += data.len() as u64;
        if self.buf.len() + data.len() > STDOUT_BUFFER {
            self.flush()?;
            if data.len() >= STDOUT_BUFFER {
                Response::send(&mut *self.out, &mut self.sent, data)?;
                return Ok(data.len());
            }
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.is_aborted() {
            return Err(Self::aborted_error());
        }
        if !self.buf.is_empty() {
            let r = Response::send(&mut *self.out, &mut self.sent, &self.buf);
            self.buf.clear();
            r?;
        }
        Ok(())
    }
}

/// The answer to a request whose handler failed before writing anything.
const ERROR_500: &[u8] = b"Status: 500 Internal Server Error\r\n\
Content-Type: text/plain\r\n\r\n\
500 Internal Server Error: the application failed; see the error log.\n";

/// Runs `handler` on one request: a failure before any output becomes a
/// `500`, a panic is contained to this request, and the request is logged
/// (method, URI, status, duration). Returns the FastCGI `appStatus`: 0 if
/// and only if the handler succeeded.
pub(crate) fn dispatch(
    handler: &dyn Handler,
    req: &mut Request,
    resp: &mut Response,
) -> u32 {
    let start = Instant::now();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.handle(req, resp)
        }));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(match panic.downcast_ref::<&str>() {
            Some(s) => format!("the handler panicked: {s}"),
            None => match panic.downcast_ref::<String>() {
                Some(s) => format!("the handler panicked: {s}"),
                None => "the handler panicked".to_string(),
            },
        }),
    };
    if failure.is_none() && !log::log_enabled!(log::Level::Info) {
        return 0;
    }
    let method = req.param_str("REQUEST_METHOD").unwrap_or("-").to_string();
    let uri = request_uri(req);
    if let Some(why) = &failure {
        if resp.is_aborted() {
            log::info!("{method} {uri}: client went away ({why})");
        } else if !resp.is_started() {
            log::error!("{method} {uri}: {why}; answered 500");
            let _ = resp.write_all(ERROR_500);
        } else {
            log::error!("{method} {uri}: {why} (after the response began)");
        }
    }
    let status = resp
        .status()
        .map_or_else(|| "-".to_string(), |s| s.to_string());
    log::info!(
        "{method} {uri} {status} {:.1}ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    u32::from(failure.is_some())
}

/// The URI of a request, for log lines.
fn request_uri(req: &Request) -> String {
    match req.param("REQUEST_URI") {
        Some(u) => String::from_utf8_lossy(u).into_owned(),
        None => {
            let part = |n| {
                String::from_utf8_lossy(req.param(n).unwrap_or_default())
                    .into_owned()
            };
            format!("{}{}", part("SCRIPT_NAME"), part("PATH_INFO"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that drops what it is sent.
    struct Discard;

    impl Output for Discard {
        fn stdout(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }

        fn stderr(&self) -> StderrHandle {
            StderrHandle::new(Arc::new(|_: &[u8]| Ok(())))
        }
    }

    fn response() -> Response {
        Response::new(Box::new(Discard), Arc::new(AtomicBool::new(false)))
    }

    #[test]
    fn the_status_is_read_from_the_head_buffered_sent_or_split() {
        let head =
            b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\n";
        // A long body after the head, all buffered.
        let long_tail = [&head[10..], &[b'x'; 5000][..]].concat();
        // (bytes written then flushed, bytes written after, status)
        let table: &[(&[u8], &[u8], Option<u16>)] = &[
            (b"", head, Some(404)),
            (head, b"body", Some(404)),
            (&head[..10], &head[10..], Some(404)),
            (&head[..10], &long_tail, Some(404)),
            (b"Content-Type: text/plain\r\n\r\n", b"", Some(200)),
            (&head[..10], b"", None),
            (b"", b"not a header block", None),
        ];
        for (sent, buffered, want) in table {
            let mut r = response();
            r.write_all(sent).expect("write");
            r.flush().expect("flush");
            r.write_all(buffered).expect("write");
            assert_eq!(r.status(), *want, "{sent:?} then {buffered:?}");
        }
    }

    #[test]
    fn a_long_head_gives_its_status_up_to_the_cgi_limit() {
        // (padding header length, status wanted), buffered and flushed.
        let table: &[(usize, Option<u16>)] =
            &[(1500, Some(404)), (40_000, Some(404)), (MAX_HEAD, None)];
        for &(pad, want) in table {
            let mut head = b"X-Pad: ".to_vec();
            head.resize(pad, b'a');
            head.extend_from_slice(b"\r\nStatus: 404 Not Found\r\n\r\nbody");
            for flush in [false, true] {
                let mut r = response();
                r.write_all(&head).expect("write");
                if flush {
                    r.flush().expect("flush");
                }
                assert_eq!(r.status(), want, "pad {pad}, flushed: {flush}");
            }
        }
    }
}
