//! Every real way of being started (DESIGN §2) and stopped (DESIGN §5):
//! a listening socket on fd 0 (spawn-fcgi, mod_fcgid), systemd socket
//! activation, `--bind` with each ADDR form, plain CGI on a pipe or a
//! connected socket, a person at a terminal, the `--mode` overrides,
//! `FCGI_WEB_SERVER_ADDRS`/`--allow`, the peers a new user would try
//! (cgi-fcgi, spawn-fcgi, systemd-socket-activate), and SIGTERM/SIGINT
//! with and without requests in flight.
//!
//! Tests that need a peer program skip (with a line on stderr) when it is
//! not installed, unless `FCGI_LAUNCH_REQUIRE_PEERS` is set: then a
//! missing peer fails the test.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::fcgi;
use crate::util::{
    bin, describe_status, show, Addr, Conn, Server, ServerInfo, Stream,
    TempDir, EXIT_TIMEOUT, STARTUP_TIMEOUT,
};

/// The exact stdout of the `hello` builtin.
const HELLO: &[u8] =
    b"Content-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";

/// Time limit for the server to close a connection it should close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for an expected log line to show up.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for a one-shot run (CGI request, usage error, cgi-fcgi).
const RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// Time limit for a program's process to be gone once it should be.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

/// Set to make a missing peer program fail its test instead of skip it.
const REQUIRE_PEERS: &str = "FCGI_LAUNCH_REQUIRE_PEERS";

/// Variables that would change how the binary detects its mode or logs;
/// removed from every command so the caller's environment cannot leak in.
const MODE_VARS: &[&str] = &[
    "GATEWAY_INTERFACE",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "FCGI_WEB_SERVER_ADDRS",
    "REQUEST_METHOD",
    "CONTENT_LENGTH",
    "RUST_LOG",
];

fn clean_env(cmd: &mut Command) {
    for v in MODE_VARS {
        cmd.env_remove(v);
    }
}

/// Path of a fixture in `tests/fixtures/activation/`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/activation")
        .join(name)
}

/// The path of the installed program `name`, or `None` (after saying so
/// on stderr) if it is missing and peers are not required.
fn peer(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if fs::metadata(&p)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        {
            return Some(p);
        }
    }
    if std::env::var_os(REQUIRE_PEERS).is_some() {
        panic!("{name} is not installed (and {REQUIRE_PEERS} is set)");
    }
    eprintln!("skipping: {name} is not installed");
    None
}

/// A TCP port on `ip` that was free a moment ago; `None` if `ip` cannot
/// be bound at all (no IPv6 loopback, say).
fn free_port_on(ip: IpAddr) -> Option<u16> {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).ok()?;
    Some(l.local_addr().ok()?.port())
}

fn v4(port: u16) -> Addr {
    Addr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

fn v6(port: u16) -> Addr {
    Addr::Tcp(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port))
}

/// Wait until one of `addrs` accepts a connection; returns that one.
/// `exited` reports the process's status once it has ended.
fn wait_accepting(
    addrs: &[Addr],
    exited: impl Fn() -> Option<ExitStatus>,
) -> Result<Addr, String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut last_err = String::from("none");
    loop {
        if let Some(s) = exited() {
            return Err(format!(
                "process {} before accepting on {addrs:?} (last connect \
                 error: {last_err})",
                describe_status(s)
            ));
        }
        for a in addrs {
            match Stream::connect(a) {
                Ok(_) => return Ok(a.clone()),
                Err(e) => last_err = format!("{a}: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing accepting on {addrs:?} after {STARTUP_TIMEOUT:?} \
                 (last connect error: {last_err})"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A client connection to `addr`; failures carry `info`'s dump if given.
fn connect(addr: &Addr, info: Option<&Arc<ServerInfo>>) -> Conn {
    match Stream::connect(addr) {
        Ok(s) => Conn::new(s, info.cloned()),
        Err(e) => {
            let dump = info.map(|i| i.dump()).unwrap_or_default();
            panic!("connect to {addr}: {e}{dump}")
        }
    }
}

/// A `Conn` to a `Server` at an address the harness does not know.
fn connect_srv(srv: &Server, addr: &Addr) -> Conn {
    connect(addr, Some(srv.info()))
}

/// Fail unless a GET through `c` gives exactly the `hello` stdout.
fn check_hello(c: &mut Conn, id: u16) {
    let r = c.request_ok(id, &[("REQUEST_METHOD", "GET")], b"");
    if r.stdout != HELLO {
        c.fail(&format!(
            "hello stdout: got {}, want {}",
            show(&r.stdout, 300),
            show(HELLO, 300)
        ));
    }
}

/// The `env` builtin's page for a GET through `c`.
fn env_page(c: &mut Conn, id: u16) -> String {
    let params = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/env"),
        ("SCRIPT_NAME", "/env"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ];
    let r = c.request_ok(id, &params, b"");
    if r.cgi().status() != Some(200) {
        c.fail(&format!("env page: {:?}", r.cgi()));
    }
    r.stdout_str()
}

/// The rest of the page's line that starts with `field` ("mode:"),
/// trimmed; empty if there is none.
fn page_field(page: &str, field: &str) -> String {
    page.lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Fail unless the env page says FastCGI and its mode line contains
/// every one of `needles`.
fn check_fastcgi_page(c: &Conn, page: &str, needles: &[&str]) {
    let mode = page_field(page, "mode:");
    let transport = page_field(page, "transport:");
    if transport != "FastCGI"
        || !mode.starts_with("FastCGI")
        || !needles.iter().all(|n| mode.contains(n))
    {
        c.fail(&format!(
            "env page: mode {mode:?}, transport {transport:?}; want \
             FastCGI and a mode line with {needles:?}:\n{page}"
        ));
    }
}

/// Run `f`; if it panics, panic again with its message and `dump()`.
fn with_dump<T>(dump: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            panic!("{msg}{}", dump())
        }
    }
}

/// `cmd` for the log, roughly as a shell would take it.
fn cmdline(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={:?} ", k.to_string_lossy(), v));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push_str(&format!(" {:?}", a));
    }
    s
}

fn read_lossy(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", p.display()),
    }
}

/// Send SIGNAL (by name) to `pid` with the `kill` program.
fn kill(sig: &str, pid: u32) -> io::Result<ExitStatus> {
    Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
}

// ---------------------------------------------------------------------
// A peer program that execs fcgi-launch (spawn-fcgi -n, systemd-socket-
// activate): the same guard as `Server`, for a program other than ours.
// ---------------------------------------------------------------------

struct Peer {
    child: RefCell<Child>,
    status: RefCell<Option<ExitStatus>>,
    cmdline: String,
    stdout: PathBuf,
    stderr: PathBuf,
    dir: TempDir,
}

impl Peer {
    /// Start `cmd` in `dir` (its working directory), stdin /dev/null,
    /// output to files in `dir`, in a process group of its own.
    fn start(dir: TempDir, mut cmd: Command) -> Peer {
        let stdout = dir.join("peer-stdout.log");
        let stderr = dir.join("peer-stderr.log");
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create stdout log"))
            .stderr(File::create(&stderr).expect("create stderr log"))
            .process_group(0);
        clean_env(&mut cmd);
        let cmdline = cmdline(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
        Peer {
            child: RefCell::new(child),
            status: RefCell::new(None),
            cmdline,
            stdout,
            stderr,
            dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.borrow().id()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn try_status(&self) -> Option<ExitStatus> {
        let mut st = self.status.borrow_mut();
        if st.is_none() {
            if let Ok(Some(s)) = self.child.borrow_mut().try_wait() {
                *st = Some(s);
            }
        }
        *st
    }

    fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    fn dump(&self) -> String {
        let status = match self.try_status() {
            None => "still running".to_string(),
            Some(s) => describe_status(s),
        };
        format!(
            "\n===== peer =====\ncommand: {}\npid: {}\nstatus: {status}\n\
             ----- stdout -----\n{}\n----- stderr -----\n{}\n\
             ===== end of peer dump =====",
            self.cmdline,
            self.pid(),
            read_lossy(&self.stdout),
            self.stderr(),
        )
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}{}", self.dump())
    }

    /// Run `f`, adding this peer's dump to any failure in it.
    fn check<T>(&self, f: impl FnOnce() -> T) -> T {
        with_dump(|| self.dump(), f)
    }

    fn wait_accepting(&self, addrs: &[Addr]) -> Addr {
        match wait_accepting(addrs, || self.try_status()) {
            Ok(a) => a,
            Err(e) => self.fail(&e),
        }
    }

    fn signal(&self, sig: &str) {
        match kill(sig, self.pid()) {
            Ok(s) if s.success() => {}
            r => self.fail(&format!("kill -s {sig} {}: {r:?}", self.pid())),
        }
    }

    fn expect_exit(&self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("did not exit within {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        crate::util::kill_group(&mut self.child.borrow_mut());
    }
}

// ---------------------------------------------------------------------
// One-shot runs (CGI requests, usage errors, cgi-fcgi)
// ---------------------------------------------------------------------

/// How a one-shot run ended.
struct Ran {
    cmdline: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Ran {
    fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n===== run =====\ncommand: {}\nstatus: {}\n\
             ----- stdout -----\n{}\n----- stderr -----\n{}\n\
             ===== end of run =====",
            self.cmdline,
            describe_status(self.status),
            show(&self.stdout, 3000),
            self.stderr
        )
    }

    fn expect_code(&self, code: i32) {
        if self.status.code() != Some(code) {
            self.fail(&format!("want exit status {code}"));
        }
    }

    /// Fail unless stderr is 1 to 3 lines, each starting with
    /// "fcgi-launch: ", that together contain every one of `words`.
    fn expect_short_explanation(&self, words: &[&str]) {
        let lines: Vec<&str> = self.stderr.lines().collect();
        if lines.is_empty()
            || lines.len() > 3
            || !lines.iter().all(|l| l.starts_with("fcgi-launch: "))
        {
            self.fail("want 1 to 3 stderr lines, each \"fcgi-launch: ...\"");
        }
        for w in words {
            if !self.stderr.contains(w) {
                self.fail(&format!("stderr does not mention {w:?}"));
            }
        }
    }
}

/// Run `cmd` (stdin as the caller set it, else /dev/null) to its end,
/// with output to files in `dir`; kills it after `RUN_TIMEOUT`.
fn run_once(dir: &TempDir, mut cmd: Command) -> Ran {
    static RUNS: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = dir.join(&format!("run{n}-stdout"));
    let err_path = dir.join(&format!("run{n}-stderr"));
    cmd.stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"))
        .process_group(0);
    let cmdline = cmdline(&cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    // Parent copies of the child's stdio close here.
    drop(cmd);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmdline}: still running after {RUN_TIMEOUT:?}; stdout: \
                 {}; stderr: {}",
                show(&fs::read(&out_path).unwrap_or_default(), 2000),
                read_lossy(&err_path)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ran {
        cmdline,
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: read_lossy(&err_path),
    }
}

/// `fcgi-launch ARGS` in `dir` with a clean environment plus `env`.
fn launch_cmd(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir.path()).stdin(Stdio::null()).args(args);
    clean_env(&mut cmd);
    cmd.envs(env.iter().copied());
    cmd
}

/// The environment of a CGI GET request.
const CGI_GET: &[(&str, &str)] = &[
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("REQUEST_METHOD", "GET"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("SCRIPT_NAME", "/app"),
    ("REQUEST_URI", "/app"),
];

// ---------------------------------------------------------------------
// Starting fcgi-launch itself
// ---------------------------------------------------------------------

/// `fcgi-launch --bind BIND ARGS` in `dir`, with `env`; returns once
/// one of `addrs` accepts connections, and that address.
fn start_bound(
    dir: TempDir,
    bind: &str,
    addrs: &[Addr],
    args: &[&str],
    env: &[(&str, &str)],
) -> (Server, Addr) {
    let srv = Server::start(dir, |c| {
        clean_env(c);
        c.arg("--bind")
            .arg(bind)
            .args(args)
            .envs(env.iter().copied());
    });
    match wait_accepting(addrs, || srv.try_status()) {
        Ok(a) => (srv, a),
        Err(e) => srv.fail(&e),
    }
}

/// `start_bound` on a free TCP port of `ip`: `bind(port)` gives the
/// `--bind` value, `addrs(port)` where to connect.  Retries with another
/// port if the server exits at startup (the port was taken meanwhile).
fn start_bound_tcp(
    ip: IpAddr,
    bind: impl Fn(u16) -> String,
    addrs: impl Fn(u16) -> Vec<Addr>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Server, Addr) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port_on(ip)
            .unwrap_or_else(|| panic!("cannot bind a port on {ip}"));
        let bind = bind(port);
        let addrs = addrs(port);
        let srv = Server::start(TempDir::new(), |c| {
            clean_env(c);
            c.arg("--bind")
                .arg(&bind)
                .args(args)
                .envs(env.iter().copied());
        });
        match wait_accepting(&addrs, || srv.try_status()) {
            Ok(a) => return (srv, a),
            Err(_) if attempt < 4 && srv.try_status().is_some() => continue,
            Err(e) => srv.fail(&e),
        }
    }
}

/// `fcgi-launch ARGS` with `listener` as its fd 0 (as spawn-fcgi and
/// mod_fcgid start it).  Connections can be made at once: the kernel
/// queues them on the already listening socket.
fn start_on_fd0(
    listener: OwnedFd,
    args: &[&str],
    env: &[(&str, &str)],
) -> Server {
    Server::start(TempDir::new(), |c| {
        clean_env(c);
        c.stdin(Stdio::from(listener))
            .args(args)
            .envs(env.iter().copied());
    })
}

/// Fail unless the server exits with status 0 within `EXIT_TIMEOUT`.
fn expect_clean_exit(srv: &Server, after: &str) {
    let st = srv.expect_exit(EXIT_TIMEOUT);
    if st.code() != Some(0) {
        srv.fail(&format!("after {after}: {st:?}, want exit status 0"));
    }
    srv.assert_no_panic();
}

// ---------------------------------------------------------------------
// A listening socket on fd 0 (spawn-fcgi, mod_fcgid, lighttpd)
// ---------------------------------------------------------------------

#[test]
fn listening_unix_socket_on_fd0_is_served() {
    let dir = TempDir::new();
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).expect("bind unix socket");
    let srv =
        start_on_fd0(OwnedFd::from(listener), &["--builtin", "env"], &[]);
    let addr = Addr::Unix(path);
    let mut c = connect_srv(&srv, &addr);
    let page = env_page(&mut c, 1);
    check_fastcgi_page(&c, &page, &["fd 0"]);
    // A second connection, and a second request on the first one.
    let mut c2 = connect_srv(&srv, &addr);
    env_page(&mut c2, 1);
    env_page(&mut c, 2);
    srv.assert_running();
    srv.assert_no_panic();
}

/// CPU seconds (user + system) process `pid` has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .expect("read /proc/PID/stat");
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks: f64 =
        f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn inherited_socket_made_non_blocking_by_its_other_owner_does_not_spin() {
    // spawn-fcgi -F and lighttpd's max-procs share one listening socket
    // between processes; any of them may set O_NONBLOCK on it, for all.
    let dir = TempDir::new();
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).expect("bind unix socket");
    let ours = listener.try_clone().expect("clone the listener");
    let srv = start_on_fd0(
        OwnedFd::from(listener),
        &["--builtin", "hello", "-w", "2"],
        &[],
    );
    let addr = Addr::Unix(path);
    check_hello(&mut connect_srv(&srv, &addr), 1);
    ours.set_nonblocking(true).expect("O_NONBLOCK");
    let before = cpu_seconds(srv.pid());
    thread::sleep(Duration::from_millis(1500));
    let used = cpu_seconds(srv.pid()) - before;
    // Idle, it wakes a few times a second; spinning would use ~3 s.
    if used > 0.5 {
        srv.fail(&format!("idle for 1.5 s, it used {used:.2} s of CPU"));
    }
    check_hello(&mut connect_srv(&srv, &addr), 1);
    srv.assert_no_panic();
}

#[test]
fn inherited_socket_shut_down_by_its_other_owner_does_not_spin() {
    // A shut-down listening socket (any process sharing it may do that)
    // fails every accept at once with EINVAL.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = Addr::Tcp(listener.local_addr().expect("local_addr"));
    let ours = listener.try_clone().expect("clone the listener");
    let srv = start_on_fd0(
        OwnedFd::from(listener),
        &["--builtin", "hello", "-w", "2"],
        &[],
    );
    check_hello(&mut connect_srv(&srv, &addr), 1);
    // std has no shutdown for a listener; a stream over the same fd calls
    // shutdown(2) all the same.
    std::net::TcpStream::from(OwnedFd::from(ours))
        .shutdown(std::net::Shutdown::Read)
        .expect("shutdown(SHUT_RD) on the listening socket");
    let before = cpu_seconds(srv.pid());
    thread::sleep(Duration::from_millis(1500));
    let used = cpu_seconds(srv.pid()) - before;
    // Pausing between failed accepts, it wakes ~20 times a second;
    // retrying at once would use ~3 s.
    if used > 0.5 {
        srv.fail(&format!("idle for 1.5 s, it used {used:.2} s of CPU"));
    }
    let log = srv.stderr();
    let lines = log.matches("accepting on tcp:").count();
    if lines != 1 || !log.contains("Invalid argument") {
        srv.fail(&format!(
            "expected one error line naming the socket and EINVAL, got {lines}"
        ));
    }
    srv.assert_no_panic();
}

#[test]
fn out_of_file_descriptors_is_logged_once_and_served_again_after() {
    // At its fd limit (EMFILE) accept fails until connections close: one
    // error line says so, not one per failed try, nor one each time a
    // closed connection lets one more in. (When the end is logged: the
    // tests of src/episode.rs.)
    let dir = TempDir::new();
    let path = dir.join("s");
    let addr = Addr::Unix(path.clone());
    let listener = UnixListener::bind(&path).expect("bind unix socket");
    let srv = Server::spawn(TempDir::new(), Path::new("/bin/sh"), |c| {
        clean_env(c);
        c.stdin(Stdio::from(OwnedFd::from(listener)))
            .arg("-c")
            .arg("ulimit -n 32 && exec \"$0\" \"$@\"")
            .arg(bin())
            .args(["--builtin", "hello", "-w", "2"]);
    });
    let mut first = connect_srv(&srv, &addr);
    check_hello(&mut first, 1);
    // Connections wait in the backlog once the server has no fd left.
    let mut held: Vec<UnixStream> = (0..60)
        .map(|_| UnixStream::connect(&path).expect("connect"))
        .collect();
    srv.expect_log_line(
        EXIT_TIMEOUT,
        &["accepting on", "Too many open files"],
    );
    let before = cpu_seconds(srv.pid());
    thread::sleep(Duration::from_millis(1000));
    let used = cpu_seconds(srv.pid()) - before;
    if used > 0.5 {
        srv.fail(&format!(
            "at the fd limit for 1 s, it used {used:.2} s of CPU"
        ));
    }
    // Connections the server took close one at a time, each letting one
    // more in.
    for _ in 0..3 {
        held.remove(0);
        thread::sleep(Duration::from_millis(150));
    }
    let lines = srv.stderr().matches("accepting on").count();
    if lines != 1 {
        srv.fail(&format!("{lines} lines about accepting, want 1"));
    }
    drop((first, held));
    check_hello(&mut connect_srv(&srv, &addr), 1);
    srv.assert_no_panic();
}

#[test]
fn listening_tcp_socket_on_fd0_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = Addr::Tcp(listener.local_addr().expect("local_addr"));
    let srv =
        start_on_fd0(OwnedFd::from(listener), &["--builtin", "hello"], &[]);
    let mut c = connect_srv(&srv, &addr);
    check_hello(&mut c, 1);
    check_hello(&mut c, 2);
    let mut c2 = connect_srv(&srv, &addr);
    check_hello(&mut c2, 1);
    srv.assert_no_panic();
}

#[test]
fn listening_tcp_socket_on_fd0_shows_on_env_page() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = Addr::Tcp(listener.local_addr().expect("local_addr"));
    let srv =
        start_on_fd0(OwnedFd::from(listener), &["--builtin", "env"], &[]);
    let mut c = connect_srv(&srv, &addr);
    let page = env_page(&mut c, 1);
    check_fastcgi_page(&c, &page, &["fd 0"]);
}

#[test]
fn listening_socket_on_fd0_wins_over_gateway_interface() {
    // A FastCGI process manager started from a CGI environment still
    // gets FastCGI (DESIGN §2: fd 0 is checked before GATEWAY_INTERFACE).
    let dir = TempDir::new();
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).expect("bind unix socket");
    let srv =
        start_on_fd0(OwnedFd::from(listener), &["--builtin", "env"], CGI_GET);
    let mut c = connect_srv(&srv, &Addr::Unix(path));
    let page = env_page(&mut c, 1);
    check_fastcgi_page(&c, &page, &["fd 0"]);
}

// ---------------------------------------------------------------------
// systemd socket activation
// ---------------------------------------------------------------------

/// `systemd-socket-activate ACTIVATE_ARGS -- fcgi-launch ARGS` in a new
/// temp dir; `None` if systemd-socket-activate is not installed.
fn socket_activate(
    activate_args: impl Fn(&TempDir) -> Vec<String>,
    args: &[&str],
) -> Option<Peer> {
    let sa = peer("systemd-socket-activate")?;
    let dir = TempDir::new();
    let mut cmd = Command::new(sa);
    cmd.args(activate_args(&dir))
        .arg("--")
        .arg(bin())
        .args(args);
    Some(Peer::start(dir, cmd))
}

fn listen_arg(p: &Path) -> String {
    format!("--listen={}", p.display())
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let Some(p) = socket_activate(
        |d| vec![listen_arg(&d.join("s")), "--fdname=fcgi".to_string()],
        &["--builtin", "env"],
    ) else {
        return;
    };
    let addr = p.wait_accepting(&[Addr::Unix(p.path("s"))]);
    p.check(|| {
        let mut c = connect(&addr, None);
        let page = env_page(&mut c, 1);
        check_fastcgi_page(&c, &page, &["1 socket", "systemd"]);
        // The process that answers is the one systemd-socket-activate
        // exec'd: the pid LISTEN_PID named.
        let pid = page_field(&page, "pid:");
        if pid != p.pid().to_string() {
            c.fail(&format!("page pid {pid:?}, want {}", p.pid()));
        }
        let mut c2 = connect(&addr, None);
        env_page(&mut c2, 7);
        env_page(&mut c, 2);
    });
    p.signal("TERM");
    let st = p.expect_exit(EXIT_TIMEOUT);
    if st.code() != Some(0) {
        p.fail(&format!("after SIGTERM: {st:?}, want exit status 0"));
    }
}

#[test]
fn socket_activation_serves_every_passed_socket() {
    if peer("systemd-socket-activate").is_none() {
        return;
    }
    // A unix socket, a TCP socket, a unix socket: fds 3, 4, 5.  Retried
    // with another port if the free port was taken meanwhile.
    let mut attempt = 0;
    let (p, a, port) = loop {
        attempt += 1;
        let port = free_port_on(loopback_v4()).expect("free port");
        let p = socket_activate(
            |d| {
                vec![
                    listen_arg(&d.join("a")),
                    format!("--listen=127.0.0.1:{port}"),
                    listen_arg(&d.join("b")),
                ]
            },
            &["--builtin", "env"],
        )
        .expect("systemd-socket-activate is installed");
        match wait_accepting(&[Addr::Unix(p.path("a"))], || p.try_status()) {
            Ok(a) => break (p, a, port),
            Err(_) if attempt < 4 && p.try_status().is_some() => continue,
            Err(e) => p.fail(&e),
        }
    };
    p.check(|| {
        // The first connection (on fd 3) starts fcgi-launch; then each
        // of the three sockets must answer.
        let mut ca = connect(&a, None);
        let page = env_page(&mut ca, 1);
        check_fastcgi_page(&ca, &page, &["3 socket", "systemd"]);
        let mut ct = connect(&v4(port), None);
        let page = env_page(&mut ct, 1);
        check_fastcgi_page(&ct, &page, &["3 socket"]);
        let mut cb = connect(&Addr::Unix(p.path("b")), None);
        let page = env_page(&mut cb, 1);
        check_fastcgi_page(&cb, &page, &["3 socket"]);
    });
    p.signal("TERM");
    let st = p.expect_exit(EXIT_TIMEOUT);
    if st.code() != Some(0) {
        p.fail(&format!("after SIGTERM: {st:?}, want exit status 0"));
    }
}

#[test]
fn socket_activation_hides_listen_variables_from_programs() {
    // DESIGN §2 and §3: LISTEN_* are for us, not for the CGI program
    // (a program that is itself socket-aware would take our fds); the
    // rest of systemd's environment (Environment=) reaches it.
    let env_cgi = fixture("env.cgi");
    let env_cgi = env_cgi.to_str().expect("utf-8 fixture path");
    let Some(p) = socket_activate(
        |d| {
            vec![
                listen_arg(&d.join("s")),
                "--setenv=FL_SYSTEMD_PROBE=probe-51a8".to_string(),
            ]
        },
        &["--", "/bin/sh", env_cgi],
    ) else {
        return;
    };
    let addr = p.wait_accepting(&[Addr::Unix(p.path("s"))]);
    p.check(|| {
        let mut c = connect(&addr, None);
        let r = c.request_ok(1, CGI_GET, b"");
        let out = r.stdout_str();
        let leaked: Vec<&str> =
            out.lines().filter(|l| l.starts_with("LISTEN_")).collect();
        if !leaked.is_empty() {
            c.fail(&format!("the program got {leaked:?}:\n{out}"));
        }
        if !out.lines().any(|l| l == "FL_SYSTEMD_PROBE=probe-51a8") {
            c.fail(&format!(
                "systemd's environment did not reach the program:\n{out}"
            ));
        }
    });
}

#[test]
fn listen_variables_for_another_pid_are_ignored() {
    // sd_listen_fds(3): LISTEN_PID names the process the fds are for.
    let dir = TempDir::new();
    let cmd = launch_cmd(
        &dir,
        &["--builtin", "hello"],
        &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")],
    );
    let ran = run_once(&dir, cmd);
    ran.expect_code(2);
    ran.expect_short_explanation(&["fd 0"]);
}

#[test]
fn listen_fds_meant_for_a_parent_process_are_not_taken() {
    // systemd-socket-activate execs a shell that runs fcgi-launch as its
    // child: LISTEN_PID is the shell's pid, so fd 3 is not ours to serve.
    let Some(sa) = peer("systemd-socket-activate") else {
        return;
    };
    let dir = TempDir::new();
    let script = format!(
        "'{}' --builtin hello; exit $?",
        bin().display().to_string().replace('\'', "'\\''")
    );
    let mut cmd = Command::new(sa);
    cmd.arg(listen_arg(&dir.join("s")))
        .args(["--", "/bin/sh", "-c", &script]);
    let p = Peer::start(dir, cmd);
    let addr = p.wait_accepting(&[Addr::Unix(p.path("s"))]);
    p.check(|| {
        // The first connection starts the shell; nobody may answer it.
        let mut c = connect(&addr, None);
        let mut req = fcgi::begin_request(1, fcgi::RESPONDER, 0);
        req.extend(fcgi::stream(
            fcgi::PARAMS,
            1,
            &fcgi::nv_pairs(&[("REQUEST_METHOD", "GET")]),
            65535,
            fcgi::Padding::None,
        ));
        req.extend(fcgi::record(fcgi::STDIN, 1, b"", 0));
        let _ = c.try_send_raw(&req);
        let got = c.expect_closed(CLOSE_TIMEOUT);
        if !got.is_empty() {
            c.fail(&format!(
                "a process served fds meant for its parent: {}",
                show(&got, 300)
            ));
        }
    });
    let st = p.expect_exit(EXIT_TIMEOUT);
    if st.code() != Some(2) {
        p.fail(&format!("shell exited {st:?}; want fcgi-launch's status 2"));
    }
    if !p.stderr().lines().any(|l| l.starts_with("fcgi-launch: ")) {
        p.fail("no \"fcgi-launch: \" line explaining the usage error");
    }
}

// ---------------------------------------------------------------------
// --bind, every ADDR form (fcgiwrap's -s forms among them)
// ---------------------------------------------------------------------

/// Bind a unix socket given as `bind` (relative to the server's working
/// directory), check it answers `hello` and the env page.
fn check_bind_unix(bind: impl Fn(&Path) -> String) {
    let dir = TempDir::new();
    let path = dir.join("s");
    let bind = bind(dir.path());
    let addr = Addr::Unix(path.clone());
    let (srv, addr) =
        start_bound(dir, &bind, &[addr], &["--builtin", "env"], &[]);
    let mut c = connect_srv(&srv, &addr);
    let page = env_page(&mut c, 1);
    check_fastcgi_page(&c, &page, &["--bind"]);
    srv.assert_no_panic();
}

#[test]
fn bind_unix_prefix_path_is_served() {
    check_bind_unix(|d| format!("unix:{}", d.join("s").display()));
}

#[test]
fn bind_absolute_path_is_served() {
    check_bind_unix(|d| d.join("s").display().to_string());
}

#[test]
fn bind_dot_relative_path_is_served_in_working_directory() {
    check_bind_unix(|_| "./s".to_string());
}

#[test]
fn bind_unix_prefix_relative_path_is_served() {
    check_bind_unix(|_| "unix:s".to_string());
}

/// Bind TCP as `bind(port)`, check it answers `hello` and the env page.
fn check_bind_tcp(
    ip: IpAddr,
    bind: impl Fn(u16) -> String,
    addrs: impl Fn(u16) -> Vec<Addr>,
) {
    let (srv, addr) =
        start_bound_tcp(ip, bind, addrs, &["--builtin", "env"], &[]);
    let mut c = connect_srv(&srv, &addr);
    let page = env_page(&mut c, 1);
    check_fastcgi_page(&c, &page, &["--bind"]);
    let mut c2 = connect_srv(&srv, &addr);
    env_page(&mut c2, 1);
    srv.assert_no_panic();
}

fn loopback_v4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// The IPv6 loopback, or `None` (after saying so) if it cannot be bound.
fn loopback_v6() -> Option<IpAddr> {
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if free_port_on(ip).is_none() {
        eprintln!("skipping: no IPv6 loopback ([::1] cannot be bound)");
        return None;
    }
    Some(ip)
}

#[test]
fn bind_tcp_prefix_host_port_is_served() {
    check_bind_tcp(
        loopback_v4(),
        |p| format!("tcp:127.0.0.1:{p}"),
        |p| vec![v4(p)],
    );
}

#[test]
fn bind_bare_host_port_is_served() {
    check_bind_tcp(
        loopback_v4(),
        |p| format!("127.0.0.1:{p}"),
        |p| vec![v4(p)],
    );
}

#[test]
fn bind_bracketed_ipv6_is_served() {
    let Some(ip) = loopback_v6() else { return };
    check_bind_tcp(ip, |p| format!("[::1]:{p}"), |p| vec![v6(p)]);
}

#[test]
fn bind_tcp6_prefix_is_served() {
    let Some(ip) = loopback_v6() else { return };
    check_bind_tcp(ip, |p| format!("tcp6:[::1]:{p}"), |p| vec![v6(p)]);
}

#[test]
fn bind_tcp_prefix_bracketed_ipv6_is_served() {
    let Some(ip) = loopback_v6() else { return };
    check_bind_tcp(ip, |p| format!("tcp:[::1]:{p}"), |p| vec![v6(p)]);
}

#[test]
fn bind_localhost_name_is_served() {
    // "localhost" may resolve to 127.0.0.1, ::1 or both; the server
    // binds one of them, and a client tries each.
    check_bind_tcp(
        loopback_v4(),
        |p| format!("localhost:{p}"),
        |p| vec![v4(p), v6(p)],
    );
}

#[test]
fn bind_tcp_prefix_localhost_name_is_served() {
    check_bind_tcp(
        loopback_v4(),
        |p| format!("tcp:localhost:{p}"),
        |p| vec![v4(p), v6(p)],
    );
}

#[test]
fn bind_replaces_stale_socket_file_of_a_dead_server() {
    let dir = TempDir::new();
    let path = dir.join("s");
    // A server that died without unlinking: the file stays, nobody
    // listens.
    drop(UnixListener::bind(&path).expect("bind"));
    // A child another test forks at this moment holds a copy of the
    // listening socket until it execs (close-on-exec): the socket may
    // take a moment to be refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(&path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            Ok(_) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            r => panic!("stale socket precondition: connect gave {r:?}"),
        }
    }
    let bind = format!("unix:{}", path.display());
    let (srv, addr) = start_bound(
        dir,
        &bind,
        &[Addr::Unix(path)],
        &["--builtin", "hello"],
        &[],
    );
    let mut c = connect_srv(&srv, &addr);
    check_hello(&mut c, 1);
    srv.assert_no_panic();
}

#[test]
fn bind_refuses_path_a_live_server_answers_on() {
    let live = Server::unix(&["--builtin", "hello"]);
    let path = live.socket_path().to_path_buf();
    let dir = TempDir::new();
    let cmd = launch_cmd(
        &dir,
        &[
            "--bind",
            &format!("unix:{}", path.display()),
            "--builtin",
            "hello",
        ],
        &[],
    );
    let ran = run_once(&dir, cmd);
    ran.expect_code(2);
    ran.expect_short_explanation(&[&path.display().to_string()]);
    // The live server keeps its socket file and keeps answering.
    if !path.exists() {
        live.fail("the second server removed the live server's socket");
    }
    let mut c = live.connect();
    check_hello(&mut c, 1);
    live.assert_running();
}

#[test]
fn bind_refuses_path_that_is_not_a_socket() {
    let dir = TempDir::new();
    let path = dir.join("notes.txt");
    fs::write(&path, b"precious").expect("write file");
    let cmd = launch_cmd(
        &dir,
        &["--bind", &path.display().to_string(), "--builtin", "hello"],
        &[],
    );
    let ran = run_once(&dir, cmd);
    ran.expect_code(2);
    ran.expect_short_explanation(&[&path.display().to_string()]);
    if fs::read(&path).ok().as_deref() != Some(&b"precious"[..]) {
        ran.fail("the file at the --bind path was changed or removed");
    }
}

/// Permission bits of the socket at `path`.
fn socket_mode_bits(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn socket_mode_sets_socket_file_permissions() {
    for (arg, want) in [("0600", 0o600), ("0660", 0o660), ("666", 0o666)] {
        let srv = Server::unix(&["--builtin", "hello", "--socket-mode", arg]);
        let got = socket_mode_bits(srv.socket_path());
        if got != want {
            srv.fail(&format!(
                "--socket-mode {arg}: socket mode {got:o}, want {want:o}"
            ));
        }
        let mut c = srv.connect();
        check_hello(&mut c, 1);
    }
}

// ---------------------------------------------------------------------
// Plain CGI (GATEWAY_INTERFACE set; fd 0 a pipe or a connected socket)
// ---------------------------------------------------------------------

#[test]
fn cgi_with_stdin_a_pipe_answers_one_request_and_exits() {
    let dir = TempDir::new();
    let (r, mut w) = io::pipe().expect("pipe");
    // The web server has no body to send and closes its end.
    w.flush().expect("flush");
    drop(w);
    let mut cmd = launch_cmd(&dir, &["--builtin", "hello"], CGI_GET);
    cmd.stdin(Stdio::from(r));
    let ran = run_once(&dir, cmd);
    ran.expect_code(0);
    if ran.stdout != HELLO {
        ran.fail(&format!("stdout is not exactly {}", show(HELLO, 200)));
    }
}

#[test]
fn cgi_with_stdin_dev_null_answers_one_request_and_exits() {
    let dir = TempDir::new();
    let ran =
        run_once(&dir, launch_cmd(&dir, &["--builtin", "hello"], CGI_GET));
    ran.expect_code(0);
    if ran.stdout != HELLO {
        ran.fail(&format!("stdout is not exactly {}", show(HELLO, 200)));
    }
}

#[test]
fn cgi_with_stdin_a_connected_socket_is_still_cgi() {
    // Apache mod_cgid gives CGI scripts a connected unix socket as fd 0.
    let dir = TempDir::new();
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut cmd = launch_cmd(&dir, &["--builtin", "hello"], CGI_GET);
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
    let ran = run_once(&dir, cmd);
    ran.expect_code(0);
    if ran.stdout != HELLO {
        ran.fail(&format!("stdout is not exactly {}", show(HELLO, 200)));
    }
    drop(ours);
}

#[test]
fn cgi_env_page_says_cgi() {
    let dir = TempDir::new();
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut cmd = launch_cmd(&dir, &["--builtin", "env"], CGI_GET);
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
    let ran = run_once(&dir, cmd);
    ran.expect_code(0);
    let page = String::from_utf8_lossy(&ran.stdout).into_owned();
    let mode = page_field(&page, "mode:");
    let transport = page_field(&page, "transport:");
    if transport != "CGI" || !mode.starts_with("CGI") {
        ran.fail(&format!("mode {mode:?}, transport {transport:?}"));
    }
    drop(ours);
}

/// The stdout of the `echo` builtin in CGI mode for `body`.
fn echo_cgi_expected(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// RFC 3875 §4.2: the script MUST NOT read more than CONTENT_LENGTH
/// bytes of its stdin, even if more is available.
const BODY: &[u8] = b"0123456789";
const EXTRA: &[u8] = b"EXTRA-BYTES-NOT-PART-OF-THE-BODY";

fn echo_cgi_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "POST"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("CONTENT_TYPE", "application/octet-stream"),
        ("CONTENT_LENGTH", "10"),
    ]
}

fn check_echo_cgi(ran: &Ran, leftover: &[u8], kind: &str) {
    ran.expect_code(0);
    let want = echo_cgi_expected(BODY);
    if ran.stdout != want {
        ran.fail(&format!(
            "stdin a {kind}: stdout is not exactly {}",
            show(&want, 300)
        ));
    }
    if leftover != EXTRA {
        ran.fail(&format!(
            "stdin a {kind}: read past CONTENT_LENGTH; left unread: {} \
             (want {})",
            show(leftover, 200),
            show(EXTRA, 200)
        ));
    }
}

#[test]
fn cgi_echo_reads_exactly_content_length_from_a_pipe() {
    let dir = TempDir::new();
    let (r, mut w) = io::pipe().expect("pipe");
    let mut keep = r.try_clone().expect("clone pipe reader");
    w.write_all(BODY).expect("write body");
    w.write_all(EXTRA).expect("write extra");
    drop(w);
    let mut cmd = launch_cmd(&dir, &["--builtin", "echo"], &echo_cgi_env());
    cmd.stdin(Stdio::from(r));
    let ran = run_once(&dir, cmd);
    let mut left = Vec::new();
    keep.read_to_end(&mut left).expect("read rest of pipe");
    check_echo_cgi(&ran, &left, "pipe");
}

#[test]
fn cgi_echo_reads_exactly_content_length_from_a_socket() {
    let dir = TempDir::new();
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut keep = theirs.try_clone().expect("clone socket");
    ours.write_all(BODY).expect("write body");
    ours.write_all(EXTRA).expect("write extra");
    ours.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut cmd = launch_cmd(&dir, &["--builtin", "echo"], &echo_cgi_env());
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
    let ran = run_once(&dir, cmd);
    keep.set_read_timeout(Some(CLOSE_TIMEOUT)).expect("timeout");
    let mut left = Vec::new();
    keep.read_to_end(&mut left).expect("read rest of socket");
    check_echo_cgi(&ran, &left, "connected socket");
}

#[test]
fn cgi_echo_reads_exactly_content_length_from_a_file() {
    let dir = TempDir::new();
    let path = dir.join("body");
    fs::write(&path, [BODY, EXTRA].concat()).expect("write body file");
    let f = File::open(&path).expect("open body file");
    // Shares the file offset with the child's fd 0.
    let mut keep = f.try_clone().expect("dup");
    let mut cmd = launch_cmd(&dir, &["--builtin", "echo"], &echo_cgi_env());
    cmd.stdin(Stdio::from(f));
    let ran = run_once(&dir, cmd);
    let pos = keep.stream_position().expect("offset");
    let mut left = Vec::new();
    keep.read_to_end(&mut left).expect("read rest of file");
    if pos != BODY.len() as u64 {
        ran.fail(&format!(
            "stdin a file: offset {pos} after the request, want {}",
            BODY.len()
        ));
    }
    check_echo_cgi(&ran, &left, "file");
}

// ---------------------------------------------------------------------
// Not started by a web server: a short explanation, exit status 2
// ---------------------------------------------------------------------

#[test]
fn terminal_on_fd0_gets_short_explanation_and_status_2() {
    // A real terminal: script(1) runs the command on a new pty.
    let Some(script) = peer("script") else {
        return;
    };
    let dir = TempDir::new();
    let err = dir.join("stderr");
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let inner = format!(
        "exec {} --builtin hello 2>{}",
        q(&bin().display().to_string()),
        q(&err.display().to_string())
    );
    let mut cmd = Command::new(script);
    cmd.args(["-q", "-e", "-c", &inner, "/dev/null"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .env("SHELL", "/bin/sh");
    clean_env(&mut cmd);
    let mut ran = run_once(&dir, cmd);
    ran.stderr = read_lossy(&err);
    ran.expect_code(2);
    ran.expect_short_explanation(&["terminal", "--bind", "--request"]);
    if ran.stderr.lines().count() < 2 {
        ran.fail("want two or three lines: how, why not, what instead");
    }
}

#[test]
fn dev_null_on_fd0_gets_short_explanation_and_status_2() {
    let dir = TempDir::new();
    let ran = run_once(&dir, launch_cmd(&dir, &["--builtin", "hello"], &[]));
    ran.expect_code(2);
    ran.expect_short_explanation(&["a pipe or a file", "--bind", "--request"]);
    if !ran.stdout.is_empty() {
        ran.fail("a usage error printed to stdout");
    }
}

#[test]
fn connected_socket_on_fd0_without_gateway_interface_is_usage_error() {
    let dir = TempDir::new();
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut cmd = launch_cmd(&dir, &["--builtin", "hello"], &[]);
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
    let ran = run_once(&dir, cmd);
    ran.expect_code(2);
    ran.expect_short_explanation(&["connected socket", "--bind"]);
    drop(ours);
}

// ---------------------------------------------------------------------
// --mode overrides
// ---------------------------------------------------------------------

#[test]
fn forced_cgi_mode_with_listening_socket_on_fd0_serves_cgi() {
    let dir = TempDir::new();
    let listener = UnixListener::bind(dir.join("s")).expect("bind");
    let mut cmd = launch_cmd(
        &dir,
        &["--mode", "cgi", "--builtin", "hello"],
        &[("REQUEST_METHOD", "GET"), ("SERVER_PROTOCOL", "HTTP/1.1")],
    );
    cmd.stdin(Stdio::from(OwnedFd::from(listener)));
    let ran = run_once(&dir, cmd);
    ran.expect_code(0);
    if ran.stdout != HELLO {
        ran.fail(&format!("stdout is not exactly {}", show(HELLO, 200)));
    }
}

#[test]
fn forced_cgi_mode_env_page_does_not_claim_gateway_interface() {
    // The env page is what people read to learn how it was started; with
    // `--mode cgi` and no GATEWAY_INTERFACE it must not say it was set.
    let dir = TempDir::new();
    let listener = UnixListener::bind(dir.join("s")).expect("bind");
    let mut cmd = launch_cmd(
        &dir,
        &["--mode", "cgi", "--builtin", "env"],
        &[("REQUEST_METHOD", "GET"), ("SERVER_PROTOCOL", "HTTP/1.1")],
    );
    cmd.stdin(Stdio::from(OwnedFd::from(listener)));
    let ran = run_once(&dir, cmd);
    ran.expect_code(0);
    let page = String::from_utf8_lossy(&ran.stdout).into_owned();
    let mode = page_field(&page, "mode:");
    if !mode.starts_with("CGI") || mode.contains("GATEWAY_INTERFACE set") {
        ran.fail(&format!(
            "mode line {mode:?}: want CGI, without claiming \
             GATEWAY_INTERFACE is set (it is not; --mode cgi chose CGI)"
        ));
    }
}

#[test]
fn forced_fastcgi_mode_with_pipe_on_fd0_is_usage_error() {
    let dir = TempDir::new();
    let (r, w) = io::pipe().expect("pipe");
    let mut cmd =
        launch_cmd(&dir, &["--mode", "fastcgi", "--builtin", "hello"], &[]);
    cmd.stdin(Stdio::from(r));
    let ran = run_once(&dir, cmd);
    drop(w);
    ran.expect_code(2);
    ran.expect_short_explanation(&["fd 0", "a pipe or a file"]);
}

#[test]
fn forced_fastcgi_mode_with_listening_socket_on_fd0_serves_fastcgi() {
    let dir = TempDir::new();
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).expect("bind");
    let srv = start_on_fd0(
        OwnedFd::from(listener),
        &["--mode", "fastcgi", "--builtin", "hello"],
        &[],
    );
    let mut c = connect_srv(&srv, &Addr::Unix(path));
    check_hello(&mut c, 1);
}

// ---------------------------------------------------------------------
// FCGI_WEB_SERVER_ADDRS and --allow
// ---------------------------------------------------------------------

/// A TCP `hello` server on 127.0.0.1 with `args` and `env`.
fn allow_server(args: &[&str], env: &[(&str, &str)]) -> (Server, Addr) {
    let mut all = vec!["--builtin", "hello"];
    all.extend_from_slice(args);
    start_bound_tcp(
        loopback_v4(),
        |p| format!("tcp:127.0.0.1:{p}"),
        |p| vec![v4(p)],
        &all,
        env,
    )
}

/// Fail unless a request from 127.0.0.1 is closed without an answer and
/// the log names the refused address.
fn check_refused(srv: &Server, addr: &Addr) {
    let mut c = connect_srv(srv, addr);
    let mut req = fcgi::begin_request(1, fcgi::RESPONDER, 0);
    req.extend(fcgi::stream(
        fcgi::PARAMS,
        1,
        &fcgi::nv_pairs(&[("REQUEST_METHOD", "GET")]),
        65535,
        fcgi::Padding::None,
    ));
    req.extend(fcgi::record(fcgi::STDIN, 1, b"", 0));
    // The server may have closed already: a failed write is fine.
    let _ = c.try_send_raw(&req);
    let got = c.expect_closed(CLOSE_TIMEOUT);
    if !got.is_empty() {
        srv.fail(&format!(
            "a peer not in the allowed list got an answer: {}",
            show(&got, 300)
        ));
    }
    let refused = |s: &str| {
        s.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("127.0.0.1")
                && ["refus", "reject", "denied", "not allowed"]
                    .iter()
                    .any(|w| l.contains(w))
        })
    };
    if !srv.wait_for_stderr(LOG_TIMEOUT, refused) {
        srv.fail("no log line saying 127.0.0.1 was refused");
    }
    srv.assert_running();
}

#[test]
fn web_server_addrs_refuses_other_peers() {
    let (srv, addr) =
        allow_server(&[], &[("FCGI_WEB_SERVER_ADDRS", "127.0.0.2")]);
    check_refused(&srv, &addr);
    check_refused(&srv, &addr);
    srv.assert_no_panic();
}

#[test]
fn web_server_addrs_listing_the_peer_serves_it() {
    let (srv, addr) = allow_server(
        &[],
        &[("FCGI_WEB_SERVER_ADDRS", "10.9.8.7, 127.0.0.1,::1")],
    );
    let mut c = connect_srv(&srv, &addr);
    check_hello(&mut c, 1);
    check_hello(&mut c, 2);
}

#[test]
fn allow_option_admits_the_peer() {
    let (srv, addr) = allow_server(&["--allow", "127.0.0.1"], &[]);
    let mut c = connect_srv(&srv, &addr);
    check_hello(&mut c, 1);
}

#[test]
fn allow_option_alone_refuses_other_peers() {
    let (srv, addr) = allow_server(&["--allow", "127.0.0.2"], &[]);
    check_refused(&srv, &addr);
}

#[test]
fn allow_option_adds_to_web_server_addrs() {
    let (srv, addr) = allow_server(
        &["--allow", "127.0.0.1"],
        &[("FCGI_WEB_SERVER_ADDRS", "127.0.0.2")],
    );
    let mut c = connect_srv(&srv, &addr);
    check_hello(&mut c, 1);
}

#[test]
fn web_server_addrs_does_not_restrict_unix_sockets() {
    let dir = TempDir::new();
    let path = dir.join("s");
    let bind = format!("unix:{}", path.display());
    let (srv, addr) = start_bound(
        dir,
        &bind,
        &[Addr::Unix(path)],
        &["--builtin", "hello"],
        &[("FCGI_WEB_SERVER_ADDRS", "127.0.0.2")],
    );
    let mut c = connect_srv(&srv, &addr);
    check_hello(&mut c, 1);
}

// ---------------------------------------------------------------------
// Peers as a new user would try them
// ---------------------------------------------------------------------

/// `cgi-fcgi -bind -connect TARGET` with a CGI environment plus `env`
/// and `body` on its stdin.
fn cgi_fcgi(
    prog: &Path,
    dir: &TempDir,
    target: &str,
    env: &[(&str, &str)],
    body: &[u8],
) -> Ran {
    let mut cmd = Command::new(prog);
    cmd.args(["-bind", "-connect", target])
        .current_dir(dir.path())
        .env_clear()
        .envs(CGI_GET.iter().copied())
        .envs(env.iter().copied());
    let path = dir.join("cgi-fcgi-body");
    fs::write(&path, body).expect("write body");
    cmd.stdin(File::open(&path).expect("open body"));
    run_once(dir, cmd)
}

#[test]
fn cgi_fcgi_gets_hello_over_bound_unix_socket() {
    let Some(prog) = peer("cgi-fcgi") else {
        return;
    };
    let srv = Server::unix(&["--builtin", "hello"]);
    let target = srv.socket_path().display().to_string();
    let dir = TempDir::new();
    let ran = cgi_fcgi(&prog, &dir, &target, &[], b"");
    with_dump(
        || srv.dump(),
        || {
            ran.expect_code(0);
            if ran.stdout != HELLO {
                ran.fail(&format!("want exactly {}", show(HELLO, 200)));
            }
        },
    );
}

#[test]
fn cgi_fcgi_gets_hello_over_bound_tcp_socket() {
    let Some(prog) = peer("cgi-fcgi") else {
        return;
    };
    let srv = Server::tcp(&["--builtin", "hello"]);
    let Addr::Tcp(a) = srv.addr().clone() else {
        unreachable!()
    };
    let dir = TempDir::new();
    let ran = cgi_fcgi(&prog, &dir, &a.to_string(), &[], b"");
    with_dump(
        || srv.dump(),
        || {
            ran.expect_code(0);
            if ran.stdout != HELLO {
                ran.fail(&format!("want exactly {}", show(HELLO, 200)));
            }
        },
    );
}

#[test]
fn cgi_fcgi_posts_a_body_through_echo() {
    let Some(prog) = peer("cgi-fcgi") else {
        return;
    };
    let srv = Server::unix(&["--builtin", "echo"]);
    let target = srv.socket_path().display().to_string();
    let dir = TempDir::new();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let len = body.len().to_string();
    let env = [
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_LENGTH", len.as_str()),
        ("CONTENT_TYPE", "application/octet-stream"),
    ];
    let ran = cgi_fcgi(&prog, &dir, &target, &env, &body);
    with_dump(
        || srv.dump(),
        || {
            ran.expect_code(0);
            if ran.stdout != echo_cgi_expected(&body) {
                ran.fail("echo through cgi-fcgi: not the body sent");
            }
        },
    );
}

#[test]
fn spawn_fcgi_unix_socket_is_served_on_fd0() {
    let Some(sf) = peer("spawn-fcgi") else {
        return;
    };
    let dir = TempDir::new();
    let path = dir.join("s");
    let mut cmd = Command::new(sf);
    cmd.arg("-s")
        .arg(&path)
        .arg("-n")
        .arg("--")
        .arg(bin())
        .args(["--builtin", "env"]);
    let p = Peer::start(dir, cmd);
    let addr = p.wait_accepting(&[Addr::Unix(path)]);
    p.check(|| {
        let mut c = connect(&addr, None);
        let page = env_page(&mut c, 1);
        check_fastcgi_page(&c, &page, &["fd 0"]);
        env_page(&mut c, 2);
        let mut c2 = connect(&addr, None);
        env_page(&mut c2, 1);
    });
    p.signal("TERM");
    let st = p.expect_exit(EXIT_TIMEOUT);
    if st.code() != Some(0) {
        p.fail(&format!("after SIGTERM: {st:?}, want exit status 0"));
    }
}

#[test]
fn spawn_fcgi_tcp_socket_is_served_on_fd0() {
    let Some(sf) = peer("spawn-fcgi") else {
        return;
    };
    let mut attempt = 0;
    let (p, addr) = loop {
        attempt += 1;
        let port = free_port_on(loopback_v4()).expect("free port");
        let mut cmd = Command::new(&sf);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-n", "--"])
            .arg(bin())
            .args(["--builtin", "hello"]);
        let p = Peer::start(TempDir::new(), cmd);
        match wait_accepting(&[v4(port)], || p.try_status()) {
            Ok(a) => break (p, a),
            Err(_) if attempt < 4 && p.try_status().is_some() => continue,
            Err(e) => p.fail(&e),
        }
    };
    p.check(|| {
        let mut c = connect(&addr, None);
        check_hello(&mut c, 1);
        check_hello(&mut c, 2);
        let mut c2 = connect(&addr, None);
        check_hello(&mut c2, 1);
    });
    p.signal("TERM");
    let st = p.expect_exit(EXIT_TIMEOUT);
    if st.code() != Some(0) {
        p.fail(&format!("after SIGTERM: {st:?}, want exit status 0"));
    }
}

// ---------------------------------------------------------------------
// Shutdown (DESIGN §5)
// ---------------------------------------------------------------------

#[test]
fn sigterm_when_idle_exits_zero_on_fd0_socket() {
    let dir = TempDir::new();
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).expect("bind");
    let srv =
        start_on_fd0(OwnedFd::from(listener), &["--builtin", "hello"], &[]);
    let mut c = connect_srv(&srv, &Addr::Unix(path));
    check_hello(&mut c, 1);
    drop(c);
    srv.signal("TERM");
    expect_clean_exit(&srv, "SIGTERM");
}

#[test]
fn sigterm_when_idle_exits_zero_on_bound_tcp_socket() {
    let srv = Server::tcp(&["--builtin", "hello"]);
    let mut c = srv.connect();
    check_hello(&mut c, 1);
    srv.signal("TERM");
    expect_clean_exit(&srv, "SIGTERM");
    c.expect_closed(CLOSE_TIMEOUT);
}

#[test]
fn sigint_when_idle_exits_zero_and_removes_socket() {
    let srv = Server::unix(&["--builtin", "hello"]);
    let mut c = srv.connect();
    check_hello(&mut c, 1);
    srv.signal("INT");
    expect_clean_exit(&srv, "SIGINT");
    if srv.socket_path().exists() {
        srv.fail("socket file still there after SIGINT and exit");
    }
}

#[test]
fn sigterm_removes_socket_given_as_plain_path() {
    let dir = TempDir::new();
    let path = dir.join("s");
    let bind = path.display().to_string();
    let (srv, _) = start_bound(
        dir,
        &bind,
        &[Addr::Unix(path.clone())],
        &["--builtin", "hello"],
        &[],
    );
    srv.signal("TERM");
    expect_clean_exit(&srv, "SIGTERM");
    if path.exists() {
        srv.fail("socket file still there after SIGTERM and exit");
    }
}

/// Pid in `path` once the file is there (written by slow.cgi).
fn wait_pidfile(srv: &Server, path: &Path) -> u32 {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        if Instant::now() >= deadline {
            srv.fail(&format!("{} never appeared", path.display()));
        }
        if let Some(s) = srv.try_status() {
            srv.fail(&format!(
                "server {} before the program started",
                describe_status(s)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is still a live process (a zombie counts as gone: its
/// reaping is its new parent's business once the server has exited).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
    }
}

/// Fail unless `pid` (named `what`) is gone within `GONE_TIMEOUT`.
fn expect_gone(srv: &Server, pid: u32, what: &str) {
    let deadline = Instant::now() + GONE_TIMEOUT;
    while alive(pid) {
        if Instant::now() >= deadline {
            let _ = kill("KILL", pid);
            srv.fail(&format!(
                "{what} (pid {pid}) still running {GONE_TIMEOUT:?} after the \
                 server exited (orphaned; killed now)"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills slow.cgi's processes if a failed test left them running.
struct SlowGuard(PathBuf);

impl Drop for SlowGuard {
    fn drop(&mut self) {
        for f in [self.0.clone(), self.0.with_extension("sleep")] {
            let Ok(s) = fs::read_to_string(&f) else {
                continue;
            };
            let Ok(pid) = s.trim().parse::<u32>() else {
                continue;
            };
            let ours =
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.starts_with(b"sleep") || c.starts_with(b"/bin/sh")
                });
            if ours && alive(pid) {
                let _ = kill("KILL", pid);
            }
        }
    }
}

/// A unix-socket server running slow.cgi (SECONDS, pid file in `tmp`)
/// for every request, with `args` before the `--`.
fn slow_server(
    tmp: &TempDir,
    seconds: &str,
    args: &[&str],
) -> (Server, PathBuf) {
    let pidfile = tmp.join("pid");
    let slow = fixture("slow.cgi");
    let pidfile_s = pidfile.display().to_string();
    let slow_s = slow.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--", "/bin/sh", &slow_s, seconds, &pidfile_s]);
    (Server::unix(&all), pidfile)
}

/// Send a GET without reading the answer.
fn send_get(c: &mut Conn, id: u16) {
    c.begin_responder(id);
    c.params(
        id,
        &[
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", "/slow"),
            ("REQUEST_URI", "/slow"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
        ],
    );
    c.stdin(id, b"");
}

/// Wait until the server has stopped accepting (its socket file gone).
fn wait_stopped_accepting(srv: &Server) {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while srv.socket_path().exists() {
        if Instant::now() >= deadline {
            srv.fail("socket file still there 15 s after SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_lets_in_flight_request_finish_then_exits_zero() {
    let tmp = TempDir::new();
    let (srv, pidfile) = slow_server(&tmp, "2", &["--grace", "10"]);
    let _guard = SlowGuard(pidfile.clone());
    let mut c = srv.connect();
    send_get(&mut c, 1);
    wait_pidfile(&srv, &pidfile);
    thread::sleep(Duration::from_millis(500));
    srv.signal("TERM");
    // No new connections while draining ...
    wait_stopped_accepting(&srv);
    if Stream::connect(srv.addr()).is_ok() {
        srv.fail("a new connection was accepted after SIGTERM");
    }
    // ... but the request in flight gets its whole answer.
    let r = c.read_response(1);
    c.check_complete(&r);
    let cgi = r.cgi();
    if cgi.status() != Some(200) || cgi.body != b"slow done after 2 s\n" {
        c.fail(&format!("slow response: {}", show(&r.stdout, 300)));
    }
    expect_clean_exit(&srv, "SIGTERM with a request in flight");
}

#[test]
fn grace_period_expiry_exits_zero_and_kills_program() {
    let tmp = TempDir::new();
    let (srv, pidfile) = slow_server(&tmp, "30", &["--grace", "1"]);
    let _guard = SlowGuard(pidfile.clone());
    let mut c = srv.connect();
    send_get(&mut c, 1);
    let pid = wait_pidfile(&srv, &pidfile);
    let sleep_pid = wait_pidfile(&srv, &pidfile.with_extension("sleep"));
    srv.signal("TERM");
    // Grace 1 s: well before the 30 s program would end.
    let st = srv.expect_exit(Duration::from_secs(10));
    if st.code() != Some(0) {
        srv.fail(&format!(
            "after the grace period: {st:?}, want exit status 0"
        ));
    }
    expect_gone(&srv, pid, "the CGI program");
    expect_gone(&srv, sleep_pid, "the CGI program's own child");
    // The client is not left hanging on an answer that never comes.
    c.expect_closed(CLOSE_TIMEOUT);
    srv.assert_no_panic();
}

#[test]
fn second_sigterm_during_grace_exits_at_once_with_status_1() {
    let tmp = TempDir::new();
    let (srv, pidfile) = slow_server(&tmp, "30", &["--grace", "60"]);
    let _guard = SlowGuard(pidfile.clone());
    let mut c = srv.connect();
    send_get(&mut c, 1);
    let pid = wait_pidfile(&srv, &pidfile);
    let sleep_pid = wait_pidfile(&srv, &pidfile.with_extension("sleep"));
    srv.signal("TERM");
    // The first signal has been acted on once the socket is gone.
    wait_stopped_accepting(&srv);
    srv.assert_running();
    srv.signal("TERM");
    // "At once": far sooner than the 60 s grace or the 30 s program.
    let st = srv.expect_exit(Duration::from_secs(10));
    if st.code() != Some(1) {
        srv.fail(&format!("after a second SIGTERM: {st:?}, want status 1"));
    }
    expect_gone(&srv, pid, "the CGI program");
    expect_gone(&srv, sleep_pid, "the CGI program's own child");
    c.expect_closed(CLOSE_TIMEOUT);
    srv.assert_no_panic();
}
