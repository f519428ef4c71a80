//! Shared by the tests that deploy fcgi-launch behind real web servers
//! with the very configuration files of `packaging/examples/` (DESIGN §8):
//! finding the peer programs (a missing one skips its test, or fails it
//! when `FCGI_LAUNCH_REQUIRE_PEERS` is set, as in CI), turning an example
//! file into the config a test runs (substituting its documented paths
//! and ports), a small HTTP/1.0 client, and the checks every deployment
//! must pass against the sample app `packaging/examples/app.cgi`.

// Each deployment module uses the helpers it needs.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};

use crate::util::{describe_status, Server, STARTUP_TIMEOUT};
use std::thread;
use std::time::{Duration, Instant};

/// Hard limit for one HTTP exchange (50 MB through a CGI script).
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// True if and only if missing peers must fail tests (CI sets it).
pub fn peers_required() -> bool {
    std::env::var_os("FCGI_LAUNCH_REQUIRE_PEERS").is_some()
}

/// The path of program `name` (searched in PATH, then the sbin
/// directories Debian puts daemons in). None, after saying so on stderr,
/// if it is not installed and peers are not required; panics if they are.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(
        ["/usr/sbin", "/sbin", "/usr/local/sbin"]
            .iter()
            .map(PathBuf::from),
    );
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    if peers_required() {
        panic!(
            "{name} is required (FCGI_LAUNCH_REQUIRE_PEERS is set) but not \
             installed"
        );
    }
    eprintln!("SKIP: {name} is not installed");
    None
}

/// A file of `packaging/examples/`.
pub fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/examples")
        .join(rel)
}

/// The text of example `rel` with each `(from, to)` substitution made.
/// Every `from` must occur in the file: an example that drifts from what
/// its test substitutes fails the test instead of silently testing less.
pub fn render(rel: &str, subs: &[(&str, &str)]) -> String {
    let path = example(rel);
    let mut text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for (from, to) in subs {
        assert!(
            text.contains(from),
            "{} no longer contains {from:?}, which its test substitutes",
            path.display()
        );
        text = text.replace(from, to);
    }
    text
}

/// A free TCP port on 127.0.0.1 (a race is possible; callers retry).
pub fn free_port() -> u16 {
    crate::util::free_port()
}

/// An HTTP response.
#[derive(Debug)]
pub struct Http {
    /// The status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Http {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 exchange with 127.0.0.1:`port` (1.0, so no server
/// chunks the answer).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> io::Result<Http> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         User-Agent: fcgi-launch-tests\r\n"
    );
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // Large bodies from another thread: the server may answer while we
    // still send, and neither side must wait on the other.
    let writer = (!body.is_empty()).then(|| {
        let mut w = s.try_clone().expect("clone socket");
        let data = body.to_vec();
        thread::spawn(move || w.write_all(&data))
    });
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    if let Some(w) = writer {
        // A server may answer an error before reading the whole body.
        let _ = w.join();
    }
    parse_http(&raw)
}

fn parse_http(raw: &[u8]) -> io::Result<Http> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{why}: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            ),
        )
    };
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Http {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// Waits until something answers HTTP on `port`.
pub fn wait_http(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match http(port, "GET", "/", b"") {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("nothing answers HTTP on {port}: {e}"))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// FNV-1a over `bytes`: a fingerprint to compare large bodies.
pub fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `n` bytes of the sample app's download pattern (`?download=N`).
pub fn download_pattern(n: usize) -> Vec<u8> {
    b"fcgi-launch sample download pattern\n"
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// `n` bytes that are not a repeating text, for uploads.
pub fn upload_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A deployment of the sample app behind a web server, as a test sees it.
pub struct Site<'a> {
    /// What is being tested, for messages ("nginx at /yourapplication").
    pub what: &'a str,
    /// The web server's HTTP port on 127.0.0.1.
    pub port: u16,
    /// URL path of the app: requests go to `{app}/hello/world` etc.
    pub app: &'a str,
    /// `SCRIPT_NAME` the app must see.
    pub script_name: &'a str,
    /// The web server's error log, where the app's stderr must land.
    pub error_log: &'a Path,
    /// Everything worth printing when a check fails (server logs).
    pub dump: &'a dyn Fn() -> String,
}

impl Site<'_> {
    /// The app's own URL: its mount point, `/` for the root.
    fn base(&self) -> &str {
        if self.app.is_empty() {
            "/"
        } else {
            self.app
        }
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{}: {msg}\n{}", self.what, (self.dump)())
    }

    fn get(&self, method: &str, path: &str, body: &[u8]) -> Http {
        match http(self.port, method, path, body) {
            Ok(r) => r,
            Err(e) => self.fail(&format!("{method} {path}: {e}")),
        }
    }

    fn expect_ok(&self, r: &Http, what: &str) {
        if r.status != 200 {
            self.fail(&format!(
                "{what}: status {}, body {:?}",
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(500)])
            ));
        }
    }

    /// The sample page: status, body, `SCRIPT_NAME`, `PATH_INFO`, query.
    pub fn check_page(&self) {
        let url = format!("{}/hello/world?x=1", self.app);
        let r = self.get("GET", &url, b"");
        self.expect_ok(&r, &url);
        let text = r.text();
        for want in [
            "Hello from app.cgi".to_string(),
            format!("SCRIPT_NAME={}\n", self.script_name),
            "PATH_INFO=/hello/world\n".to_string(),
            "QUERY_STRING=x=1\n".to_string(),
            "REQUEST_METHOD=GET\n".to_string(),
        ] {
            if !text.contains(&want) {
                self.fail(&format!("GET {url}: no {want:?} in {text:?}"));
            }
        }
    }

    /// A 10 MB upload comes back byte for byte.
    pub fn check_upload(&self) {
        let body = upload_bytes(10 << 20);
        let url = format!("{}?echo", self.base());
        let r = self.get("POST", &url, &body);
        self.expect_ok(&r, "10 MB upload");
        if r.body.len() != body.len() || fnv64(&r.body) != fnv64(&body) {
            self.fail(&format!(
                "10 MB upload: {} bytes back, hash {:x}, sent hash {:x}",
                r.body.len(),
                fnv64(&r.body),
                fnv64(&body)
            ));
        }
    }

    /// A 50 MB download arrives whole.
    pub fn check_download(&self) {
        let n = 50 << 20;
        let url = format!("{}?download={n}", self.base());
        let r = self.get("GET", &url, b"");
        self.expect_ok(&r, "50 MB download");
        let want = download_pattern(n);
        if r.body.len() != n || fnv64(&r.body) != fnv64(&want) {
            self.fail(&format!(
                "50 MB download: {} bytes, hash {:x}, want {n} bytes, hash \
                 {:x}",
                r.body.len(),
                fnv64(&r.body),
                fnv64(&want)
            ));
        }
    }

    /// The app's stderr lands in the web server's error log.
    pub fn check_stderr(&self) {
        let token = format!("tok{}x{}", std::process::id(), self.port);
        let url = format!("{}?stderr={token}", self.base());
        let r = self.get("GET", &url, b"");
        self.expect_ok(&r, "stderr request");
        let want = format!("app.cgi stderr {token}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = fs::read(self.error_log).unwrap_or_default();
            if String::from_utf8_lossy(&log).contains(&want) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{want:?} never reached the error log {}",
                    self.error_log.display()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// 200 requests at once, every one answered right.
    pub fn check_concurrency(&self) {
        let n = 200;
        let barrier = Arc::new(Barrier::new(n));
        let port = self.port;
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let url = format!("{}/c/{i}", self.app);
                thread::spawn(move || {
                    barrier.wait();
                    let r = http(port, "GET", &url, b"")
                        .map_err(|e| format!("GET {url}: {e}"))?;
                    let want = format!("PATH_INFO=/c/{i}\n");
                    if r.status != 200 || !r.text().contains(&want) {
                        return Err(format!(
                            "GET {url}: status {}, body {:?}",
                            r.status,
                            r.text()
                        ));
                    }
                    Ok(())
                })
            })
            .collect();
        let errors: Vec<String> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap_or(Err("panicked".into())).err())
            .collect();
        if !errors.is_empty() {
            self.fail(&format!(
                "{} of {n} concurrent requests failed; first: {}",
                errors.len(),
                errors[0]
            ));
        }
    }

    /// Every check of a deployment.
    pub fn check_all(&self) {
        self.check_page();
        self.check_upload();
        self.check_download();
        self.check_stderr();
        self.check_concurrency();
    }
}

// ---------------------------------------------------------------------
// Processes a test started indirectly
// ---------------------------------------------------------------------

/// A process found in /proc, known by pid and start time, so that a
/// reused pid is never taken for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    start: u64,
    pub cmdline: String,
}

/// State, parent pid and start time of `pid`, from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start
    // after the last ')'.  Then: state, ppid, ..., starttime (the 20th).
    let fields: Vec<&str> =
        s.get(s.rfind(')')? + 1..)?.split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(1)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
    ))
}

impl Proc {
    /// The live (not zombie) children of `parent`.
    pub fn children(parent: u32) -> Vec<Proc> {
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter_map(|pid: u32| {
                let (state, ppid, start) = proc_stat(pid)?;
                (ppid == parent && state != 'Z').then(|| Proc {
                    pid,
                    start,
                    cmdline: fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|b| {
                            String::from_utf8_lossy(&b).replace('\0', " ")
                        })
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// True if and only if this very process still runs (a zombie is
    /// over: only its reaping is left to do).
    pub fn alive(&self) -> bool {
        matches!(proc_stat(self.pid),
            Some((state, _, start)) if start == self.start && state != 'Z')
    }

    /// The real user id, from /proc/PID/status.
    pub fn uid(&self) -> Option<u32> {
        proc_uid(self.pid)
    }
}

/// The real user id of `pid`, from /proc/PID/status.
pub fn proc_uid(pid: u32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Processes a test started indirectly (a daemon's children, which may
/// live in process groups of their own, out of reach of the `Server`
/// guard): `wait_gone` checks that they ended; on drop, any still alive
/// is killed by pid.
#[derive(Default)]
pub struct Leftovers {
    procs: Mutex<Vec<Proc>>,
}

impl Leftovers {
    /// Adds `procs` to those watched.
    pub fn add(&self, procs: &[Proc]) {
        let mut all = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
    }

    /// Waits until every watched process has ended; `Err` names those
    /// still alive after `timeout`.
    pub fn wait_gone(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let alive: Vec<Proc> = self
                .procs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|p| p.alive())
                .cloned()
                .collect();
            if alive.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "still running {timeout:?} after their daemon stopped: \
                     {alive:?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs.iter().filter(|p| p.alive()) {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &p.pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Waits until something answers HTTP on `port`; `Err` if `server`
/// exits first or after `STARTUP_TIMEOUT`.
pub fn wait_answering(server: &Server, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(s) = server.try_status() {
            return Err(format!("{} before answering", describe_status(s)));
        }
        match http(port, "GET", "/", b"") {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("nothing answers HTTP on {port}: {e}"))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The last 20 KB of a log file.
pub fn tail_of(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => {
            let s =
                String::from_utf8_lossy(&b[b.len().saturating_sub(20_000)..]);
            s.into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
