//! fcgi-loadgen: a closed-loop FastCGI load generator over a unix socket.
//!
//! Each of `--conns` threads sends one request at a time and waits for the
//! whole response before sending the next. With `--keep-conn` a thread keeps
//! one connection open and sets FCGI_KEEP_CONN; without it, every request
//! gets a fresh connection (flags 0) that is closed after FCGI_END_REQUEST.
//!
//! Every response is validated: the FCGI_STDOUT stream must equal the bytes
//! of the built-in `hello` handler and be terminated by an empty record, no
//! FCGI_STDERR may appear, and FCGI_END_REQUEST must carry appStatus 0 and
//! protocolStatus FCGI_REQUEST_COMPLETE for the request id that was sent.
//!
//! The run is bounded in time (`--seconds`) and in count
//! (`--requests-per-conn`). Failures (refused connections, bad responses,
//! read timeouts, ...) are counted, never fatal; a thread whose connection is
//! never served ends with a served count of 0 instead of hanging the run.
//!
//! Only the standard library is used.

use std::env;
use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// What the `hello` handler writes to FCGI_STDOUT for every request.
const EXPECTED_STDOUT: &[u8] =
    b"Content-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";

/// The request id used for every request (what nginx uses on a fresh
/// connection, and what the "limit" server's canned reply carries).
const REQUEST_ID: u16 = 1;

const FCGI_VERSION_1: u8 = 1;
const FCGI_BEGIN_REQUEST: u8 = 1;
const FCGI_END_REQUEST: u8 = 3;
const FCGI_PARAMS: u8 = 4;
const FCGI_STDIN: u8 = 5;
const FCGI_STDOUT: u8 = 6;
const FCGI_STDERR: u8 = 7;
const FCGI_RESPONDER: u16 = 1;
const FCGI_KEEP_CONN: u8 = 1;
const FCGI_REQUEST_COMPLETE: u8 = 0;

/// Pause after a failed connect so a dead server does not turn the run into
/// a busy loop of refused connections.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(5);

/// How long past the end of the run `main` waits for threads before it
/// reports without them (a thread stuck in `connect` cannot be interrupted).
const JOIN_GRACE: Duration = Duration::from_secs(2);

const USAGE: &str = "\
usage: fcgi-loadgen --socket PATH [options]

  --socket PATH            unix socket of the FastCGI server (required)
  --conns N                concurrent connection threads (default 1)
  --seconds S              length of the run, fractional allowed (default 3)
  --keep-conn              one connection per thread, FCGI_KEEP_CONN set;
                           otherwise a new connection for every request
  --requests-per-conn N    stop a thread after N served requests
                           (default 100000000)
  --timeout-ms MS          read/write timeout for one request (default 1000)
  --wait S                 before starting, retry connecting for up to S
                           seconds until the socket accepts (default 0: no probe)
  --quiet                  print only the RESULT line
  --help                   this text

The last line printed is machine-readable:
  RESULT rps=.. requests=.. errors=.. min=.. mean=.. max=.. served_all=0|1 ...
served_all is 1 when the least-served connection thread served at least half
the mean.";

#[derive(Clone, Debug)]
struct Config {
    socket: PathBuf,
    conns: usize,
    seconds: f64,
    keep_conn: bool,
    requests_per_conn: u64,
    timeout: Duration,
    wait: f64,
    quiet: bool,
}

fn die_usage(msg: &str) -> ! {
    eprintln!("fcgi-loadgen: {msg}\n\n{USAGE}");
    process::exit(2);
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| die_usage(&format!("bad value for {flag}: {v:?}")))
}

fn parse_args() -> Config {
    let mut cfg = Config {
        socket: PathBuf::new(),
        conns: 1,
        seconds: 3.0,
        keep_conn: false,
        requests_per_conn: 100_000_000,
        timeout: Duration::from_millis(1000),
        wait: 0.0,
        quiet: false,
    };
    let mut have_socket = false;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => {
                (f.to_string(), Some(v.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| -> String {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| die_usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--socket" => {
                cfg.socket = PathBuf::from(value("--socket"));
                have_socket = true;
            }
            "--conns" => cfg.conns = parse_num("--conns", &value("--conns")),
            "--seconds" => {
                cfg.seconds = parse_num("--seconds", &value("--seconds"))
            }
            "--keep-conn" => cfg.keep_conn = true,
            "--requests-per-conn" => {
                cfg.requests_per_conn = parse_num(
                    "--requests-per-conn",
                    &value("--requests-per-conn"),
                )
            }
            "--timeout-ms" => {
                let ms: u64 =
                    parse_num("--timeout-ms", &value("--timeout-ms"));
                cfg.timeout = Duration::from_millis(ms);
            }
            "--wait" => cfg.wait = parse_num("--wait", &value("--wait")),
            "--quiet" => cfg.quiet = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => die_usage(&format!("unknown argument {other:?}")),
        }
    }
    if !have_socket {
        die_usage("--socket is required");
    }
    if cfg.conns == 0 || cfg.conns > 10_000 {
        die_usage("--conns must be between 1 and 10000");
    }
    if !(cfg.seconds > 0.0 && cfg.seconds <= 3600.0) {
        die_usage("--seconds must be in (0, 3600]");
    }
    if cfg.requests_per_conn == 0 {
        die_usage("--requests-per-conn must be at least 1");
    }
    if cfg.timeout.is_zero() || cfg.timeout > Duration::from_secs(600) {
        die_usage("--timeout-ms must be between 1 and 600000");
    }
    if !(cfg.wait >= 0.0 && cfg.wait <= 600.0) {
        die_usage("--wait must be in [0, 600]");
    }
    cfg
}

// ---------------------------------------------------------------------------
// Request encoding

/// Appends one record, padded to a multiple of 8 bytes as nginx does.
fn push_record(out: &mut Vec<u8>, rtype: u8, content: &[u8]) {
    assert!(content.len() <= 0xffff);
    let len = content.len();
    let padding = (8 - len % 8) % 8;
    out.extend_from_slice(&[
        FCGI_VERSION_1,
        rtype,
        (REQUEST_ID >> 8) as u8,
        REQUEST_ID as u8,
        (len >> 8) as u8,
        len as u8,
        padding as u8,
        0,
    ]);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
}

fn push_nv_len(out: &mut Vec<u8>, len: usize) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// The whole request as one byte string: BEGIN_REQUEST, one PARAMS record
/// with what nginx's stock fastcgi_params sends for `GET /hello?name=bench`,
/// the empty PARAMS record, and the empty STDIN record.
fn build_request(keep_conn: bool) -> Vec<u8> {
    const PARAMS: &[(&str, &str)] = &[
        ("QUERY_STRING", "name=bench"),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SCRIPT_NAME", "/hello"),
        ("REQUEST_URI", "/hello?name=bench"),
        ("DOCUMENT_URI", "/hello"),
        ("DOCUMENT_ROOT", "/var/www/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "nginx/1.24.0"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "51234"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("REDIRECT_STATUS", "200"),
        ("SCRIPT_FILENAME", "/var/www/html/hello"),
        ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", "fcgi-loadgen/0.1"),
        ("HTTP_ACCEPT", "*/*"),
    ];
    let mut out = Vec::with_capacity(1024);
    let flags = if keep_conn { FCGI_KEEP_CONN } else { 0 };
    let role = FCGI_RESPONDER.to_be_bytes();
    push_record(
        &mut out,
        FCGI_BEGIN_REQUEST,
        &[role[0], role[1], flags, 0, 0, 0, 0, 0],
    );
    let mut params = Vec::with_capacity(1024);
    for (name, value) in PARAMS {
        push_nv_len(&mut params, name.len());
        push_nv_len(&mut params, value.len());
        params.extend_from_slice(name.as_bytes());
        params.extend_from_slice(value.as_bytes());
    }
    push_record(&mut out, FCGI_PARAMS, &params);
    push_record(&mut out, FCGI_PARAMS, &[]);
    push_record(&mut out, FCGI_STDIN, &[]);
    out
}

// ---------------------------------------------------------------------------
// Failures

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Connect = 0,
    Write = 1,
    Read = 2,
    Timeout = 3,
    Eof = 4,
    BadResponse = 5,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::Connect, "connect"),
    (Kind::Write, "write"),
    (Kind::Read, "read"),
    (Kind::Timeout, "timeout"),
    (Kind::Eof, "eof"),
    (Kind::BadResponse, "bad-response"),
];

#[derive(Debug)]
enum Outcome {
    /// A valid response arrived.
    Served,
    /// The run ended while the request was still in flight (not an error).
    Cut,
    /// A counted failure.
    Failed(Kind, String),
}

fn failed(kind: Kind, msg: impl Into<String>) -> Outcome {
    Outcome::Failed(kind, msg.into())
}

// ---------------------------------------------------------------------------
// One request/response exchange

/// Sends `request` on `stream` and reads until FCGI_END_REQUEST, validating
/// everything on the way. `buf` is scratch space reused across requests.
/// An open connection and the read timeout currently set on it.
struct Conn {
    stream: UnixStream,
    read_timeout: Option<Duration>,
}

/// Buffers reused across requests, so a request costs no allocation.
struct Scratch {
    buf: Vec<u8>,
    chunk: Box<[u8]>,
    stdout: Vec<u8>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            buf: Vec::with_capacity(65536),
            chunk: vec![0u8; 16384].into_boxed_slice(),
            stdout: Vec::with_capacity(EXPECTED_STDOUT.len()),
        }
    }
}

/// Below this, a read timeout that would overshoot the wanted wait is left
/// alone (saves a setsockopt per request).
const TIMEOUT_SLACK: Duration = Duration::from_millis(10);

fn exchange(
    conn: &mut Conn,
    request: &[u8],
    scratch: &mut Scratch,
    started: Instant,
    timeout: Duration,
    deadline: Instant,
) -> Outcome {
    // The request is far smaller than a unix socket's buffer and only one is
    // ever outstanding, so this write cannot block for long.
    if let Err(e) = conn.stream.write_all(request) {
        return failed(Kind::Write, format!("write: {e}"));
    }

    let Scratch { buf, chunk, stdout } = scratch;
    buf.clear();
    stdout.clear();
    let mut stdout_closed = false;
    let mut pos = 0usize; // start of the first unparsed record in buf
    loop {
        // Parse every complete record we have.
        while buf.len() - pos >= 8 {
            let h = &buf[pos..pos + 8];
            let version = h[0];
            let rtype = h[1];
            let id = u16::from_be_bytes([h[2], h[3]]);
            let clen = u16::from_be_bytes([h[4], h[5]]) as usize;
            let plen = h[6] as usize;
            if buf.len() - pos < 8 + clen + plen {
                break;
            }
            if version != FCGI_VERSION_1 {
                return failed(
                    Kind::BadResponse,
                    format!("record version {version}"),
                );
            }
            if id != REQUEST_ID {
                return failed(
                    Kind::BadResponse,
                    format!("record type {rtype} for request id {id}, expected {REQUEST_ID}"),
                );
            }
            let content = &buf[pos + 8..pos + 8 + clen];
            pos += 8 + clen + plen;
            match rtype {
                FCGI_STDOUT => {
                    if stdout_closed {
                        return failed(
                            Kind::BadResponse,
                            "FCGI_STDOUT data after its end",
                        );
                    }
                    if clen == 0 {
                        stdout_closed = true;
                    } else {
                        stdout.extend_from_slice(content);
                        if stdout.len() > EXPECTED_STDOUT.len() {
                            return failed(
                                Kind::BadResponse,
                                "FCGI_STDOUT longer than expected",
                            );
                        }
                    }
                }
                FCGI_STDERR => {
                    if clen > 0 {
                        return failed(
                            Kind::BadResponse,
                            format!(
                                "unexpected FCGI_STDERR: {:?}",
                                String::from_utf8_lossy(
                                    &content[..clen.min(200)]
                                )
                            ),
                        );
                    }
                }
                FCGI_END_REQUEST => {
                    if clen < 8 {
                        return failed(
                            Kind::BadResponse,
                            "short FCGI_END_REQUEST body",
                        );
                    }
                    let app_status = u32::from_be_bytes([
                        content[0], content[1], content[2], content[3],
                    ]);
                    let protocol_status = content[4];
                    if protocol_status != FCGI_REQUEST_COMPLETE {
                        return failed(
                            Kind::BadResponse,
                            format!("protocolStatus {protocol_status}"),
                        );
                    }
                    if app_status != 0 {
                        return failed(
                            Kind::BadResponse,
                            format!("appStatus {app_status}"),
                        );
                    }
                    if stdout.as_slice() != EXPECTED_STDOUT {
                        return failed(
                            Kind::BadResponse,
                            format!(
                                "FCGI_STDOUT was {:?}",
                                String::from_utf8_lossy(
                                    &stdout[..stdout.len().min(200)]
                                )
                            ),
                        );
                    }
                    if !stdout_closed {
                        return failed(
                            Kind::BadResponse,
                            "FCGI_END_REQUEST before the empty FCGI_STDOUT record",
                        );
                    }
                    if pos != buf.len() {
                        return failed(
                            Kind::BadResponse,
                            format!(
                                "{} stray bytes after FCGI_END_REQUEST",
                                buf.len() - pos
                            ),
                        );
                    }
                    return Outcome::Served;
                }
                other => {
                    return failed(
                        Kind::BadResponse,
                        format!("unexpected record type {other}"),
                    );
                }
            }
        }

        // Need more bytes: wait no longer than the request's timeout and no
        // longer than the end of the run.
        let now = Instant::now();
        let timeout_at = started + timeout;
        let wait_until = timeout_at.min(deadline);
        if now >= wait_until {
            // Whichever came first decides: the request's own timeout is a
            // failure, the end of the run merely cuts the request short.
            if timeout_at <= deadline {
                return failed(
                    Kind::Timeout,
                    format!(
                        "no complete response within {} ms",
                        timeout.as_millis()
                    ),
                );
            }
            return Outcome::Cut;
        }
        // Only touch the socket's timeout when it is unset, would overshoot
        // the wanted wait by more than the slack, or ran out early.
        let wait = (wait_until - now).max(Duration::from_millis(1));
        let reset = match conn.read_timeout {
            None => true,
            Some(set) => {
                set > wait + TIMEOUT_SLACK || set + TIMEOUT_SLACK < wait
            }
        };
        if reset {
            if let Err(e) = conn.stream.set_read_timeout(Some(wait)) {
                return failed(Kind::Read, format!("set_read_timeout: {e}"));
            }
            conn.read_timeout = Some(wait);
        }
        match conn.stream.read(chunk) {
            Ok(0) => {
                return failed(
                    Kind::Eof,
                    format!(
                        "server closed the connection after {} response bytes",
                        buf.len()
                    ),
                )
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) =>
            {
                // Loop: the checks above decide between Cut and Timeout.
            }
            Err(e) => return failed(Kind::Read, format!("read: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// Latency histogram (log-linear, 8 sub-buckets per power of two, in ns)

const HIST_BUCKETS: usize = 512;

struct Hist {
    counts: Vec<u64>,
    max: u64,
}

impl Hist {
    fn new() -> Self {
        Hist {
            counts: vec![0; HIST_BUCKETS],
            max: 0,
        }
    }

    fn bucket(v: u64) -> usize {
        if v < 8 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - 3;
        let mantissa = (v >> shift) & 7;
        ((shift as u64 + 1) * 8 + mantissa) as usize
    }

    fn bucket_low(i: usize) -> u64 {
        if i < 8 {
            return i as u64;
        }
        let shift = i / 8 - 1;
        (8 + (i % 8) as u64) << shift
    }

    fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.max = self.max.max(ns);
    }

    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.max = self.max.max(other.max);
    }

    /// Lower edge of the bucket holding quantile `q`, in ns.
    fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bucket_low(i);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------
// Connection threads

/// Counters one thread publishes as it goes, so `main` can still report a
/// thread that is stuck (e.g. in a blocking connect) when the run ends.
struct Counters {
    served: AtomicU64,
    errors: [AtomicU64; 6],
    /// First message of each error kind, for diagnostics.
    first_errors: Mutex<Vec<(Kind, String)>>,
}

impl Counters {
    fn new() -> Self {
        Counters {
            served: AtomicU64::new(0),
            errors: Default::default(),
            first_errors: Mutex::new(Vec::new()),
        }
    }
}

struct ThreadReport {
    index: usize,
    hist: Hist,
}

fn connection_thread(
    index: usize,
    cfg: &Config,
    request: &[u8],
    counters: &Counters,
    start_gate: &Barrier,
    start: &OnceLock<Instant>,
) -> ThreadReport {
    let mut hist = Hist::new();
    let mut scratch = Scratch::new();
    let mut stream: Option<Conn> = None;
    let mut served = 0u64;

    start_gate.wait();
    let deadline = *start.get().expect("start time set before the gate opens")
        + Duration::from_secs_f64(cfg.seconds);

    while served < cfg.requests_per_conn {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        if stream.is_none() {
            match UnixStream::connect(&cfg.socket) {
                Ok(s) => {
                    stream = Some(Conn {
                        stream: s,
                        read_timeout: None,
                    })
                }
                Err(e) => {
                    note_error(
                        counters,
                        Kind::Connect,
                        format!("connect: {e}"),
                    );
                    thread::sleep(CONNECT_RETRY_PAUSE);
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        let outcome =
            exchange(s, request, &mut scratch, t0, cfg.timeout, deadline);
        match outcome {
            Outcome::Served => {
                let done = Instant::now();
                if done > deadline {
                    break; // finished after the end of the run: not counted
                }
                served += 1;
                counters.served.store(served, Ordering::Relaxed);
                hist.record(
                    (done - t0).as_nanos().min(u64::MAX as u128) as u64
                );
                if !cfg.keep_conn {
                    stream = None; // closes the connection
                }
            }
            Outcome::Cut => break,
            Outcome::Failed(kind, msg) => {
                note_error(counters, kind, msg);
                stream = None; // the connection's state is unknown: start over
            }
        }
    }
    drop(stream);
    ThreadReport { index, hist }
}

fn note_error(counters: &Counters, kind: Kind, msg: String) {
    counters.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    let mut first = counters
        .first_errors
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !first.iter().any(|(k, _)| *k == kind) {
        first.push((kind, msg));
    }
}

// ---------------------------------------------------------------------------

/// Retries connecting until the socket accepts or `secs` pass.
fn wait_for_socket(cfg: &Config) -> io::Result<()> {
    let until = Instant::now() + Duration::from_secs_f64(cfg.wait);
    loop {
        match UnixStream::connect(&cfg.socket) {
            Ok(s) => {
                drop(s);
                return Ok(());
            }
            Err(e) => {
                if Instant::now() >= until {
                    return Err(e);
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn main() {
    let cfg = parse_args();
    if cfg.wait > 0.0 {
        if let Err(e) = wait_for_socket(&cfg) {
            eprintln!(
                "fcgi-loadgen: {} does not accept connections after {} s: {e}",
                cfg.socket.display(),
                cfg.wait
            );
            process::exit(1);
        }
    }

    let request: Arc<Vec<u8>> = Arc::new(build_request(cfg.keep_conn));
    let cfg = Arc::new(cfg);
    let counters: Arc<Vec<Counters>> =
        Arc::new((0..cfg.conns).map(|_| Counters::new()).collect());
    let start_gate = Arc::new(Barrier::new(cfg.conns + 1));
    let start: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let (tx, rx) = mpsc::channel::<ThreadReport>();

    for index in 0..cfg.conns {
        let cfg = Arc::clone(&cfg);
        let request = Arc::clone(&request);
        let counters = Arc::clone(&counters);
        let start_gate = Arc::clone(&start_gate);
        let start = Arc::clone(&start);
        let tx = tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("conn-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let report = connection_thread(
                    index,
                    &cfg,
                    &request,
                    &counters[index],
                    &start_gate,
                    &start,
                );
                let _ = tx.send(report);
            });
        if let Err(e) = spawned {
            eprintln!("fcgi-loadgen: cannot start thread {index}: {e}");
            process::exit(1);
        }
    }
    drop(tx);

    // Every thread is parked at the gate (or about to be): start the clock.
    let t_start = Instant::now();
    start.set(t_start).expect("start time set once");
    start_gate.wait();
    let deadline = t_start + Duration::from_secs_f64(cfg.seconds);

    // Collect reports; give up on threads that are stuck past the grace time.
    let give_up = deadline + cfg.timeout + JOIN_GRACE;
    let mut reports: Vec<Option<ThreadReport>> =
        (0..cfg.conns).map(|_| None).collect();
    let mut received = 0;
    while received < cfg.conns {
        let now = Instant::now();
        if now >= give_up {
            break;
        }
        match rx.recv_timeout(give_up - now) {
            Ok(r) => {
                let i = r.index;
                reports[i] = Some(r);
                received += 1;
            }
            Err(_) => break,
        }
    }
    let hung = cfg.conns - received;

    // Aggregate.
    let elapsed = cfg.seconds;
    let served: Vec<u64> = counters
        .iter()
        .map(|c| c.served.load(Ordering::Relaxed))
        .collect();
    let mut errors_by_kind = [0u64; 6];
    for c in counters.iter() {
        for (k, e) in c.errors.iter().enumerate() {
            errors_by_kind[k] += e.load(Ordering::Relaxed);
        }
    }
    let errors: u64 = errors_by_kind.iter().sum::<u64>() + hung as u64;
    let total: u64 = served.iter().sum();
    let min = *served.iter().min().unwrap_or(&0);
    let max = *served.iter().max().unwrap_or(&0);
    let mean = total as f64 / cfg.conns as f64;
    let served_all = total > 0 && (min as f64) >= mean / 2.0;
    let never_served = served.iter().filter(|&&s| s == 0).count();
    let rps = total as f64 / elapsed;

    let mut hist = Hist::new();
    let mut first_errors: Vec<(Kind, String)> = Vec::new();
    for r in reports.iter().flatten() {
        hist.merge(&r.hist);
    }
    for c in counters.iter() {
        let first = c
            .first_errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (k, m) in first.iter() {
            if !first_errors.iter().any(|(k2, _)| k2 == k) {
                first_errors.push((*k, m.clone()));
            }
        }
    }
    let p50_us = hist.quantile(0.50) as f64 / 1000.0;
    let p99_us = hist.quantile(0.99) as f64 / 1000.0;
    let max_us = hist.max as f64 / 1000.0;

    if !cfg.quiet {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "fcgi-loadgen: {}  conns={}  {}  {:.2} s",
            cfg.socket.display(),
            cfg.conns,
            if cfg.keep_conn {
                "keep-conn"
            } else {
                "new connection per request"
            },
            cfg.seconds
        );
        let _ = writeln!(out, "  requests   {total}  ({rps:.1}/s)");
        let mut detail = String::new();
        for (kind, name) in KINDS {
            let n = errors_by_kind[kind as usize];
            if n > 0 {
                let _ = write!(
                    detail,
                    "{}{name} {n}",
                    if detail.is_empty() { "" } else { ", " }
                );
            }
        }
        if hung > 0 {
            let _ = write!(
                detail,
                "{}threads stuck at the end {hung}",
                if detail.is_empty() { "" } else { ", " }
            );
        }
        if errors == 0 {
            let _ = writeln!(out, "  errors     0");
        } else {
            let _ = writeln!(out, "  errors     {errors}  ({detail})");
        }
        for (kind, msg) in &first_errors {
            let name = KINDS
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, n)| *n)
                .unwrap_or("?");
            let _ = writeln!(out, "    first {name} error: {msg}");
        }
        let _ = writeln!(
            out,
            "  latency    p50 {p50_us:.1} us  p99 {p99_us:.1} us  max {max_us:.1} us"
        );
        let _ = writeln!(
            out,
            "  per conn   min {min}  mean {mean:.1}  max {max}  -> every connection served: {}{}",
            if served_all { "yes" } else { "NO" },
            if never_served > 0 {
                format!(" ({never_served} of {} never served)", cfg.conns)
            } else {
                String::new()
            }
        );
        print!("{out}");
    }
    println!(
        "RESULT rps={rps:.1} requests={total} errors={errors} min={min} mean={mean:.1} max={max} \
         served_all={} never_served={never_served} conns={} keep_conn={} seconds={:.3} \
         p50_us={p50_us:.1} p99_us={p99_us:.1} max_us={max_us:.1}",
        served_all as u8,
        cfg.conns,
        cfg.keep_conn as u8,
        cfg.seconds,
    );
    let _ = io::stdout().flush();
    // Threads stuck in a blocking call must not keep the process alive.
    process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_well_formed() {
        for keep in [false, true] {
            let r = build_request(keep);
            assert_eq!(r.len() % 8, 0);
            assert_eq!(&r[..8], &[1, FCGI_BEGIN_REQUEST, 0, 1, 0, 8, 0, 0]);
            assert_eq!(r[8..10], [0, 1]);
            assert_eq!(r[10], if keep { 1 } else { 0 });
            // Ends with empty PARAMS then empty STDIN.
            let n = r.len();
            assert_eq!(&r[n - 16..n - 8], &[1, FCGI_PARAMS, 0, 1, 0, 0, 0, 0]);
            assert_eq!(&r[n - 8..], &[1, FCGI_STDIN, 0, 1, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn histogram_buckets_are_monotonic() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            100,
            1000,
            123_456,
            u64::MAX / 2,
        ] {
            let b = Hist::bucket(v);
            assert!(b >= last);
            assert!(Hist::bucket_low(b) <= v);
            last = b;
        }
        assert!(Hist::bucket(u64::MAX) < HIST_BUCKETS);
    }
}
