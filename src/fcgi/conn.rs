//! One FastCGI connection as a state machine (spec §3.5, §4, §5): reads
//! records until a request head (BEGIN_REQUEST plus the PARAMS stream) is
//! complete, answers management records and protocol refusals on the way,
//! then lends the connection to a [`Body`] reader and a [`Response`]
//! writer while the handler runs, and ends the request with exactly one
//! END_REQUEST.
//!
//! It knows nothing of sockets, threads or signals: bytes come and go
//! through a [`Wire`], which the server implements on its sockets.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::params::{self, parse_pair_head};
use super::record::{
    self, ProtocolStatus, RecordType, Role, Status, HEADER_LEN, MAX_CONTENT,
    NULL_REQUEST_ID,
};
use super::spares;
use crate::api::{
    AbortWatch, Body, BodySource, Output, Params, Response, StderrHandle,
};
use crate::error::{Error, Result};

/// A byte pipe to the web server. Reads never block; waits are bounded by
/// the implementation's I/O timeout. The buffers given to reads are reused
/// across connections and may hold earlier bytes: a read only writes them.
pub trait Wire: Send + Sync {
    /// Reads what is available now; `WouldBlock` if nothing is, `Ok(0)` at
    /// end of stream.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Reads, waiting about `wait` for bytes if none are there yet (in the
    /// read itself: one system call when they come); `WouldBlock` if none
    /// came.
    fn read_within(&self, buf: &mut [u8], wait: Duration)
        -> io::Result<usize>;
    /// Waits until reading would not block; `TimedOut` past the timeout.
    fn wait_readable(&self) -> io::Result<()>;
    /// Writes all of `buf`, waiting for room; `TimedOut` past the timeout.
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Shuts down our sending direction (a lingering close).
    fn shutdown_write(&self);
    /// True if and only if the peer has closed or reset the connection
    /// (asked without reading or waiting).
    fn hung_up(&self) -> bool;
}

/// Bounds on the PARAMS stream, checked before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of the PARAMS stream.
    pub params_bytes: usize,
    /// Number of name-value pairs.
    pub params_count: usize,
    /// Length of one name.
    pub name_len: usize,
    /// Length of one value.
    pub value_len: usize,
}

impl Default for Limits {
    /// 1 MiB of params in at most 4096 pairs, names up to 8 KiB: far above
    /// what nginx, Apache or lighttpd send (a few KiB), far below what
    /// could hurt the machine.
    fn default() -> Limits {
        Limits {
            params_bytes: 1 << 20,
            params_count: 4096,
            name_len: 8 << 10,
            value_len: 1 << 20,
        }
    }
}

/// What FCGI_GET_VALUES reports (spec §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// `FCGI_MAX_CONNS`: connections we keep open at once.
    pub max_conns: usize,
    /// `FCGI_MAX_REQS`: requests we accept at once (one per connection).
    pub max_reqs: usize,
}

/// Room for the largest record: header, 65535 content and 255 padding.
const RECORD_ROOM: usize = HEADER_LEN + MAX_CONTENT + 255;

/// Bytes received and not yet parsed.
struct Rx {
    /// Storage; bytes `start..end` are received and not yet parsed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

/// First size of a receive buffer: a whole request head from nginx or
/// Apache fits; it grows to [`RECORD_ROOM`] only for large records.
const RX_INITIAL: usize = 8 * 1024;

impl Rx {
    fn new() -> Rx {
        Rx {
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops every pending byte.
    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Makes room at the end: moves pending bytes to the front, or grows
    /// the buffer (never past what one record can need).
    fn make_room(&mut self) {
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        } else if self.buf.is_empty() {
            self.buf = spares::with(|s| s.rx.pop())
                .flatten()
                .unwrap_or_else(|| vec![0; RX_INITIAL]);
        } else {
            let size = (self.buf.len() * 2).clamp(RX_INITIAL, RECORD_ROOM);
            self.buf.resize(size, 0);
        }
    }

    /// Reads what the wire has now. Ok(false) if nothing was available.
    fn fill_now(&mut self, wire: &dyn Wire) -> io::Result<bool> {
        self.fill(wire, None)
    }

    /// Reads what the wire has, waiting up to `wait` (None: not at all)
    /// for bytes if none are there yet. Ok(false) if none came.
    fn fill(
        &mut self,
        wire: &dyn Wire,
        wait: Option<Duration>,
    ) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.make_room();
        if self.end == self.buf.len() {
            // Full of one incomplete record: cannot happen, as a record
            // fits RECORD_ROOM; treat it as nothing new.
            return Ok(false);
        }
        let room = &mut self.buf[self.end..];
        let got = match wait {
            None => wire.read_now(room),
            Some(d) => wire.read_within(room, d),
        };
        match got {
            Ok(0) => {
                self.eof = true;
                Ok(true)
            }
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads, waiting for bytes if none are there yet.
    fn fill_wait(&mut self, wire: &dyn Wire) -> io::Result<()> {
        while !self.fill_now(wire)? {
            wire.wait_readable()?;
        }
        Ok(())
    }

    /// Gives up the buffer of an idle connection: a parked connection
    /// holds no buffer.
    fn shrink(&mut self) {
        if self.start == self.end {
            self.clear();
            self.recycle();
        }
    }

    /// Hands the buffer to the next connection this thread serves instead
    /// of returning it to the allocator (a new one would be zeroed: 8 KiB
    /// written for every connection).
    fn recycle(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() == RX_INITIAL {
            spares::with(|s| {
                if s.rx.len() < spares::RX_KEPT {
                    s.rx.push(buf);
                }
            });
        }
    }
}

impl Drop for Rx {
    fn drop(&mut self) {
        self.recycle();
    }
}

/// Sends records; one lock so that replies sent by the body reader and
/// output sent by the handler never interleave inside a record.
struct Tx {
    wire: Arc<dyn Wire>,
    lock: Mutex<()>,
}

impl Tx {
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let _guard = lock(&self.lock);
        self.wire.write_all(bytes)
    }
}

/// Locks a mutex, ignoring poisoning: the data guarded here stays
/// consistent whatever a panicking handler did.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The head of a request: everything before its body.
#[derive(Debug)]
pub struct RequestHead {
    /// The request id.
    pub id: u16,
    /// True if and only if the server asked us to keep the connection.
    pub keep_conn: bool,
    /// The params in the order received.
    pub params: Params,
}

/// A request head being received.
struct Pending {
    id: u16,
    role: Role,
    keep_conn: bool,
    /// The PARAMS stream so far; the params are slices of it.
    raw: Vec<u8>,
    parsed: usize,
    /// (name start, value start, value end) of each pair in `raw`.
    index: Vec<(u32, u32, u32)>,
}

/// What [`Conn::advance`] may read before it says `NeedMore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// What the wire has now, without waiting.
    Now,
    /// Up to this long for the first bytes if none are there yet.
    Within(Duration),
}

/// What [`Conn::advance`] found.
#[derive(Debug)]
pub enum Progress {
    /// A request head is complete: run it with [`Conn::run`].
    Request(RequestHead),
    /// Nothing more can be done until more bytes arrive.
    NeedMore,
    /// The connection is over (the peer closed it between requests, or we
    /// refused a request on a connection not to be kept).
    Done,
}

/// One connection's protocol state.
pub struct Conn {
    wire: Arc<dyn Wire>,
    tx: Arc<Tx>,
    rx: Arc<Mutex<Rx>>,
    pending: Option<Pending>,
    limits: Limits,
    capacity: Capacity,
    /// A request was refused on a connection not to be kept: close it
    /// gracefully, its remaining records may still be on their way.
    refused: bool,
}

impl Conn {
    /// A new connection over `wire`.
    pub fn new(
        wire: Arc<dyn Wire>,
        limits: Limits,
        capacity: Capacity,
    ) -> Conn {
        Conn {
            tx: Arc::new(Tx {
                wire: Arc::clone(&wire),
                lock: Mutex::new(()),
            }),
            wire,
            rx: Arc::new(Mutex::new(Rx::new())),
            pending: None,
            limits,
            capacity,
            refused: false,
        }
    }

    /// True if and only if part of a request has arrived and the rest has
    /// not: the time a client may take here is bounded.
    pub fn mid_request(&self) -> bool {
        self.pending.is_some() || !lock(&self.rx).pending().is_empty()
    }

    /// Frees buffers while the connection is idle.
    pub fn shrink(&mut self) {
        lock(&self.rx).shrink();
    }

    /// Processes buffered bytes, then reads as `fill` says (only the first
    /// read may wait), until a request head is complete or more bytes are
    /// needed.
    pub fn advance(&mut self, fill: Fill) -> Result<Progress> {
        let rx = Arc::clone(&self.rx);
        let mut rx = lock(&rx);
        let mut wait = match fill {
            Fill::Now => None,
            Fill::Within(d) => Some(d),
        };
        loop {
            if let Some(p) = self.step(&mut rx)? {
                if self.refused {
                    linger(&*self.wire, &mut rx);
                }
                return Ok(p);
            }
            // Only the first read waits.
            let got = rx
                .fill(&*self.wire, wait.take())
                .map_err(|e| Error::io("reading from the web server", e))?;
            if rx.eof && rx.pending().is_empty() {
                return match self.pending {
                    None => Ok(Progress::Done),
                    Some(_) => Err(Error::protocol(
                        "connection closed before the request head was complete",
                    )),
                };
            }
            if rx.eof {
                if let Status::Partial = record::parse_record(rx.pending())? {
                    return Err(Error::protocol(format!(
                        "connection closed in the middle of a record ({} bytes of it received)",
                        rx.pending().len()
                    )));
                }
            }
            if !got {
                return Ok(Progress::NeedMore);
            }
        }
    }

    /// Handles the records in the buffer; Some when there is news.
    fn step(&mut self, rx: &mut Rx) -> Result<Option<Progress>> {
        loop {
            let Status::Complete(r, used) =
                record::parse_record(rx.pending())?
            else {
                return Ok(None);
            };
            let news = self.on_record(r.rtype, r.request_id, r.content)?;
            rx.consume(used);
            if news.is_some() {
                return Ok(news);
            }
        }
    }

    fn on_record(
        &mut self,
        rtype: RecordType,
        id: u16,
        content: &[u8],
    ) -> Result<Option<Progress>> {
        let active = self.pending.as_ref().map(|p| p.id);
        match rtype {
            RecordType::BeginRequest if id == NULL_REQUEST_ID => Err(Error::protocol(
                "BEGIN_REQUEST with request id 0 (reserved for management records)",
            )),
            RecordType::BeginRequest => {
                let begin = record::parse_begin_request(content)?;
                if let Some(active) = active {
                    if active != id {
                        self.end_request(id, ProtocolStatus::CantMpxConn)?;
                    }
                    return Ok(None);
                }
                if begin.role != Role::Responder {
                    log::warn!("refusing role {:?} of request {id}: only the responder role is served", begin.role);
                    self.end_request(id, ProtocolStatus::UnknownRole)?;
                    if begin.keep_conn {
                        return Ok(None);
                    }
                    // The rest of the refused request may still come.
                    self.refused = true;
                    return Ok(Some(Progress::Done));
                }
                self.pending = Some(Pending {
                    id,
                    role: begin.role,
                    keep_conn: begin.keep_conn,
                    raw: spares::take(|s| &mut s.params),
                    parsed: 0,
                    index: spares::take(|s| &mut s.index),
                });
                Ok(None)
            }
            _ if id == NULL_REQUEST_ID => {
                self.on_management(rtype, content)?;
                Ok(None)
            }
            RecordType::Params if active == Some(id) => {
                let done = content.is_empty();
                self.add_params(content)?;
                if !done {
                    return Ok(None);
                }
                let p = self.pending.take().expect("active request");
                if p.parsed != p.raw.len() {
                    return Err(Error::protocol(format!(
                        "PARAMS stream ends inside a name-value pair ({} bytes left over)",
                        p.raw.len() - p.parsed
                    )));
                }
                let _ = p.role;
                Ok(Some(Progress::Request(RequestHead {
                    id: p.id,
                    keep_conn: p.keep_conn,
                    params: Params::from_parts(p.raw, p.index),
                })))
            }
            RecordType::Stdin if active == Some(id) => Err(Error::protocol(
                "STDIN record before the PARAMS stream ended",
            )),
            RecordType::AbortRequest if active == Some(id) => {
                let keep = self.pending.take().is_some_and(|p| p.keep_conn);
                self.end_request(id, ProtocolStatus::RequestComplete)?;
                if keep {
                    return Ok(None);
                }
                self.refused = true;
                Ok(Some(Progress::Done))
            }
            RecordType::Other(_)
            | RecordType::EndRequest
            | RecordType::Stdout
            | RecordType::Stderr
            | RecordType::GetValuesResult
            | RecordType::UnknownType => {
                self.send_unknown_type(rtype)?;
                Ok(None)
            }
            // Records of a request we are not serving: the spec (§3.3) says
            // to ignore them. This is where the rest of an unread body of a
            // finished request goes.
            _ => Ok(None),
        }
    }

    fn on_management(&self, rtype: RecordType, content: &[u8]) -> Result<()> {
        reply_management(&self.tx, rtype, content, self.capacity)
    }

    fn send_unknown_type(&self, rtype: RecordType) -> Result<()> {
        let mut out = Vec::with_capacity(16);
        record::push_unknown_type(&mut out, rtype.as_u8());
        self.tx
            .send(&out)
            .map_err(|e| Error::io("writing UNKNOWN_TYPE", e))
    }

    fn end_request(&self, id: u16, status: ProtocolStatus) -> Result<()> {
        let mut out = Vec::with_capacity(16);
        record::push_end_request(&mut out, id, 0, status);
        self.tx
            .send(&out)
            .map_err(|e| Error::io("writing END_REQUEST", e))
    }

    /// Appends PARAMS content and parses every pair now complete; checks
    /// each limit before the bytes or the pair are stored.
    fn add_params(&mut self, content: &[u8]) -> Result<()> {
        let limits = self.limits;
        let p = self.pending.as_mut().expect("active request");
        if p.raw.len() + content.len() > limits.params_bytes {
            return Err(Error::protocol(format!(
                "PARAMS stream longer than the limit of {} bytes",
                limits.params_bytes
            )));
        }
        p.raw.extend_from_slice(content);
        loop {
            let rest = &p.raw[p.parsed..];
            let Status::Complete((name_len, value_len), head) =
                parse_pair_head(rest)
            else {
                return Ok(());
            };
            if name_len as usize > limits.name_len
                || value_len as usize > limits.value_len
            {
                return Err(Error::protocol(format!(
                    "name-value pair with a {name_len}-byte name and a {value_len}-byte value (limits: {} and {})",
                    limits.name_len, limits.value_len
                )));
            }
            if p.index.len() >= limits.params_count {
                return Err(Error::protocol(format!(
                    "more than {} params",
                    limits.params_count
                )));
            }
            let used =
                head as u64 + u64::from(name_len) + u64::from(value_len);
            if (rest.len() as u64) < used {
                return Ok(());
            }
            // The pair is in `raw`: this neither overflows nor underflows.
            let used = used as usize;
            let Ok(end) = u32::try_from(p.parsed + used) else {
                // Only with limits raised past 4 GiB (offsets are u32).
                return Err(Error::protocol(
                    "PARAMS stream longer than 4 GiB",
                ));
            };
            let mid = end - value_len;
            p.index.push((mid - name_len, mid, end));
            p.parsed += used;
        }
    }

    /// Runs the handler-facing part of a request: builds the body reader
    /// and the response writer over this connection, calls `serve`, and
    /// ends the request with exactly one END_REQUEST. Returns true if and
    /// only if the connection may serve another request.
    pub fn run(
        &mut self,
        head: RequestHead,
        serve: impl FnOnce(&mut crate::api::Request, &mut Response) -> u32,
    ) -> bool {
        let aborted = Arc::new(AtomicBool::new(false));
        let sh = Arc::new(BodyShared {
            rx: Arc::clone(&self.rx),
            wire: Arc::clone(&self.wire),
            tx: Arc::clone(&self.tx),
            id: head.id,
            capacity: self.capacity,
            done: AtomicBool::new(false),
            aborted: Arc::clone(&aborted),
            stderr_used: AtomicBool::new(false),
        });
        let body = FcgiBody {
            sh: Arc::clone(&sh),
            window: None,
        };
        let mut req = crate::api::Request::new(
            head.params,
            Role::Responder,
            crate::api::Transport::FastCgi,
            Body::from_source(Box::new(body)),
        );
        let mut resp = Response::with_buffer(
            Box::new(FcgiOut {
                sh: Arc::clone(&sh),
            }),
            Arc::clone(&aborted),
            spares::take(|s| &mut s.stdout),
        );
        let app_status = serve(&mut req, &mut resp);
        let body_finished =
            req.body().is_finished() || self.body_end_buffered(head.id);
        let tail = resp.take_buffered();
        let mut out = spares::take(|s| &mut s.records);
        out.reserve(tail.len() + 48);
        let was_aborted = aborted.load(Ordering::Relaxed);
        if !was_aborted {
            record::push_stream(&mut out, RecordType::Stdout, head.id, &tail);
            record::push_end_of_stream(&mut out, RecordType::Stdout, head.id);
            if sh.stderr_used.load(Ordering::Relaxed) {
                record::push_end_of_stream(
                    &mut out,
                    RecordType::Stderr,
                    head.id,
                );
            }
        }
        record::push_end_request(
            &mut out,
            head.id,
            app_status,
            ProtocolStatus::RequestComplete,
        );
        let sent = self.tx.send(&out);
        let (raw, index) = req.take_params().into_parts();
        spares::give(raw, |s| &mut s.params);
        spares::give(index, |s| &mut s.index);
        spares::give(tail, |s| &mut s.stdout);
        spares::give(out, |s| &mut s.records);
        if let Err(e) = sent {
            // Some servers read the END_REQUEST header and close at once
            // (DESIGN §11): a failure here is routine, not an alarm.
            log::debug!(
                "request {}: sending the end of the response: {e}",
                head.id
            );
            return false;
        }
        // After ABORT_REQUEST a kept connection serves on; after a hang-up
        // there is nothing left to serve.
        if was_aborted && (!head.keep_conn || lock(&self.rx).eof) {
            return false;
        }
        if !head.keep_conn {
            if !body_finished {
                self.linger();
            }
            return false;
        }
        true
    }

    /// True if and only if the rest of request `id`'s body is already in
    /// the receive buffer (the usual case for a handler that ignores an
    /// empty body), so closing needs no lingering.
    fn body_end_buffered(&self, id: u16) -> bool {
        let rx = lock(&self.rx);
        let mut rest = rx.pending();
        while let Ok(Status::Complete(r, used)) = record::parse_record(rest) {
            if r.rtype == RecordType::Stdin
                && r.request_id == id
                && r.content.is_empty()
            {
                return true;
            }
            rest = &rest[used..];
        }
        false
    }

    /// Before closing with unread request bytes, stops sending and reads
    /// until the peer closes, so the kernel does not answer those bytes
    /// with a reset that could destroy the response in flight.
    fn linger(&self) {
        linger(&*self.wire, &mut lock(&self.rx));
    }
}

/// Stops sending and reads until the peer closes (at most
/// [`LINGER_BYTES`] for at most [`LINGER_TIME`]: a worker is held
/// meanwhile).
fn linger(wire: &dyn Wire, rx: &mut Rx) {
    wire.shutdown_write();
    let deadline = Instant::now() + LINGER_TIME;
    let mut discarded = 0usize;
    while discarded < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.clear();
        if left.is_zero()
            || !matches!(rx.fill(wire, Some(left)), Ok(true))
            || rx.eof
        {
            return;
        }
        discarded += rx.pending().len();
    }
}

/// Most unread body bytes read and dropped before a close.
const LINGER_BYTES: usize = 16 << 20;
/// Longest wait for the peer to close before we close anyway.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Answers a management record (request id 0): GET_VALUES gets the values
/// asked for that we know, anything else UNKNOWN_TYPE (spec §4).
fn reply_management(
    tx: &Tx,
    rtype: RecordType,
    content: &[u8],
    cap: Capacity,
) -> Result<()> {
    let mut out = Vec::new();
    if rtype == RecordType::GetValues {
        let mut body = Vec::new();
        for pair in params::Pairs::new(content) {
            let (name, _) = pair?;
            let value = match name {
                b"FCGI_MAX_CONNS" => cap.max_conns.to_string(),
                b"FCGI_MAX_REQS" => cap.max_reqs.to_string(),
                b"FCGI_MPXS_CONNS" => "0".to_string(),
                _ => continue,
            };
            params::push_pair(&mut body, name, value.as_bytes());
        }
        record::push_record(
            &mut out,
            RecordType::GetValuesResult,
            NULL_REQUEST_ID,
            &body,
        );
    } else {
        record::push_unknown_type(&mut out, rtype.as_u8());
    }
    tx.send(&out)
        .map_err(|e| Error::io("writing a management reply", e))
}

/// What a request's body reader and its abort watch share.
struct BodyShared {
    rx: Arc<Mutex<Rx>>,
    wire: Arc<dyn Wire>,
    tx: Arc<Tx>,
    id: u16,
    capacity: Capacity,
    done: AtomicBool,
    aborted: Arc<AtomicBool>,
    /// Some STDERR was sent (so the stream must be ended).
    stderr_used: AtomicBool,
}

impl BodyShared {
    fn abort(&self, why: &str) -> io::Error {
        self.aborted.store(true, Ordering::Relaxed);
        io::Error::new(io::ErrorKind::ConnectionAborted, why.to_string())
    }

    /// Handles a record that is neither our STDIN nor our ABORT_REQUEST,
    /// met while a request runs: another BEGIN_REQUEST is refused (we do
    /// not multiplex), management records are answered, the rest ignored.
    fn stray(
        &self,
        rtype: RecordType,
        id: u16,
        content: &[u8],
    ) -> io::Result<()> {
        if rtype == RecordType::BeginRequest
            && id != self.id
            && id != NULL_REQUEST_ID
        {
            let mut out = Vec::new();
            record::push_end_request(
                &mut out,
                id,
                0,
                ProtocolStatus::CantMpxConn,
            );
            return self.tx.send(&out);
        }
        if id == NULL_REQUEST_ID {
            return reply_management(&self.tx, rtype, content, self.capacity)
                .map_err(io::Error::from);
        }
        Ok(())
    }

    /// See [`crate::api::AbortWatch::poll`].
    fn poll_abort(&self) -> bool {
        if self.aborted.load(Ordering::Relaxed) {
            return true;
        }
        // The body reader holds the lock while it waits for bytes; then it
        // sees an abort or a hang-up itself.
        let mut rx = match self.rx.try_lock() {
            Ok(rx) => rx,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        let hung_up = match rx.fill_now(&*self.wire) {
            Err(_) => true,
            Ok(false) => rx.end == rx.buf.len() && self.wire.hung_up(),
            Ok(true) => false,
        };
        if hung_up || self.scan(&mut rx) || rx.eof {
            self.aborted.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Looks through buffered records for an ABORT_REQUEST of ours. Once
    /// the body is in, records are consumed (and strays answered); before
    /// that they are only looked at, and left for the body reader.
    fn scan(&self, rx: &mut Rx) -> bool {
        let consume = self.done.load(Ordering::Relaxed);
        let mut at = 0;
        while let Ok(Status::Complete(r, used)) =
            record::parse_record(&rx.pending()[at..])
        {
            if r.rtype == RecordType::AbortRequest && r.request_id == self.id {
                return true;
            }
            if consume
                && r.rtype == RecordType::BeginRequest
                && r.request_id == self.id
            {
                // The next request on this connection, sent before this
                // one ended (reusing the id, as web servers do): it and
                // what follows wait for this one to end.
                break;
            }
            if consume {
                if self.stray(r.rtype, r.request_id, r.content).is_err() {
                    return true;
                }
                rx.consume(used);
            } else {
                at += used;
            }
        }
        false
    }
}

/// The request body as the handler reads it: STDIN records of our
/// request; other records met on the way are answered or ignored.
struct FcgiBody {
    sh: Arc<BodyShared>,
    /// Unread part of the current STDIN record's content: the content was
    /// copied out of the receive buffer so the record could be consumed.
    window: Option<(Vec<u8>, usize)>,
}

impl FcgiBody {
    /// Fills the window with the next STDIN content; false at the end.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let sh = &*self.sh;
        let mut rx = lock(&sh.rx);
        loop {
            let parsed =
                record::parse_record(rx.pending()).map_err(io::Error::from)?;
            let Status::Complete(r, used) = parsed else {
                if rx.eof {
                    return Err(sh.abort("the web server closed the connection during the request body"));
                }
                rx.fill_wait(&*sh.wire)?;
                continue;
            };
            match r.rtype {
                RecordType::Stdin if r.request_id == sh.id => {
                    let content = r.content.to_vec();
                    rx.consume(used);
                    if content.is_empty() {
                        sh.done.store(true, Ordering::Relaxed);
                        return Ok(false);
                    }
                    self.window = Some((content, 0));
                    return Ok(true);
                }
                RecordType::AbortRequest if r.request_id == sh.id => {
                    rx.consume(used);
                    return Err(sh.abort("the web server aborted the request"));
                }
                rtype => {
                    sh.stray(rtype, r.request_id, r.content)?;
                    rx.consume(used);
                }
            }
        }
    }
}

impl io::Read for FcgiBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some((data, pos)) = &mut self.window {
                let n = (data.len() - *pos).min(buf.len());
                buf[..n].copy_from_slice(&data[*pos..*pos + n]);
                *pos += n;
                if *pos == data.len() {
                    self.window = None;
                }
                return Ok(n);
            }
            if self.sh.done.load(Ordering::Relaxed) {
                return Ok(0);
            }
            if self.sh.aborted.load(Ordering::Relaxed) {
                return Err(self.sh.abort("the request was aborted"));
            }
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
    }
}

impl BodySource for FcgiBody {
    fn finished(&self) -> bool {
        self.sh.done.load(Ordering::Relaxed)
    }

    fn abort_watch(&self) -> AbortWatch {
        let sh = Arc::clone(&self.sh);
        AbortWatch::new(Arc::new(move || sh.poll_abort()))
    }
}

/// Response output as STDOUT and STDERR records of one request.
struct FcgiOut {
    sh: Arc<BodyShared>,
}

impl Output for FcgiOut {
    fn stdout(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(data.len() + 16);
        record::push_stream(&mut out, RecordType::Stdout, self.sh.id, data);
        self.sh.tx.send(&out)
    }

    fn stderr(&self) -> StderrHandle {
        let sh = Arc::clone(&self.sh);
        StderrHandle::new(Arc::new(move |data: &[u8]| {
            sh.stderr_used.store(true, Ordering::Relaxed);
            let mut out = Vec::with_capacity(data.len() + 16);
            record::push_stream(&mut out, RecordType::Stderr, sh.id, data);
            sh.tx.send(&out)
        }))
    }
}
