//! Test harness: temporary directories, a guard for the `fcgi-launch`
//! child process, and a FastCGI client written from the FastCGI 1.0
//! specification (independently of the crate's own codec, so that the
//! server is never checked against itself).
//!
//! Everything that can block has a hard time limit, so that a broken
//! server makes a test fail instead of hang.  Failures carry a dump of
//! the server (command line, exit status, stdout and stderr).

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to start accepting connections.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time limit for one blocking read or write on a client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Default time limit for a process to exit after being asked to.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fcgi-launch"))
}

// ---------------------------------------------------------------------
// Temporary directory
// ---------------------------------------------------------------------

/// A fresh, uniquely named directory, removed with its contents on drop.
///
/// Names are short (`/tmp/fl<pid>-<n>`) so that unix socket paths inside
/// stay well below the `sun_path` limit.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let mut base = std::env::temp_dir();
        // Leave room for "/<name>/<socket name>" under 100 bytes.
        if base.as_os_str().len() > 60 {
            base = PathBuf::from("/tmp");
        }
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("fl{}-{}", std::process::id(), n));
            match fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------
// Addresses and client streams
// ---------------------------------------------------------------------

/// Where a server listens.
#[derive(Clone, Debug)]
pub enum Addr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// A connected client socket of either family.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub fn connect(addr: &Addr) -> io::Result<Stream> {
        let s = match addr {
            Addr::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
            Addr::Tcp(a) => Stream::Tcp(TcpStream::connect_timeout(
                a,
                Duration::from_secs(10),
            )?),
        };
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    }

    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(d),
            Stream::Tcp(s) => s.set_read_timeout(d),
        }
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(d),
            Stream::Tcp(s) => s.set_write_timeout(d),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tcp(s) => s.set_nonblocking(on),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    /// The client's own address as the server would see it as its peer
    /// (`127.0.0.1:PORT` for TCP; unix client sockets are unnamed).
    pub fn local_addr_string(&self) -> String {
        match self {
            Stream::Unix(s) => match s.local_addr() {
                Ok(a) => format!("{a:?}"),
                Err(e) => format!("<{e}>"),
            },
            Stream::Tcp(s) => match s.local_addr() {
                Ok(a) => a.to_string(),
                Err(e) => format!("<{e}>"),
            },
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// Whether an I/O error is a socket timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Whether an I/O error means the peer closed or reset the connection.
pub fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

// ---------------------------------------------------------------------
// Server process guard
// ---------------------------------------------------------------------

/// What the client side knows about a server, shared with connections
/// so that their failures can include the dump.
pub struct ServerInfo {
    cmdline: String,
    pid: u32,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
}

impl ServerInfo {
    /// Exit status if the process has exited (reaping it if needed).
    pub fn try_status(&self) -> Option<ExitStatus> {
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if st.is_none() {
            let mut child =
                self.child.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(Some(s)) = child.try_wait() {
                *st = Some(s);
            }
        }
        *st
    }

    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Command line, status, stdout and stderr, for failure messages.
    pub fn dump(&self) -> String {
        let status = match self.try_status() {
            None => "still running".to_string(),
            Some(s) => describe_status(s),
        };
        format!(
            "\n===== server =====\ncommand: {}\npid: {}\nstatus: {}\n\
             ----- stdout -----\n{}\n----- stderr -----\n{}\n\
             ===== end of server dump =====",
            self.cmdline,
            self.pid,
            status,
            tail(&self.stdout(), 20_000),
            tail(&self.stderr(), 20_000),
        )
    }
}

fn read_lossy(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", p.display()),
    }
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {} bytes cut ...]{}", start, &s[start..])
}

/// "exit status 0", "killed by signal 9", ...
pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s:?}"),
    }
}

/// A running `fcgi-launch`.  On drop it is killed with SIGKILL (and so
/// is anything left in its process group) and reaped; then its
/// temporary directory is removed.
pub struct Server {
    info: Arc<ServerInfo>,
    addr: Option<Addr>,
    // Dropped after the process is killed (fields drop after `drop`).
    dir: TempDir,
}

impl Server {
    /// Start the binary in `dir` (its working directory), with stdin
    /// from /dev/null and stdout/stderr captured to files in `dir`;
    /// `configure` adds arguments, environment, or another stdin.
    /// Does not wait for anything.
    pub fn start(
        dir: TempDir,
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        Server::spawn(dir, &bin(), configure)
    }

    /// Like [`Server::start`], for any `program` (a web server, a peer):
    /// the same logs, dumps and kill-on-drop of its process group.
    pub fn spawn(
        dir: TempDir,
        program: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let stdout_path = dir.join("stdout.log");
        let stderr_path = dir.join("stderr.log");
        let out = File::create(&stdout_path).expect("create stdout.log");
        let err = File::create(&stderr_path).expect("create stderr.log");
        let mut cmd = Command::new(program);
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        configure(&mut cmd);
        let cmdline = describe_command(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
        Server {
            info: Arc::new(ServerInfo {
                cmdline,
                pid: child.id(),
                stdout_path,
                stderr_path,
                child: Mutex::new(child),
                status: Mutex::new(None),
            }),
            addr: None,
            dir,
        }
    }

    /// FastCGI server on a unix socket `<tmp>/s`, with `args` after
    /// `--bind unix:<path>`; returns once it accepts connections.
    pub fn unix(args: &[&str]) -> Server {
        let dir = TempDir::new();
        let sock = dir.join("s");
        let bind = format!("unix:{}", sock.display());
        let mut srv = Server::start(dir, |c| {
            c.arg("--bind").arg(&bind).args(args);
        });
        srv.addr = Some(Addr::Unix(sock));
        if let Err(e) = srv.wait_ready(STARTUP_TIMEOUT) {
            srv.fail(&e);
        }
        srv
    }

    /// FastCGI server on `tcp:127.0.0.1:PORT` (a free port), with `args`
    /// after `--bind`; returns once it accepts connections.  Retries with
    /// another port if the server exits at startup (port taken).
    pub fn tcp(args: &[&str]) -> Server {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let addr: SocketAddr =
                format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let bind = format!("tcp:{addr}");
            let mut srv = Server::start(TempDir::new(), |c| {
                c.arg("--bind").arg(&bind).args(args);
            });
            srv.addr = Some(Addr::Tcp(addr));
            match srv.wait_ready(STARTUP_TIMEOUT) {
                Ok(()) => return srv,
                Err(_) if attempt < 4 && srv.try_status().is_some() => {
                    continue
                }
                Err(e) => srv.fail(&e),
            }
        }
    }

    /// Wait until a connection to the server's address succeeds.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let addr = self.addr.clone().expect("server has no address");
        let deadline = Instant::now() + timeout;
        let mut last_err = String::from("none");
        loop {
            if let Some(s) = self.try_status() {
                return Err(format!(
                    "server {} before accepting on {addr} (last connect \
                     error: {last_err})",
                    describe_status(s)
                ));
            }
            match Stream::connect(&addr) {
                Ok(_) => return Ok(()),
                Err(e) => last_err = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "server not accepting on {addr} after {timeout:?} \
                     (last connect error: {last_err})"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn info(&self) -> &Arc<ServerInfo> {
        &self.info
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn addr(&self) -> &Addr {
        self.addr.as_ref().expect("server has no address")
    }

    /// The unix socket path, if listening on one.
    pub fn socket_path(&self) -> &Path {
        match self.addr() {
            Addr::Unix(p) => p,
            a => panic!("not a unix socket: {a}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    pub fn stderr(&self) -> String {
        self.info.stderr()
    }

    pub fn stdout(&self) -> String {
        self.info.stdout()
    }

    pub fn dump(&self) -> String {
        self.info.dump()
    }

    /// Panic with `msg` and the server dump.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}{}", self.dump())
    }

    pub fn try_status(&self) -> Option<ExitStatus> {
        self.info.try_status()
    }

    /// Open a client connection (read/write time limits set).
    pub fn connect(&self) -> Conn {
        match Stream::connect(self.addr()) {
            Ok(s) => Conn::new(s, Some(self.info.clone())),
            Err(e) => self.fail(&format!("connect to {}: {e}", self.addr())),
        }
    }

    /// Send a signal by name ("TERM", "HUP", ...) with the `kill` binary.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| self.fail(&format!("cannot run kill: {e}")));
        if !st.success() {
            self.fail(&format!("kill -s {sig} {} failed: {st}", self.pid()));
        }
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like `wait_exit`, but fails the test on timeout.
    pub fn expect_exit(&self, timeout: Duration) -> ExitStatus {
        match self.wait_exit(timeout) {
            Some(s) => s,
            None => {
                self.fail(&format!("server did not exit within {timeout:?}"))
            }
        }
    }

    /// Fail the test if the server has exited.
    pub fn assert_running(&self) {
        if let Some(s) = self.try_status() {
            self.fail(&format!("server unexpectedly {}", describe_status(s)));
        }
    }

    /// Fail the test if stderr shows a Rust panic.
    pub fn assert_no_panic(&self) {
        if self.stderr().contains("panicked") {
            self.fail("server stderr shows a panic");
        }
    }

    /// Poll stderr until `pred` holds for it; false on timeout.
    pub fn wait_for_stderr(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stderr()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait for a stderr line containing every one of `needles`
    /// (case-sensitive); returns that line or fails the test.
    pub fn expect_log_line(
        &self,
        timeout: Duration,
        needles: &[&str],
    ) -> String {
        let find = |s: &str| {
            s.lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string)
        };
        if self.wait_for_stderr(timeout, |s| find(s).is_some()) {
            return find(&self.stderr()).unwrap();
        }
        self.fail(&format!(
            "no stderr line containing all of {needles:?} within {timeout:?}"
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut child =
            self.info.child.lock().unwrap_or_else(|e| e.into_inner());
        kill_group(&mut child);
    }
}

/// SIGKILL to a child we started (no-op if it exited) and to anything
/// left in its own process group (workers, programs); then reaps it.
pub fn kill_group(child: &mut Child) {
    let pid = child.id();
    let _ = child.kill();
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

fn describe_command(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => s.push_str(&format!(
                "{}={} ",
                k.to_string_lossy(),
                shell_quote(&v.to_string_lossy())
            )),
            None => s.push_str(&format!("-u {} ", k.to_string_lossy())),
        }
    }
    s.push_str(&shell_quote(&cmd.get_program().to_string_lossy()));
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(&a.to_string_lossy()));
    }
    s
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,[]".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Arguments as `OsString`s (for `Command::args` with mixed types).
pub fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

// ---------------------------------------------------------------------
// FastCGI 1.0 wire format
// ---------------------------------------------------------------------

/// FastCGI record encoding and decoding, from the FastCGI 1.0 spec.
pub mod fcgi {
    pub const HEADER_LEN: usize = 8;
    pub const VERSION_1: u8 = 1;
    pub const MAX_CONTENT: usize = 65535;

    // Record types.
    pub const BEGIN_REQUEST: u8 = 1;
    pub const ABORT_REQUEST: u8 = 2;
    pub const END_REQUEST: u8 = 3;
    pub const PARAMS: u8 = 4;
    pub const STDIN: u8 = 5;
    pub const STDOUT: u8 = 6;
    pub const STDERR: u8 = 7;
    pub const DATA: u8 = 8;
    pub const GET_VALUES: u8 = 9;
    pub const GET_VALUES_RESULT: u8 = 10;
    pub const UNKNOWN_TYPE: u8 = 11;

    // Roles.
    pub const RESPONDER: u16 = 1;
    pub const AUTHORIZER: u16 = 2;
    pub const FILTER: u16 = 3;

    // BEGIN_REQUEST flags.
    pub const KEEP_CONN: u8 = 1;

    // END_REQUEST protocol status.
    pub const REQUEST_COMPLETE: u8 = 0;
    pub const CANT_MPX_CONN: u8 = 1;
    pub const OVERLOADED: u8 = 2;
    pub const UNKNOWN_ROLE: u8 = 3;

    pub fn type_name(t: u8) -> String {
        let n = match t {
            BEGIN_REQUEST => "BEGIN_REQUEST",
            ABORT_REQUEST => "ABORT_REQUEST",
            END_REQUEST => "END_REQUEST",
            PARAMS => "PARAMS",
            STDIN => "STDIN",
            STDOUT => "STDOUT",
            STDERR => "STDERR",
            DATA => "DATA",
            GET_VALUES => "GET_VALUES",
            GET_VALUES_RESULT => "GET_VALUES_RESULT",
            UNKNOWN_TYPE => "UNKNOWN_TYPE",
            _ => return format!("type{t}"),
        };
        n.to_string()
    }

    /// How much padding the client puts after each record's content.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Padding {
        /// No padding.
        None,
        /// Pad content to a multiple of 8 bytes (the spec's advice).
        Align8,
        /// Always this many padding bytes.
        Fixed(u8),
    }

    impl Padding {
        pub fn for_len(self, content_len: usize) -> u8 {
            match self {
                Padding::None => 0,
                Padding::Align8 => ((8 - content_len % 8) % 8) as u8,
                Padding::Fixed(n) => n,
            }
        }
    }

    /// One decoded record.
    #[derive(Clone, PartialEq, Eq)]
    pub struct Record {
        pub version: u8,
        pub rtype: u8,
        pub request_id: u16,
        pub content: Vec<u8>,
        pub padding_len: u8,
    }

    impl std::fmt::Debug for Record {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "{}(id={}, {} bytes, pad {}{}",
                type_name(self.rtype),
                self.request_id,
                self.content.len(),
                self.padding_len,
                if self.version != VERSION_1 {
                    format!(", version {}", self.version)
                } else {
                    String::new()
                }
            )?;
            if !self.content.is_empty() {
                write!(f, ": {}", super::show(&self.content, 80))?;
            }
            write!(f, ")")
        }
    }

    /// The 8-byte record header, with any version (for bad-input tests).
    pub fn header(
        version: u8,
        rtype: u8,
        request_id: u16,
        content_len: u16,
        padding_len: u8,
    ) -> [u8; HEADER_LEN] {
        let id = request_id.to_be_bytes();
        let len = content_len.to_be_bytes();
        [version, rtype, id[0], id[1], len[0], len[1], padding_len, 0]
    }

    /// A complete version-1 record: header, content, padding (zeros).
    pub fn record(
        rtype: u8,
        request_id: u16,
        content: &[u8],
        padding_len: u8,
    ) -> Vec<u8> {
        assert!(content.len() <= MAX_CONTENT, "record content too long");
        let mut out = Vec::with_capacity(
            HEADER_LEN + content.len() + padding_len as usize,
        );
        out.extend_from_slice(&header(
            VERSION_1,
            rtype,
            request_id,
            content.len() as u16,
            padding_len,
        ));
        out.extend_from_slice(content);
        out.resize(out.len() + padding_len as usize, 0);
        out
    }

    /// FCGI_BeginRequestBody: role (2 bytes), flags, 5 reserved bytes.
    pub fn begin_body(role: u16, flags: u8) -> [u8; 8] {
        let r = role.to_be_bytes();
        [r[0], r[1], flags, 0, 0, 0, 0, 0]
    }

    pub fn begin_request(request_id: u16, role: u16, flags: u8) -> Vec<u8> {
        record(BEGIN_REQUEST, request_id, &begin_body(role, flags), 0)
    }

    pub fn abort_request(request_id: u16) -> Vec<u8> {
        record(ABORT_REQUEST, request_id, &[], 0)
    }

    /// Append a name-value length: 1 byte if < 128, else 4 bytes
    /// big-endian with the high bit set.
    pub fn push_nv_len(out: &mut Vec<u8>, len: usize) {
        if len < 128 {
            out.push(len as u8);
        } else {
            assert!(len <= 0x7fff_ffff, "name-value length too long");
            out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
        }
    }

    /// One encoded name-value pair.
    pub fn nv_pair(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(name.len() + value.len() + 8);
        push_nv_len(&mut out, name.len());
        push_nv_len(&mut out, value.len());
        out.extend_from_slice(name);
        out.extend_from_slice(value);
        out
    }

    /// Several name-value pairs, concatenated.
    pub fn nv_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: &[(N, V)],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in pairs {
            out.extend_from_slice(&nv_pair(n.as_ref(), v.as_ref()));
        }
        out
    }

    /// A decoded name-value pair.
    pub type Pair = (Vec<u8>, Vec<u8>);

    /// Decode a complete name-value pair stream.
    pub fn decode_nv(mut b: &[u8]) -> Result<Vec<Pair>, String> {
        fn len(b: &mut &[u8]) -> Result<usize, String> {
            let first = *b.first().ok_or("truncated length")?;
            if first & 0x80 == 0 {
                *b = &b[1..];
                Ok(first as usize)
            } else {
                if b.len() < 4 {
                    return Err("truncated 4-byte length".into());
                }
                let n =
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
                *b = &b[4..];
                Ok(n as usize)
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let nl = len(&mut b)?;
            let vl = len(&mut b)?;
            if b.len() < nl + vl {
                return Err(format!(
                    "pair needs {} bytes, {} left",
                    nl + vl,
                    b.len()
                ));
            }
            out.push((b[..nl].to_vec(), b[nl..nl + vl].to_vec()));
            b = &b[nl + vl..];
        }
        Ok(out)
    }

    /// A whole stream: `data` cut into records of at most `max_record`
    /// content bytes (capped at 65535), then the empty closing record.
    pub fn stream(
        rtype: u8,
        request_id: u16,
        data: &[u8],
        max_record: usize,
        padding: Padding,
    ) -> Vec<u8> {
        let max = max_record.clamp(1, MAX_CONTENT);
        let mut out =
            Vec::with_capacity(data.len() + data.len() / max * 16 + 16);
        for chunk in data.chunks(max) {
            out.extend_from_slice(&record(
                rtype,
                request_id,
                chunk,
                padding.for_len(chunk.len()),
            ));
        }
        out.extend_from_slice(&record(
            rtype,
            request_id,
            &[],
            padding.for_len(0),
        ));
        out
    }

    /// Split a byte buffer into complete records; also returns the
    /// number of trailing bytes that do not form a complete record.
    pub fn parse_records(mut b: &[u8]) -> (Vec<Record>, usize) {
        let mut out = Vec::new();
        while b.len() >= HEADER_LEN {
            let clen = u16::from_be_bytes([b[4], b[5]]) as usize;
            let plen = b[6] as usize;
            if b.len() < HEADER_LEN + clen + plen {
                break;
            }
            out.push(Record {
                version: b[0],
                rtype: b[1],
                request_id: u16::from_be_bytes([b[2], b[3]]),
                content: b[HEADER_LEN..HEADER_LEN + clen].to_vec(),
                padding_len: plen as u8,
            });
            b = &b[HEADER_LEN + clen + plen..];
        }
        (out, b.len())
    }
}

use fcgi::{Padding, Record};

// ---------------------------------------------------------------------
// FastCGI client connection
// ---------------------------------------------------------------------

/// What came back for one request.
#[derive(Debug)]
pub struct Response {
    pub request_id: u16,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub app_status: u32,
    pub protocol_status: u8,
    /// The stdout stream was closed by an empty STDOUT record.
    pub stdout_closed: bool,
    /// The stderr stream was closed by an empty STDERR record.
    pub stderr_closed: bool,
    /// Every record for this request, END_REQUEST last.
    pub records: Vec<Record>,
}

impl Response {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Headers and body of the CGI response in stdout.
    pub fn cgi(&self) -> CgiResponse {
        CgiResponse::parse(&self.stdout)
    }
}

/// A client connection to the server.
///
/// Blocking reads and writes have time limits (`IO_TIMEOUT`).  The
/// methods that do not start with `try_` fail the test (with the server
/// dump) on I/O errors.  The connection tracks which request ids are in
/// flight and fails on any record for an id that is not (e.g. output
/// after END_REQUEST).
pub struct Conn {
    stream: Stream,
    server: Option<Arc<ServerInfo>>,
    /// Padding added to every record this client sends.
    pub padding: Padding,
    /// Largest content length of the PARAMS and STDIN records it sends.
    pub max_record: usize,
    /// Whether `request` sets FCGI_KEEP_CONN.
    pub keep_conn: bool,
    /// Records read while waiting for something else (other ids).
    stash: VecDeque<Record>,
    /// Request ids begun and not yet ended.
    active: HashSet<u16>,
    /// Time limit of each blocking read.
    read_timeout: Duration,
}

impl Conn {
    pub fn new(stream: Stream, server: Option<Arc<ServerInfo>>) -> Conn {
        Conn {
            stream,
            server,
            padding: Padding::None,
            max_record: fcgi::MAX_CONTENT,
            keep_conn: true,
            stash: VecDeque::new(),
            active: HashSet::new(),
            read_timeout: IO_TIMEOUT,
        }
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// This client's address as the server sees it.
    pub fn peer_name(&self) -> String {
        self.stream.local_addr_string()
    }

    /// Panic with `msg` and the server dump.
    pub fn fail(&self, msg: &str) -> ! {
        match &self.server {
            Some(s) => panic!("{msg}{}", s.dump()),
            None => panic!("{msg}"),
        }
    }

    /// Time limit of each blocking read (default `IO_TIMEOUT`).
    pub fn set_read_timeout(&mut self, d: Duration) {
        self.stream
            .set_read_timeout(Some(d))
            .expect("set_read_timeout");
        self.read_timeout = d;
    }

    // ----- sending -----

    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Write bytes as they are (no bookkeeping).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes) {
            let hint = if is_closed(&e) {
                " (the server closed the connection)"
            } else {
                ""
            };
            self.fail(&format!("sending {} bytes: {e}{hint}", bytes.len()));
        }
    }

    /// One record with this connection's padding.
    pub fn send_record(&mut self, rtype: u8, request_id: u16, content: &[u8]) {
        let rec = fcgi::record(
            rtype,
            request_id,
            content,
            self.padding.for_len(content.len()),
        );
        self.send_raw(&rec);
    }

    /// BEGIN_REQUEST; marks the id as in flight.
    pub fn begin(&mut self, request_id: u16, role: u16, flags: u8) {
        self.active.insert(request_id);
        self.send_record(
            fcgi::BEGIN_REQUEST,
            request_id,
            &fcgi::begin_body(role, flags),
        );
    }

    /// Counts `request_id` in flight again: a request sent, reusing the
    /// id, before the END_REQUEST of the one before it was read.
    pub fn expect_pipelined(&mut self, request_id: u16) {
        self.active.insert(request_id);
    }

    /// Begin a RESPONDER request, with KEEP_CONN per `self.keep_conn`.
    pub fn begin_responder(&mut self, request_id: u16) {
        let flags = if self.keep_conn { fcgi::KEEP_CONN } else { 0 };
        self.begin(request_id, fcgi::RESPONDER, flags);
    }

    /// The whole PARAMS stream (split per `max_record`, then empty).
    pub fn params(&mut self, request_id: u16, pairs: &[(&str, &str)]) {
        self.params_bytes(request_id, &fcgi::nv_pairs(pairs));
    }

    /// A PARAMS stream with the given encoded content.
    pub fn params_bytes(&mut self, request_id: u16, encoded: &[u8]) {
        let s = fcgi::stream(
            fcgi::PARAMS,
            request_id,
            encoded,
            self.max_record,
            self.padding,
        );
        self.send_raw(&s);
    }

    /// The whole STDIN stream (split per `max_record`, then empty).
    pub fn stdin(&mut self, request_id: u16, body: &[u8]) {
        let s = fcgi::stream(
            fcgi::STDIN,
            request_id,
            body,
            self.max_record,
            self.padding,
        );
        self.send_raw(&s);
    }

    pub fn abort(&mut self, request_id: u16) {
        self.send_record(fcgi::ABORT_REQUEST, request_id, &[]);
    }

    // ----- receiving -----

    /// Read one record from the socket.  `Ok(None)` on a clean close at
    /// a record boundary; an `UnexpectedEof` error on a close inside one.
    pub fn try_read_record(&mut self) -> io::Result<Option<Record>> {
        let mut h = [0u8; fcgi::HEADER_LEN];
        let mut got = 0;
        while got < h.len() {
            match self.stream.read(&mut h[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed after {got} header bytes"),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let clen = u16::from_be_bytes([h[4], h[5]]) as usize;
        let plen = h[6] as usize;
        let mut body = vec![0u8; clen + plen];
        self.stream.read_exact(&mut body).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("inside a record of {clen}+{plen} bytes: {e}"),
            )
        })?;
        body.truncate(clen);
        Ok(Some(Record {
            version: h[0],
            rtype: h[1],
            request_id: u16::from_be_bytes([h[2], h[3]]),
            content: body,
            padding_len: plen as u8,
        }))
    }

    /// Read the next record; fails the test on EOF, error or timeout,
    /// on a version other than 1, and on a record for a request id that
    /// is not in flight.
    pub fn next_record(&mut self, waiting_for: &str) -> Record {
        let rec = match self.try_read_record() {
            Ok(Some(r)) => r,
            Ok(None) => self.fail(&format!(
                "server closed the connection while waiting for {waiting_for}"
            )),
            Err(e) if is_timeout(&e) => self.fail(&format!(
                "no data for {:?} while waiting for {waiting_for} ({e})",
                self.read_timeout
            )),
            Err(e) => self.fail(&format!(
                "read error while waiting for {waiting_for}: {e}"
            )),
        };
        if rec.version != fcgi::VERSION_1 {
            self.fail(&format!(
                "record with bad version from server: {rec:?}"
            ));
        }
        if rec.request_id != 0 && !self.active.contains(&rec.request_id) {
            self.fail(&format!(
                "record for request id {} which is not in flight (ended or \
                 never begun): {rec:?}",
                rec.request_id
            ));
        }
        rec
    }

    /// Next record for `request_id` (earlier-read ones first); records
    /// for other ids are kept for later.
    pub fn next_record_for(
        &mut self,
        request_id: u16,
        waiting_for: &str,
    ) -> Record {
        if let Some(i) =
            self.stash.iter().position(|r| r.request_id == request_id)
        {
            return self.stash.remove(i).unwrap();
        }
        loop {
            let rec = self.next_record(waiting_for);
            if rec.request_id == request_id {
                return rec;
            }
            self.stash.push_back(rec);
        }
    }

    /// Records read and set aside, not yet consumed.
    pub fn take_stash(&mut self) -> Vec<Record> {
        self.stash.drain(..).collect()
    }

    /// Read records for `request_id` up to and including its
    /// END_REQUEST.  Fails on stream data after its closing record,
    /// on unexpected record types, and on a malformed END_REQUEST.
    pub fn read_response(&mut self, request_id: u16) -> Response {
        let mut r = Response {
            request_id,
            stdout: Vec::new(),
            stderr: Vec::new(),
            app_status: 0,
            protocol_status: 0,
            stdout_closed: false,
            stderr_closed: false,
            records: Vec::new(),
        };
        let what = format!("the response to request {request_id}");
        loop {
            let rec = self.next_record_for(request_id, &what);
            match rec.rtype {
                fcgi::STDOUT | fcgi::STDERR => {
                    let (buf, closed) = if rec.rtype == fcgi::STDOUT {
                        (&mut r.stdout, &mut r.stdout_closed)
                    } else {
                        (&mut r.stderr, &mut r.stderr_closed)
                    };
                    if *closed {
                        let msg = format!(
                            "{rec:?} after that stream was closed; records \
                             so far: {:?}",
                            r.records
                        );
                        self.fail(&msg);
                    }
                    if rec.content.is_empty() {
                        *closed = true;
                    } else {
                        buf.extend_from_slice(&rec.content);
                    }
                }
                fcgi::END_REQUEST => {
                    if rec.content.len() != 8 {
                        self.fail(&format!("malformed END_REQUEST: {rec:?}"));
                    }
                    let c = &rec.content;
                    r.app_status =
                        u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                    r.protocol_status = c[4];
                    self.active.remove(&request_id);
                    r.records.push(rec);
                    return r;
                }
                _ => {
                    let msg = format!(
                        "unexpected record for request {request_id}: {rec:?}; \
                         records so far: {:?}",
                        r.records
                    );
                    self.fail(&msg);
                }
            }
            r.records.push(rec);
        }
    }

    /// A whole RESPONDER request: BEGIN_REQUEST (KEEP_CONN per
    /// `self.keep_conn`), PARAMS, STDIN, then the response.  Large
    /// bodies are written from a second thread while the response is
    /// read, so a server that answers while reading cannot deadlock us.
    pub fn request(
        &mut self,
        request_id: u16,
        params: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.begin_responder(request_id);
        self.params(request_id, params);
        if body.len() <= 64 * 1024 {
            self.stdin(request_id, body);
            return self.read_response(request_id);
        }
        let data = fcgi::stream(
            fcgi::STDIN,
            request_id,
            body,
            self.max_record,
            self.padding,
        );
        let mut w = match self.stream.try_clone() {
            Ok(w) => w,
            Err(e) => self.fail(&format!("try_clone: {e}")),
        };
        let writer = thread::spawn(move || -> io::Result<()> {
            w.write_all(&data)?;
            w.flush()
        });
        let resp = self.read_response(request_id);
        match writer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail(&format!(
                "writing the {}-byte body failed: {e} (yet a response came: \
                 {} stdout bytes)",
                body.len(),
                resp.stdout.len()
            )),
            Err(_) => self.fail("body writer thread panicked"),
        }
        resp
    }

    /// Like `request`, then checks the response is complete: protocol
    /// status REQUEST_COMPLETE, app status 0, stdout closed by an empty
    /// record.
    pub fn request_ok(
        &mut self,
        request_id: u16,
        params: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let r = self.request(request_id, params, body);
        self.check_complete(&r);
        r
    }

    /// Fail unless `r` is a normally completed request.
    pub fn check_complete(&self, r: &Response) {
        if r.protocol_status != fcgi::REQUEST_COMPLETE
            || r.app_status != 0
            || !r.stdout_closed
        {
            self.fail(&format!(
                "request {} did not complete normally: protocol_status {}, \
                 app_status {}, stdout closed: {}; stdout: {}; stderr: {}; \
                 records: {:?}",
                r.request_id,
                r.protocol_status,
                r.app_status,
                r.stdout_closed,
                show(&r.stdout, 500),
                show(&r.stderr, 500),
                r.records
            ));
        }
    }

    /// GET_VALUES for `names`; returns the decoded GET_VALUES_RESULT.
    /// Records for other ids read meanwhile are kept for later.
    pub fn get_values(&mut self, names: &[&str]) -> Vec<(String, String)> {
        let pairs: Vec<(&str, &str)> =
            names.iter().map(|n| (*n, "")).collect();
        self.send_record(fcgi::GET_VALUES, 0, &fcgi::nv_pairs(&pairs));
        let rec = self.next_record_for(0, "GET_VALUES_RESULT");
        if rec.rtype != fcgi::GET_VALUES_RESULT {
            self.fail(&format!("expected GET_VALUES_RESULT, got {rec:?}"));
        }
        match fcgi::decode_nv(&rec.content) {
            Ok(v) => v
                .into_iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(&n).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect(),
            Err(e) => self.fail(&format!(
                "undecodable GET_VALUES_RESULT ({e}): {rec:?}"
            )),
        }
    }

    /// Read until the server closes the connection (EOF or reset) and
    /// return what came before; `Err` if still open after `timeout`.
    pub fn try_wait_closed(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let r = self.wait_closed_inner(timeout);
        let _ = self.stream.set_read_timeout(Some(self.read_timeout));
        r
    }

    fn wait_closed_inner(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "connection still open after {timeout:?}; received {} \
                     bytes: {}",
                    got.len(),
                    show(&got, 300)
                ));
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if is_closed(&e) => return Ok(got),
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }

    /// Like `try_wait_closed`, failing the test on timeout.
    pub fn expect_closed(&mut self, timeout: Duration) -> Vec<u8> {
        match self.try_wait_closed(timeout) {
            Ok(b) => b,
            Err(e) => self.fail(&e),
        }
    }
}

// ---------------------------------------------------------------------
// CGI response parsing and byte helpers
// ---------------------------------------------------------------------

/// A CGI response: header lines, then a blank line, then the body.
#[derive(Debug)]
pub struct CgiResponse {
    /// (name, value) pairs in order; `None` if no header/body separator.
    pub headers: Option<Vec<(String, String)>>,
    pub body: Vec<u8>,
}

impl CgiResponse {
    pub fn parse(out: &[u8]) -> CgiResponse {
        let crlf = find(out, b"\r\n\r\n").map(|i| (i, 4));
        let lf = find(out, b"\n\n").map(|i| (i, 2));
        let split = match (crlf, lf) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((i, sep)) = split else {
            return CgiResponse {
                headers: None,
                body: out.to_vec(),
            };
        };
        let head = String::from_utf8_lossy(&out[..i]);
        let headers = head
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.trim().to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        CgiResponse {
            headers: Some(headers),
            body: out[i + sep..].to_vec(),
        }
    }

    /// Value of the first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .as_ref()?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The HTTP status: from a `Status:` header, else 200 (or 302 with a
    /// `Location:` header); `None` if there are no headers.
    pub fn status(&self) -> Option<u16> {
        self.headers.as_ref()?;
        if let Some(s) = self.header("Status") {
            return s.split_whitespace().next()?.parse().ok();
        }
        if self.header("Location").is_some() {
            return Some(302);
        }
        Some(200)
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bytes as escaped ASCII, cut to about `max` characters.
pub fn show(b: &[u8], max: usize) -> String {
    let s: String = b.escape_ascii().to_string();
    if s.len() <= max {
        format!("\"{s}\"")
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("\"{}\"... ({} bytes)", &s[..end], b.len())
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), every value 0-255.
pub fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(
            &x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes(),
        );
    }
    out.truncate(len);
    out
}

/// FNV-1a, 64-bit: a checksum to show in messages about large buffers.
pub fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= c as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `None` if equal; otherwise a short description of the first
/// difference (never the whole buffers).
pub fn compare_bytes(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let lo = first.saturating_sub(16);
    Some(format!(
        "got {} bytes (fnv {:016x}), want {} bytes (fnv {:016x}); first \
         difference at offset {first}: got {} want {}",
        got.len(),
        fnv1a(got),
        want.len(),
        fnv1a(want),
        show(&got[lo.min(got.len())..(first + 16).min(got.len())], 200),
        show(&want[lo.min(want.len())..(first + 16).min(want.len())], 200),
    ))
}

// ---------------------------------------------------------------------
// The client's own encoder, against bytes written out from the spec
// ---------------------------------------------------------------------

mod client_self_check {
    use super::fcgi::*;

    #[test]
    fn test_client_encodes_records_as_the_spec_lays_them_out() {
        assert_eq!(
            record(STDIN, 0x0102, b"abc", 5),
            [1, 5, 1, 2, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]
        );
        assert_eq!(
            begin_request(1, RESPONDER, KEEP_CONN),
            [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
        );
        assert_eq!(abort_request(0x1234), [1, 2, 0x12, 0x34, 0, 0, 0, 0]);
        assert_eq!(Padding::Align8.for_len(3), 5);
        assert_eq!(Padding::Align8.for_len(16), 0);
    }

    #[test]
    fn test_client_encodes_name_value_lengths_as_the_spec_says() {
        assert_eq!(nv_pair(b"AB", b"c"), [2, 1, b'A', b'B', b'c']);
        let v127 = vec![b'x'; 127];
        assert_eq!(nv_pair(b"A", &v127)[..3], [1, 127, b'A']);
        let v128 = vec![b'x'; 128];
        assert_eq!(nv_pair(b"A", &v128)[..6], [1, 0x80, 0, 0, 0x80, b'A']);
        let n300 = vec![b'n'; 300];
        assert_eq!(nv_pair(&n300, b"")[..5], [0x80, 0, 1, 44, 0]);
        let pairs = vec![
            (b"A".to_vec(), v128.clone()),
            (n300.clone(), b"".to_vec()),
            (b"".to_vec(), b"z".to_vec()),
        ];
        assert_eq!(decode_nv(&nv_pairs(&pairs)).unwrap(), pairs);
        assert!(decode_nv(&[0x80, 0, 0]).is_err());
        assert!(decode_nv(&[5, 0, b'a']).is_err());
    }

    #[test]
    fn test_client_splits_streams_into_records_of_at_most_65535() {
        let data = vec![7u8; 70_000];
        let bytes = stream(STDIN, 3, &data, 100_000, Padding::None);
        let (recs, rest) = parse_records(&bytes);
        assert_eq!(rest, 0);
        let lens: Vec<usize> = recs.iter().map(|r| r.content.len()).collect();
        assert_eq!(lens, [65535, 70_000 - 65535, 0]);
        assert!(recs.iter().all(|r| r.rtype == STDIN && r.request_id == 3));
        let bytes = stream(PARAMS, 1, b"abcde", 2, Padding::Fixed(3));
        let (recs, rest) = parse_records(&bytes);
        assert_eq!(rest, 0);
        let parts: Vec<&[u8]> = recs.iter().map(|r| &r.content[..]).collect();
        assert_eq!(parts, [&b"ab"[..], b"cd", b"e", b""]);
        assert!(recs.iter().all(|r| r.padding_len == 3));
    }
}
