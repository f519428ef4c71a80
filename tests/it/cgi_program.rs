//! The CGI-program handler (DESIGN §3, §4, §11) in FastCGI mode: a fixed
//! PROGRAM or the request's `SCRIPT_FILENAME`, run for each request by a
//! server on a unix socket and driven by the harness's own client. The
//! programs are the `sh` scripts in `tests/fixtures/`; each test names
//! the behaviour it checks.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::fcgi;
use crate::util::{
    compare_bytes, pattern_bytes, show, Addr, CgiResponse, Conn, Response,
    Server, Stream, TempDir, STARTUP_TIMEOUT,
};

/// Time limit for an expected log line to show up.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a program must be gone after the request that ran it ended
/// (abort, timeout, or normal end).
const KILL_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------
// Fixtures and helpers
// ---------------------------------------------------------------------

/// Path of a fixture script.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Path of a fixture script, as a string for argv and params.
pub fn fixture_str(name: &str) -> String {
    fixture(name)
        .to_str()
        .expect("fixture path is UTF-8")
        .to_string()
}

/// Copies fixture `name` to `dir/as_name` with permissions `mode`.
fn install(name: &str, dir: &Path, as_name: &str, mode: u32) -> PathBuf {
    let dest = dir.join(as_name);
    fs::copy(fixture(name), &dest)
        .unwrap_or_else(|e| panic!("copy {name} to {}: {e}", dest.display()));
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
        .expect("chmod");
    dest
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A server started with a custom environment: `Server::start` with our
/// own `--bind` on a unix socket in its directory.
struct Launched {
    srv: Server,
    addr: Addr,
}

impl Launched {
    fn new(args: &[&str], env: &[(&str, &str)]) -> Launched {
        let dir = TempDir::new();
        let sock = dir.join("s");
        let bind = format!("unix:{}", sock.display());
        let srv = Server::start(dir, |c| {
            c.arg("--bind").arg(&bind).args(args);
            for (n, v) in env {
                c.env(n, v);
            }
        });
        let addr = Addr::Unix(sock);
        if let Err(e) = wait_accepting(&addr, || srv.try_status().is_some()) {
            srv.fail(&e);
        }
        Launched { srv, addr }
    }

    fn connect(&self) -> Conn {
        match Stream::connect(&self.addr) {
            Ok(s) => Conn::new(s, Some(self.srv.info().clone())),
            Err(e) => self.srv.fail(&format!("connect: {e}")),
        }
    }
}

/// Waits until a connection to `addr` succeeds; Err if the server exits
/// first or takes too long.
fn wait_accepting(
    addr: &Addr,
    mut exited: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if exited() {
            return Err(format!("server exited before accepting on {addr}"));
        }
        if Stream::connect(addr).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("server not accepting on {addr}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One request with no body on a fresh connection.
fn get(c: &mut Conn, params: &[(&str, &str)]) -> Response {
    c.request(1, params, b"")
}

/// Fails unless `r` completed normally with HTTP status `want`; returns
/// the parsed CGI response.
fn expect_status(c: &Conn, r: &Response, want: u16) -> CgiResponse {
    c.check_complete(r);
    let cgi = r.cgi();
    if cgi.status() != Some(want) {
        c.fail(&format!(
            "want status {want}, got {:?}; stdout: {}; stderr: {}",
            cgi.status(),
            show(&r.stdout, 600),
            show(&r.stderr, 600)
        ));
    }
    cgi
}

/// The `env:NAME=VALUE` lines of `env.cgi`'s page.
fn vars(r: &Response) -> BTreeMap<String, String> {
    r.stdout_str()
        .lines()
        .filter_map(|l| l.strip_prefix("env:"))
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The lines of `env.cgi`'s page that start with `prefix`, without it.
fn lines_with(r: &Response, prefix: &str) -> Vec<String> {
    r.stdout_str()
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::to_string)
        .collect()
}

/// Fails unless the program saw `name` set to `want` (None: unset).
fn expect_var(c: &Conn, r: &Response, name: &str, want: Option<&str>) {
    let v = vars(r);
    if v.get(name).map(String::as_str) != want {
        c.fail(&format!(
            "{name}: want {want:?}, the program saw {:?}; its page:\n{}",
            v.get(name),
            r.stdout_str()
        ));
    }
}

/// Waits for file `p` to exist and returns its trimmed contents.
fn wait_file(p: &Path, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = fs::read_to_string(p) {
            return Some(s.trim().to_string());
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The state letter and parent of process `pid` from /proc/PID/stat;
/// None if there is no such process.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if and only if `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Waits until every pid in `pids` is dead (gone or a zombie left for
/// its new parent); returns the ones still alive after `timeout`.
fn wait_dead(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let live: Vec<u32> =
            pids.iter().copied().filter(|&p| alive(p)).collect();
        if live.is_empty() || Instant::now() >= deadline {
            return live;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Children of `parent`, with their state letters.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match proc_stat(pid) {
            Some((state, ppid)) if ppid == parent => Some((pid, state)),
            _ => None,
        })
        .collect()
}

/// Kills what a failed test left behind: each pid and, for a program
/// the launcher started (the leader of its own process group), its
/// group. Only processes the test caused to exist.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            // The group id stays taken while the group has members, so
            // it cannot name someone else's processes.
            let mut targets = vec![format!("-{pid}")];
            if alive(*pid) {
                targets.push(pid.to_string());
            }
            for target in targets {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &target])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Reads the pid files `names` that a script writes into `dir`.
fn read_pids(c: &Conn, dir: &Path, names: &[&str]) -> Vec<u32> {
    names
        .iter()
        .map(|n| {
            let p = dir.join(n);
            match wait_file(&p, Duration::from_secs(10)) {
                Some(s) => s.parse().unwrap_or_else(|_| {
                    c.fail(&format!("{}: not a pid: {s:?}", p.display()))
                }),
                None => c.fail(&format!(
                    "the script never wrote {} (did it start?)",
                    p.display()
                )),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------
// What runs
// ---------------------------------------------------------------------

#[test]
fn fixed_program_runs_with_its_arguments_in_the_launcher_directory() {
    let env = fixture_str("env.cgi");
    let srv = Server::unix(&["--", &env, "one two", "", "-x", "--three"]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    expect_status(&c, &r, 200);
    let args = lines_with(&r, "arg:");
    if args != ["one two", "", "-x", "--three"] {
        c.fail(&format!("arguments: got {args:?}"));
    }
    let cwd = lines_with(&r, "cwd:");
    let want = fs::canonicalize(srv.dir()).unwrap();
    if cwd != [path_str(&want)] {
        c.fail(&format!(
            "working directory: got {cwd:?}, want the launcher's own {want:?}"
        ));
    }
    expect_var(&c, &r, "REQUEST_METHOD", Some("GET"));
}

/// A worker that waits on a quiet kept connection for its next request
/// (it does so while the other worker is idle) is sent back to waiting
/// for work when the other worker gets busy, so new work is answered at
/// once rather than after that wait (2 s) ends.
#[test]
fn a_worker_waiting_on_a_quiet_connection_yields_to_new_work() {
    let marks = TempDir::new();
    let started = marks.join("slow-started");
    let script = format!(
        "if [ \"$QUERY_STRING\" = slow ]; then : > '{}'; sleep 10; fi; \
         printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$QUERY_STRING\"",
        started.display()
    );
    let srv = Server::unix(&["-w", "2", "--", "/bin/sh", "-c", &script]);
    let query = |q| [("REQUEST_METHOD", "GET"), ("QUERY_STRING", q)];
    // A: answered, then kept open and quiet.
    let mut a = srv.connect();
    let r = get(&mut a, &query("a"));
    assert_eq!(expect_status(&a, &r, 200).body, b"a\n", "{}", srv.dump());
    // Give A's worker time to start waiting on A (it does so only while
    // the other worker is idle, so B must not come first).
    thread::sleep(Duration::from_millis(200));
    // B: runs for 10 s on the other worker.
    let mut b = srv.connect();
    b.begin_responder(1);
    b.params(1, &query("slow"));
    b.stdin(1, b"");
    if wait_file(&started, STARTUP_TIMEOUT).is_none() {
        srv.fail("the slow request never started");
    }
    // C: a new connection while one worker runs B and the other waits
    // on A.
    let t = Instant::now();
    let mut c = srv.connect();
    let r = get(&mut c, &query("c"));
    let took = t.elapsed();
    assert_eq!(expect_status(&c, &r, 200).body, b"c\n", "{}", srv.dump());
    if took >= Duration::from_secs(1) {
        srv.fail(&format!(
            "C was answered after {took:?}: the worker waiting on A's \
             connection was not sent back to take new work"
        ));
    }
    // A is still served.
    let r = a.request(2, &query("a2"), b"");
    assert_eq!(expect_status(&a, &r, 200).body, b"a2\n", "{}", srv.dump());
    drop(b);
    srv.assert_no_panic();
}

#[test]
fn fixed_program_is_served_over_tcp_too() {
    let srv = Server::tcp(&["--", &fixture_str("hello.cgi")]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    let page = expect_status(&c, &r, 200);
    assert_eq!(page.body, b"hello\n", "{}", srv.dump());
}

#[test]
fn program_name_without_a_slash_is_found_in_path() {
    let dirs = format!("/nonexistent-dir:{}", fixture("").display());
    let path = format!("{dirs}:{}", std::env::var("PATH").unwrap_or_default());
    let work = TempDir::new();
    // Run from elsewhere with --chdir: the lookup is in PATH, not in
    // either working directory.
    let srv = Launched::new(
        &["--chdir", path_str(work.path()), "--", "env.cgi", "one"],
        &[("PATH", &path)],
    );
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    expect_status(&c, &r, 200);
    // argv[0] stays as given; the arguments follow it.
    if lines_with(&r, "arg:") != ["one"] {
        c.fail(&format!("arguments: {}", r.stdout_str()));
    }
}

#[test]
fn program_name_not_in_path_stops_the_launcher_at_start_up() {
    let dir = TempDir::new();
    let sock = format!("unix:{}", dir.join("s").display());
    let srv = Server::start(dir, |c| {
        c.args(["--bind", &sock, "--", "no-such-fcgi-launch-program"])
            .env("PATH", "/nonexistent-a:/nonexistent-b");
    });
    let status = srv.expect_exit(LOG_TIMEOUT);
    if status.code() != Some(2) {
        srv.fail(&format!("want exit status 2, got {status:?}"));
    }
    let err = srv.stderr();
    for want in ["no-such-fcgi-launch-program", "PATH", "/nonexistent-b"] {
        if !err.contains(want) {
            srv.fail(&format!("stderr does not name {want:?}"));
        }
    }
}

/// The `SigBlk` and `SigIgn` masks that `signals.cgi` printed.
pub fn signal_masks(page: &str) -> Option<(u64, u64)> {
    let mask = |name: &str| {
        let line = page.lines().find(|l| l.starts_with(name))?;
        u64::from_str_radix(line[name.len()..].trim(), 16).ok()
    };
    Some((mask("SigBlk:")?, mask("SigIgn:")?))
}

/// Bits of glibc's internal signals 32 and 33 in a /proc signal mask:
/// glibc's posix_spawn leaves them ignored, and every glibc program sets
/// its own handlers for them.
pub const GLIBC_INTERNAL: u64 = 0b11 << 31;

#[test]
fn program_starts_with_no_signal_blocked_or_ignored() {
    // The launcher ignores SIGPIPE and its workers change their signal
    // masks; none of that may reach a program, and neither may SIGQUIT,
    // which the shell that started the launcher ignored.
    let dir = TempDir::new();
    let sock = dir.join("s");
    let bind = format!("unix:{}", sock.display());
    let srv = Server::spawn(dir, Path::new("/bin/sh"), |c| {
        c.arg("-c")
            .arg(r#"trap '' QUIT; exec "$0" "$@""#)
            .arg(crate::util::bin())
            .args(["--bind", &bind, "-w", "2", "--"])
            .arg(fixture("signals.cgi"));
    });
    let addr = Addr::Unix(sock);
    if let Err(e) = wait_accepting(&addr, || srv.try_status().is_some()) {
        srv.fail(&e);
    }
    for _ in 0..3 {
        let stream = Stream::connect(&addr).expect("connect");
        let mut c = Conn::new(stream, Some(srv.info().clone()));
        let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
        expect_status(&c, &r, 200);
        match signal_masks(&r.stdout_str()) {
            Some((0, ign)) if ign & !GLIBC_INTERNAL == 0 => {}
            m => c.fail(&format!("signal masks (blocked, ignored): {m:x?}")),
        }
    }
}

#[test]
fn relative_program_path_is_taken_from_the_chdir_directory() {
    let work = TempDir::new();
    install("env.cgi", work.path(), "run.cgi", 0o755);
    let srv =
        Server::unix(&["--chdir", path_str(work.path()), "--", "./run.cgi"]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    expect_status(&c, &r, 200);
}

#[test]
fn script_filename_runs_that_script_in_its_own_directory() {
    let root = TempDir::new();
    let script = install("env.cgi", root.path(), "page.cgi", 0o755);
    let srv = Server::unix(&[]);
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_FILENAME", path_str(&script)),
            ("SCRIPT_NAME", "/page.cgi"),
        ],
    );
    expect_status(&c, &r, 200);
    let cwd = lines_with(&r, "cwd:");
    let want = fs::canonicalize(root.path()).unwrap();
    if cwd != [path_str(&want)] {
        c.fail(&format!("working directory: got {cwd:?}, want {want:?}"));
    }
    expect_var(&c, &r, "SCRIPT_FILENAME", Some(path_str(&script)));
    // No arguments are passed to a script.
    if !lines_with(&r, "arg:").is_empty() {
        c.fail(&format!("script got arguments: {}", r.stdout_str()));
    }
}

#[test]
fn document_root_and_script_name_locate_the_script_without_script_filename() {
    let root = TempDir::new();
    install("env.cgi", root.path(), "found.cgi", 0o755);
    let srv = Server::unix(&[]);
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[
            ("REQUEST_METHOD", "GET"),
            ("DOCUMENT_ROOT", path_str(root.path())),
            ("SCRIPT_NAME", "/found.cgi"),
        ],
    );
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "SCRIPT_NAME", Some("/found.cgi"));
}

#[test]
fn chdir_sets_the_working_directory_of_program_and_script() {
    let work = TempDir::new();
    let want = fs::canonicalize(work.path()).unwrap();
    let env = fixture_str("env.cgi");
    for args in [
        vec!["--chdir", path_str(work.path()), "--", &env],
        vec!["--chdir", path_str(work.path())],
    ] {
        let srv = Server::unix(&args);
        let mut c = srv.connect();
        let r = get(
            &mut c,
            &[("REQUEST_METHOD", "GET"), ("SCRIPT_FILENAME", &env)],
        );
        expect_status(&c, &r, 200);
        let cwd = lines_with(&r, "cwd:");
        if cwd != [path_str(&want)] {
            c.fail(&format!("{args:?}: working directory {cwd:?}"));
        }
    }
}

#[test]
fn program_that_cannot_be_started_gives_502_and_a_log_line() {
    let srv = Server::unix(&["--", "/nonexistent/fcgi-launch-test-prog"]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    expect_status(&c, &r, 502);
    srv.expect_log_line(
        LOG_TIMEOUT,
        &["/nonexistent/fcgi-launch-test-prog", "502"],
    );
}

// ---------------------------------------------------------------------
// Refusals: nothing is executed
// ---------------------------------------------------------------------

/// A document root holding `ok.cgi` (runs), `plain.cgi` (mode 0644),
/// `dir.cgi/` (a directory), `inner-link.cgi` (a symlink to ok.cgi) and
/// `outside.cgi` (a symlink to a script outside the root); and that
/// outside script.
struct Roots {
    root: TempDir,
    outside: TempDir,
    markers: TempDir,
}

impl Roots {
    fn new() -> Roots {
        let r = Roots {
            root: TempDir::new(),
            outside: TempDir::new(),
            markers: TempDir::new(),
        };
        let root = r.root.path();
        install("marker.cgi", root, "ok.cgi", 0o755);
        install("marker.cgi", root, "plain.cgi", 0o644);
        fs::create_dir(root.join("dir.cgi")).unwrap();
        symlink(root.join("ok.cgi"), root.join("inner-link.cgi")).unwrap();
        let out = install("marker.cgi", r.outside.path(), "evil.cgi", 0o755);
        symlink(out, root.join("outside.cgi")).unwrap();
        r
    }

    fn script(&self, name: &str) -> String {
        path_str(&self.root.path().join(name)).to_string()
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.markers.join(name)
    }

    /// Requests `SCRIPT_FILENAME=script` with a marker named after it;
    /// checks the status and whether the marker appeared.
    fn check(
        &self,
        c: &mut Conn,
        script: &str,
        status: u16,
        runs: bool,
    ) -> Response {
        let marker = self.marker(&script.replace('/', "_"));
        let r = get(
            c,
            &[
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_FILENAME", script),
                ("MARKER", path_str(&marker)),
            ],
        );
        expect_status(c, &r, status);
        if marker.exists() != runs {
            c.fail(&format!(
                "{script}: answered {status} but it {} run",
                if runs { "did not" } else { "did" }
            ));
        }
        r
    }
}

#[test]
fn missing_script_is_404_and_logged_with_its_path() {
    let roots = Roots::new();
    let srv = Server::unix(&[]);
    let mut c = srv.connect();
    let missing = roots.script("missing.cgi");
    roots.check(&mut c, &missing, 404, false);
    srv.expect_log_line(LOG_TIMEOUT, &[&missing, "404"]);
    // The same server still runs a script that is there.
    roots.check(&mut c, &roots.script("ok.cgi"), 200, true);
}

#[test]
fn non_executable_script_is_403_and_not_run() {
    let roots = Roots::new();
    let srv = Server::unix(&[]);
    let mut c = srv.connect();
    let plain = roots.script("plain.cgi");
    roots.check(&mut c, &plain, 403, false);
    srv.expect_log_line(LOG_TIMEOUT, &[&plain, "403", "executable"]);
}

#[test]
fn directory_as_script_is_403() {
    let roots = Roots::new();
    let srv = Server::unix(&[]);
    let mut c = srv.connect();
    let dir = roots.script("dir.cgi");
    roots.check(&mut c, &dir, 403, false);
    srv.expect_log_line(LOG_TIMEOUT, &[&dir, "403"]);
}

#[test]
fn relative_script_filename_is_403() {
    let roots = Roots::new();
    // Relative paths that name real scripts from the launcher's own
    // working directory (rel.cgi) and from --chdir (ok.cgi).
    let srv = Server::unix(&["--chdir", path_str(roots.root.path())]);
    install("marker.cgi", srv.dir(), "rel.cgi", 0o755);
    let mut c = srv.connect();
    for rel in ["rel.cgi", "./rel.cgi", "ok.cgi", "../ok.cgi"] {
        roots.check(&mut c, rel, 403, false);
    }
    srv.expect_log_line(LOG_TIMEOUT, &["rel.cgi", "403"]);
}

#[test]
fn symlink_leading_outside_root_is_403_and_not_run() {
    let roots = Roots::new();
    let srv = Server::unix(&["--root", path_str(roots.root.path())]);
    let mut c = srv.connect();
    let outside = roots.script("outside.cgi");
    roots.check(&mut c, &outside, 403, false);
    srv.expect_log_line(LOG_TIMEOUT, &[&outside, "403", "--root"]);
    // The outside script by its own path is refused too.
    let direct = path_str(&roots.outside.join("evil.cgi")).to_string();
    roots.check(&mut c, &direct, 403, false);
    // `..` cannot climb out either.
    let dotdot = format!(
        "{}/../{}/evil.cgi",
        roots.script(""),
        roots.outside.path().file_name().unwrap().to_str().unwrap()
    );
    roots.check(&mut c, &dotdot, 403, false);
    // Inside the root: the script and a symlink to it run.
    roots.check(&mut c, &roots.script("ok.cgi"), 200, true);
    roots.check(&mut c, &roots.script("inner-link.cgi"), 200, true);
}

#[test]
fn without_root_a_symlinked_script_runs() {
    let roots = Roots::new();
    let srv = Server::unix(&[]);
    let mut c = srv.connect();
    roots.check(&mut c, &roots.script("outside.cgi"), 200, true);
}

// ---------------------------------------------------------------------
// Body and output streaming
// ---------------------------------------------------------------------

/// The stdout of `echo.cgi` for `body`.
fn echoed(body: &[u8]) -> Vec<u8> {
    let mut want = b"Content-Type: application/octet-stream\r\n\r\n".to_vec();
    want.extend_from_slice(body);
    want
}

#[test]
fn ten_megabyte_body_is_echoed_byte_for_byte() {
    let srv = Server::unix(&["--", &fixture_str("echo.cgi")]);
    let mut c = srv.connect();
    let body = pattern_bytes(10 * 1024 * 1024, 0xec40);
    let len = body.len().to_string();
    let r = c.request_ok(
        1,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", &len)],
        &body,
    );
    if let Some(d) = compare_bytes(&r.stdout, &echoed(&body)) {
        c.fail(&format!("echo of 10 MB: {d}"));
    }
    // The connection serves the next request.
    let r = c.request_ok(2, &[("CONTENT_LENGTH", "5")], b"again");
    if let Some(d) = compare_bytes(&r.stdout, &echoed(b"again")) {
        c.fail(&format!("second echo: {d}"));
    }
}

#[test]
fn program_writing_10_mb_before_reading_its_10_mb_body_completes() {
    let srv = Server::unix(&["--", &fixture_str("write-before-read.cgi")]);
    let mut c = srv.connect();
    let body = pattern_bytes(10 * 1024 * 1024, 0xdead);
    let len = body.len().to_string();
    // `request` writes the body from a second thread while it reads.
    let r = c.request_ok(
        1,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", &len)],
        &body,
    );
    let mut want = echoed(&vec![0u8; 10 * 1024 * 1024]);
    want.extend_from_slice(&body);
    if let Some(d) = compare_bytes(&r.stdout, &want) {
        c.fail(&format!("write-before-read: {d}"));
    }
}

/// Peak resident memory of `pid` in kB (VmHWM).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes of the large response: 1 GB.
const BIG_RESPONSE: u64 = 1 << 30;

#[test]
fn large_response_streams_through_in_bounded_memory() {
    let srv = Server::unix(&["--", &fixture_str("big-output.cgi")]);
    let size = BIG_RESPONSE;
    let mut c = srv.connect();
    c.begin_responder(1);
    let bytes = size.to_string();
    c.params(1, &[("REQUEST_METHOD", "GET"), ("BYTES", &bytes)]);
    c.stdin(1, b"");
    let head = b"Content-Type: application/octet-stream\r\n\r\n";
    let mut first = Vec::new();
    let mut total: u64 = 0;
    let mut nonzero = false;
    let start = Instant::now();
    loop {
        let rec = c.next_record_for(1, "the large response");
        match rec.rtype {
            fcgi::STDOUT => {
                if first.len() < head.len() {
                    let n = (head.len() - first.len()).min(rec.content.len());
                    first.extend_from_slice(&rec.content[..n]);
                }
                nonzero |= rec.content.iter().any(|&b| b != 0)
                    && total >= head.len() as u64;
                total += rec.content.len() as u64;
            }
            fcgi::STDERR => {
                c.fail(&format!("stderr: {}", show(&rec.content, 300)))
            }
            fcgi::END_REQUEST => break,
            _ => c.fail(&format!("unexpected record {rec:?}")),
        }
    }
    let elapsed = start.elapsed();
    if first != head || nonzero || total != size + head.len() as u64 {
        c.fail(&format!(
            "got {total} stdout bytes (want {}), head {}, non-zero body \
             bytes: {nonzero}",
            size + head.len() as u64,
            show(&first, 100)
        ));
    }
    let peak = peak_rss_kb(srv.pid())
        .unwrap_or_else(|| srv.fail("cannot read VmHWM of the server"));
    if peak > 64 * 1024 {
        srv.fail(&format!(
            "the launcher's peak RSS was {peak} kB streaming {size} bytes \
             (in {elapsed:?}); want under 64 MB"
        ));
    }
}

/// Sends a whole GET request (id 1) for slow.cgi, which prints "first",
/// waits for the file `marker`, then prints "second".
fn send_slow_get(c: &mut Conn, marker: &Path) {
    c.begin_responder(1);
    c.params(
        1,
        &[("REQUEST_METHOD", "GET"), ("MARKER", path_str(marker))],
    );
    c.stdin(1, b"");
}

#[test]
fn output_reaches_the_client_while_the_program_still_runs() {
    let srv = Server::unix(&["--", &fixture_str("slow.cgi")]);
    let marker = srv.dir().join("seen-first");
    let mut c = srv.connect();
    // slow.cgi waits 10 s for the marker; "first" must arrive well
    // before that.
    c.set_read_timeout(Duration::from_secs(5));
    send_slow_get(&mut c, &marker);
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("first") {
        let rec = c.next_record_for(1, "\"first\" while the script waits");
        match rec.rtype {
            fcgi::STDOUT => out.extend_from_slice(&rec.content),
            fcgi::STDERR => {}
            _ => c.fail(&format!(
                "the request ended before \"first\" was seen alone: {rec:?}; \
                 stdout so far: {}",
                show(&out, 300)
            )),
        }
    }
    if String::from_utf8_lossy(&out).contains("second") {
        c.fail("\"second\" came with \"first\": output was held back");
    }
    File::create(&marker).expect("create marker");
    let rest = c.read_response(1);
    c.check_complete(&rest);
    out.extend_from_slice(&rest.stdout);
    let text = String::from_utf8_lossy(&out);
    if !text.ends_with("first\nsecond\n") {
        c.fail(&format!("whole output: {text:?}"));
    }
}

#[test]
fn stdin_is_closed_at_the_end_of_the_body() {
    let srv = Server::unix(&["--", &fixture_str("stdin-eof.cgi")]);
    let mut c = srv.connect();
    c.set_read_timeout(Duration::from_secs(5));
    let r = c.request_ok(
        1,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "9")],
        b"some body",
    );
    let page = expect_status(&c, &r, 200);
    assert_eq!(page.body, b"some bodyEOF seen\n", "{}", srv.dump());
    // And with no body at all.
    let r = c.request_ok(2, &[("REQUEST_METHOD", "GET")], b"");
    assert_eq!(r.cgi().body, b"EOF seen\n", "{}", srv.dump());
}

#[test]
fn program_that_ignores_a_large_body_still_answers() {
    let srv = Server::unix(&["--", &fixture_str("exit-early.cgi")]);
    let mut c = srv.connect();
    let body = pattern_bytes(2 * 1024 * 1024, 77);
    let len = body.len().to_string();
    let r = c.request_ok(
        1,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", &len)],
        &body,
    );
    let page = expect_status(&c, &r, 200);
    assert_eq!(page.body, b"early\n", "{}", srv.dump());
    // The unread rest of the body did not confuse the connection.
    let r = c.request_ok(2, &[("REQUEST_METHOD", "GET")], b"");
    assert_eq!(r.cgi().body, b"early\n", "{}", srv.dump());
    srv.assert_no_panic();
}

// ---------------------------------------------------------------------
// stderr and failures
// ---------------------------------------------------------------------

#[test]
fn stderr_lines_arrive_as_stderr_records_prefixed_with_the_program() {
    let prog = fixture_str("stderr-noise.cgi");
    let srv = Server::unix(&["--", &prog]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    let page = expect_status(&c, &r, 200);
    assert_eq!(page.body, b"quiet body\n", "{}", srv.dump());
    let want = format!("{prog}: noise line one\n{prog}: noise line two\n");
    if r.stderr != want.as_bytes() {
        c.fail(&format!(
            "STDERR stream: got {}, want {}",
            show(&r.stderr, 500),
            show(want.as_bytes(), 500)
        ));
    }
    if r.records.iter().any(|x| {
        x.rtype == fcgi::STDERR
            && String::from_utf8_lossy(&x.content).contains("quiet")
    }) {
        c.fail("stdout in a STDERR record");
    }
    // Without --log-stderr the lines are not in our own log.
    thread::sleep(Duration::from_millis(200));
    if srv.stderr().contains("noise line") {
        srv.fail("program stderr in the log without --log-stderr");
    }
}

#[test]
fn a_flood_of_stderr_lines_all_arrive_and_do_not_block_the_response() {
    let prog = fixture_str("stderr-flood.cgi");
    let srv = Server::unix(&["--", &prog]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    let page = expect_status(&c, &r, 200);
    assert_eq!(page.body, b"done\n", "{}", srv.dump());
    let err = String::from_utf8_lossy(&r.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let first = format!("{prog}: flood line 1");
    let last = format!("{prog}: flood line 20000");
    if lines.len() != 20000
        || lines.first() != Some(&first.as_str())
        || lines.last() != Some(&last.as_str())
    {
        c.fail(&format!(
            "{} STDERR lines; first {:?}, last {:?}",
            lines.len(),
            lines.first(),
            lines.last()
        ));
    }
}

#[test]
fn log_stderr_copies_program_stderr_to_our_log() {
    let prog = fixture_str("stderr-noise.cgi");
    let srv = Server::unix(&["--log-stderr", "--", &prog]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    expect_status(&c, &r, 200);
    if !String::from_utf8_lossy(&r.stderr).contains("noise line two") {
        c.fail("with --log-stderr, STDERR records must still be sent");
    }
    srv.expect_log_line(LOG_TIMEOUT, &[&prog, "noise line one"]);
    srv.expect_log_line(LOG_TIMEOUT, &[&prog, "noise line two"]);
}

#[test]
fn program_exiting_3_without_output_gives_502_and_a_log_with_stderr_tail() {
    let prog = fixture_str("no-headers.cgi");
    let srv = Server::unix(&["--", &prog]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    let page = expect_status(&c, &r, 502);
    if page.body.is_empty() {
        c.fail("502 without a body");
    }
    srv.expect_log_line(
        LOG_TIMEOUT,
        &[&prog, "exit status 3", "cannot open database", "giving up"],
    );
    // The web server's log gets the lines too.
    let err = String::from_utf8_lossy(&r.stderr);
    if !err.contains(&format!("{prog}: no-headers: giving up")) {
        c.fail(&format!("STDERR stream: {err:?}"));
    }
}

#[test]
fn request_pipelined_while_a_program_runs_is_served_after_it() {
    // A keep-alive client that sends its next request (same id, as web
    // servers reuse ids) before the running one has ended.
    let srv = Server::unix(&["--", &fixture_str("slow.cgi")]);
    let (first, second) = (srv.dir().join("m1"), srv.dir().join("m2"));
    fs::write(&second, b"").expect("create the second marker");
    let mut c = srv.connect();
    c.set_read_timeout(Duration::from_secs(5));
    send_slow_get(&mut c, &first);
    let rec = c.next_record_for(1, "the first request's first output");
    if rec.rtype != fcgi::STDOUT {
        c.fail(&format!("expected STDOUT first, got {rec:?}"));
    }
    send_slow_get(&mut c, &second);
    // The running request watches the connection every 50 ms for an
    // abort: let it see the pipelined records before it ends.
    thread::sleep(Duration::from_millis(300));
    fs::write(&first, b"").expect("create the first marker");
    for n in ["first", "second"] {
        if n == "second" {
            c.expect_pipelined(1);
        }
        let r = c.read_response(1);
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        if !out.contains("second\n") || r.protocol_status != 0 {
            c.fail(&format!("the {n} request's answer: {r:?}"));
        }
    }
    srv.assert_no_panic();
}

#[test]
fn program_killed_by_a_signal_gives_502_naming_the_signal() {
    let prog = fixture_str("killed.cgi");
    let srv = Server::unix(&["--", &prog]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    expect_status(&c, &r, 502);
    srv.expect_log_line(
        LOG_TIMEOUT,
        &[&prog, "killed by signal 9", "about to die"],
    );
}

#[test]
fn invalid_header_block_gives_502() {
    for name in ["bad-header.cgi", "bad-status.cgi"] {
        let prog = fixture_str(name);
        let srv = Server::unix(&["--", &prog]);
        let mut c = srv.connect();
        let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
        let page = expect_status(&c, &r, 502);
        if String::from_utf8_lossy(&page.body).contains("body") {
            c.fail(&format!(
                "{name}: program output passed on after a bad head"
            ));
        }
        srv.expect_log_line(LOG_TIMEOUT, &[&prog, "502"]);
    }
}

#[test]
fn absolute_location_without_status_becomes_302_found() {
    let srv = Server::unix(&["--", &fixture_str("location.cgi")]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("LOCATION", "https://example.org/elsewhere")]);
    let page = expect_status(&c, &r, 302);
    if !r.stdout.starts_with(b"Status: 302 Found\r\n") {
        c.fail(&format!("stdout: {}", show(&r.stdout, 300)));
    }
    assert_eq!(
        page.header("Location"),
        Some("https://example.org/elsewhere"),
        "{}",
        srv.dump()
    );
    // A Status given by the program is kept, and not doubled.
    let r = get(
        &mut c,
        &[
            ("LOCATION", "https://example.org/moved"),
            ("STATUS", "301 Moved Permanently"),
        ],
    );
    expect_status(&c, &r, 301);
    let n = r.stdout_str().matches("Status:").count();
    if n != 1 {
        c.fail(&format!("{n} Status lines: {}", show(&r.stdout, 300)));
    }
}

// ---------------------------------------------------------------------
// Timeouts, aborts, reaping
// ---------------------------------------------------------------------

#[test]
fn timeout_gives_504_and_kills_the_program() {
    let pids = TempDir::new();
    let prog = fixture_str("sleep.cgi");
    let srv = Server::unix(&["--timeout", "1", "--", &prog]);
    let mut c = srv.connect();
    let start = Instant::now();
    let r = get(&mut c, &[("PIDDIR", path_str(pids.path()))]);
    let took = start.elapsed();
    let child = read_pids(&c, pids.path(), &["child"]);
    let _reaper = Reaper(child.clone());
    expect_status(&c, &r, 504);
    if took < Duration::from_millis(900) || took > Duration::from_secs(5) {
        c.fail(&format!("504 after {took:?} with --timeout 1"));
    }
    let live = wait_dead(&child, KILL_TIMEOUT);
    if !live.is_empty() {
        c.fail(&format!("program {live:?} still running after its 504"));
    }
    srv.expect_log_line(LOG_TIMEOUT, &[&prog, "504"]);
}

/// `--timeout`: SIGTERM first, SIGKILL only after a grace period, so a
/// program can clean up (DESIGN §3).
#[test]
fn timeout_gives_the_program_a_grace_period_after_sigterm() {
    let dir = TempDir::new();
    let marker = dir.join("cleaned");
    let srv =
        Server::unix(&["--timeout", "1", "--", &fixture_str("trap-term.cgi")]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("MARKER", path_str(&marker))]);
    expect_status(&c, &r, 504);
    if wait_file(&marker, Duration::from_secs(3)).is_none() {
        c.fail(
            "the program's SIGTERM handler (0.5 s of cleanup) never \
             finished: SIGKILL came without the grace period",
        );
    }
}

#[test]
fn timeout_kills_a_program_that_ignores_sigterm() {
    let pids = TempDir::new();
    let srv = Server::unix(&[
        "--timeout",
        "1",
        "--",
        &fixture_str("ignore-term.cgi"),
    ]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("PIDDIR", path_str(pids.path()))]);
    let child = read_pids(&c, pids.path(), &["child"]);
    let _reaper = Reaper(child.clone());
    expect_status(&c, &r, 504);
    let live = wait_dead(&child, KILL_TIMEOUT);
    if !live.is_empty() {
        c.fail(&format!(
            "program {live:?} ignoring SIGTERM outlived its 504"
        ));
    }
}

#[test]
fn timeout_after_the_header_ends_the_response_and_kills_the_program() {
    let dir = TempDir::new();
    let srv =
        Server::unix(&["--timeout", "1", "--", &fixture_str("slow.cgi")]);
    let mut c = srv.connect();
    // The marker never comes: slow.cgi would wait 10 s.
    let r = get(&mut c, &[("MARKER", path_str(&dir.join("never")))]);
    let page = expect_status(&c, &r, 200);
    assert_eq!(page.body, b"first\n", "{}", srv.dump());
    let kids = children_of(srv.pid());
    if !kids.is_empty() {
        c.fail(&format!("children left after the timeout: {kids:?}"));
    }
}

/// Starts `grandchild.cgi` and waits until both its pids are known.
fn start_grandchild_request(c: &mut Conn, dir: &Path) -> Vec<u32> {
    c.begin_responder(1);
    c.params(1, &[("REQUEST_METHOD", "GET"), ("PIDDIR", path_str(dir))]);
    c.stdin(1, b"");
    read_pids(c, dir, &["child", "grandchild"])
}

#[test]
fn abort_request_kills_program_and_grandchild() {
    let dir = TempDir::new();
    let srv = Server::unix(&["--", &fixture_str("grandchild.cgi")]);
    let mut c = srv.connect();
    let pids = start_grandchild_request(&mut c, dir.path());
    let _reaper = Reaper(pids.clone());
    thread::sleep(Duration::from_millis(100));
    if let Some(p) = pids.iter().find(|p| !alive(**p)) {
        c.fail(&format!("pid {p} died before the abort"));
    }
    c.abort(1);
    let r = c.read_response(1);
    if r.protocol_status != fcgi::REQUEST_COMPLETE {
        c.fail(&format!("END_REQUEST after abort: {:?}", r.records));
    }
    let live = wait_dead(&pids, KILL_TIMEOUT);
    if !live.is_empty() {
        c.fail(&format!(
            "still running {KILL_TIMEOUT:?} after ABORT_REQUEST: {live:?} \
             (child, grandchild = {pids:?})"
        ));
    }
}

#[test]
fn closed_connection_kills_program_and_grandchild() {
    let dir = TempDir::new();
    let srv = Server::unix(&["--", &fixture_str("grandchild.cgi")]);
    let mut c = srv.connect();
    let pids = start_grandchild_request(&mut c, dir.path());
    let _reaper = Reaper(pids.clone());
    drop(c);
    let live = wait_dead(&pids, KILL_TIMEOUT);
    if !live.is_empty() {
        srv.fail(&format!(
            "still running {KILL_TIMEOUT:?} after the web server hung up: \
             {live:?} (child, grandchild = {pids:?})"
        ));
    }
    srv.assert_running();
}

/// A client abort while the body is still coming and the program does
/// not read it (so the pipe to its stdin is full).
fn abort_during_unread_body(close: bool) {
    let dir = TempDir::new();
    let srv = Server::unix(&["--", &fixture_str("sleep.cgi")]);
    let mut c = srv.connect();
    c.begin_responder(1);
    c.params(
        1,
        &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_LENGTH", "1000000"),
            ("PIDDIR", path_str(dir.path())),
        ],
    );
    let pids = read_pids(&c, dir.path(), &["child"]);
    let _reaper = Reaper(pids.clone());
    // Two full records: more than a pipe holds.
    let part = pattern_bytes(2 * 65535, 9);
    for chunk in part.chunks(65535) {
        c.send_record(fcgi::STDIN, 1, chunk);
    }
    thread::sleep(Duration::from_millis(200));
    if close {
        drop(c);
    } else {
        c.abort(1);
    }
    let live = wait_dead(&pids, KILL_TIMEOUT);
    if !live.is_empty() {
        srv.fail(&format!(
            "program {live:?} still running {KILL_TIMEOUT:?} after the \
             web server {} while the body was unread",
            if close {
                "hung up"
            } else {
                "sent ABORT_REQUEST"
            }
        ));
    }
}

#[test]
fn abort_request_during_an_unread_body_kills_the_program() {
    abort_during_unread_body(false);
}

#[test]
fn closed_connection_during_an_unread_body_kills_the_program() {
    abort_during_unread_body(true);
}

#[test]
fn no_grandchild_survives_a_completed_request() {
    let dir = TempDir::new();
    let srv = Server::unix(&["--", &fixture_str("daemon.cgi")]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("PIDDIR", path_str(dir.path()))]);
    expect_status(&c, &r, 200);
    let pids = read_pids(&c, dir.path(), &["grandchild"]);
    let _reaper = Reaper(pids.clone());
    let live = wait_dead(&pids, KILL_TIMEOUT);
    if !live.is_empty() {
        c.fail(&format!("grandchild {live:?} outlived its request"));
    }
}

#[test]
fn no_zombie_children_after_a_thousand_requests() {
    let srv = Server::unix(&["--", &fixture_str("hello.cgi")]);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let mut c = srv.connect();
            thread::spawn(move || {
                for i in 0..250u16 {
                    let r = c.request(
                        i % 7 + 1,
                        &[("REQUEST_METHOD", "GET")],
                        b"",
                    );
                    c.check_complete(&r);
                    if r.cgi().body != b"hello\n" {
                        c.fail(&format!(
                            "request {i}: {}",
                            show(&r.stdout, 200)
                        ));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            srv.fail("a client thread failed");
        }
    }
    let kids = children_of(srv.pid());
    if !kids.is_empty() {
        srv.fail(&format!(
            "after 1000 requests the server has children (pid, state): \
             {kids:?}"
        ));
    }
    srv.assert_no_panic();
}

// ---------------------------------------------------------------------
// File descriptors
// ---------------------------------------------------------------------

/// The fd numbers in `fds.cgi`'s listing (`ls -l /proc/PID/fd` lines
/// such as `lr-x------ 1 root root 64 Nov 24 15:58 11 -> /path`),
/// sorted, leaving out the shell's own descriptor for the script it
/// reads.
pub fn open_fds(listing: &str) -> Vec<String> {
    let script = fs::canonicalize(fixture("fds.cgi")).unwrap();
    let mut fds: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter(|(_, target)| {
            let t = Path::new(target);
            t != script && t != fixture("fds.cgi")
        })
        .filter_map(|(left, _)| left.split_whitespace().last())
        .map(str::to_string)
        .collect();
    fds.sort_unstable();
    fds
}

/// A server started through `sh`, which opens fd 7 on a file without
/// close-on-exec before it execs the launcher: what a careless parent
/// leaves open. Killed (by pid and its own process group) on drop.
struct ShStarted {
    child: Child,
    dir: TempDir,
    addr: Addr,
}

impl ShStarted {
    fn new(args: &[&str]) -> ShStarted {
        let dir = TempDir::new();
        let sock = dir.join("s");
        let out = File::create(dir.join("stdout.log")).unwrap();
        let err = File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"exec 7</etc/hostname; exec "$0" "$@""#)
            .arg(crate::util::bin())
            .arg("--bind")
            .arg(format!("unix:{}", sock.display()))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let mut s = ShStarted {
            child,
            dir,
            addr: Addr::Unix(sock),
        };
        let addr = s.addr.clone();
        let child = &mut s.child;
        if let Err(e) =
            wait_accepting(&addr, || matches!(child.try_wait(), Ok(Some(_))))
        {
            panic!("{e}; log:\n{}", s.log());
        }
        s
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for ShStarted {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn program_gets_no_fd_but_0_1_2_even_one_inherited_by_the_launcher() {
    let prog = fixture_str("fds.cgi");
    let srv = ShStarted::new(&["--", &prog]);
    let pid = srv.child.id();
    // The launcher itself does hold the inherited fd 7.
    let fd7 = fs::read_link(format!("/proc/{pid}/fd/7"));
    if fd7.is_err() {
        panic!("the launcher has no fd 7 ({fd7:?}); log:\n{}", srv.log());
    }
    let conn = Stream::connect(&srv.addr).expect("connect");
    let mut c = Conn::new(conn, None);
    let r = c.request_ok(1, &[("REQUEST_METHOD", "GET")], b"");
    let text = String::from_utf8_lossy(&r.cgi().body).into_owned();
    let fds = open_fds(&text);
    if fds != ["0", "1", "2"] {
        panic!(
            "the program's open fds (other than its own script): {fds:?}\n\
             listing:\n{text}\nlog:\n{}",
            srv.log()
        );
    }
}

// ---------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------

#[test]
fn http_proxy_never_reaches_the_program() {
    let srv = Launched::new(
        &["--", &fixture_str("env.cgi")],
        &[("HTTP_PROXY", "http://launcher-env.invalid/")],
    );
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[
            ("REQUEST_METHOD", "GET"),
            ("HTTP_PROXY", "http://request.invalid/"),
            ("HTTP_PROXY_CONNECTION", "kept"),
        ],
    );
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "HTTP_PROXY", None);
    expect_var(&c, &r, "HTTP_PROXY_CONNECTION", Some("kept"));
}

#[test]
fn listen_variables_do_not_reach_the_program() {
    let srv = Launched::new(
        &["--", &fixture_str("env.cgi")],
        &[
            ("LISTEN_PID", "1"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "web"),
            ("LISTEN_OTHER", "also systemd's namespace"),
            ("NOT_LISTEN_X", "kept"),
        ],
    );
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    expect_status(&c, &r, 200);
    for gone in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_OTHER"]
    {
        expect_var(&c, &r, gone, None);
    }
    expect_var(&c, &r, "NOT_LISTEN_X", Some("kept"));
}

#[test]
fn launcher_environment_reaches_the_program_under_request_variables() {
    let srv = Launched::new(
        &["--", &fixture_str("env.cgi")],
        &[
            ("APP_SECRET", "s3cret value"),
            ("SERVER_NAME", "from-launcher"),
        ],
    );
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[("REQUEST_METHOD", "GET"), ("SERVER_NAME", "from-request")],
    );
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "APP_SECRET", Some("s3cret value"));
    expect_var(&c, &r, "SERVER_NAME", Some("from-request"));
}

#[test]
fn env_option_adds_and_overrides_variables() {
    let srv = Launched::new(
        &[
            "--env",
            "APP_MODE=production",
            "--env",
            "SERVER_NAME=fixed.example",
            "--env",
            "WITH_EQUALS=a=b",
            "--",
            &fixture_str("env.cgi"),
        ],
        &[("APP_MODE", "development")],
    );
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[("REQUEST_METHOD", "GET"), ("SERVER_NAME", "from-request")],
    );
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "APP_MODE", Some("production"));
    expect_var(&c, &r, "SERVER_NAME", Some("fixed.example"));
    expect_var(&c, &r, "WITH_EQUALS", Some("a=b"));
}

#[test]
fn clear_env_passes_only_pass_env_and_the_request() {
    let srv = Launched::new(
        &[
            "--clear-env",
            "--pass-env",
            "KEEP_ME",
            "--pass-env",
            "PATH",
            "--env",
            "ADDED=1",
            "--",
            &fixture_str("env.cgi"),
        ],
        &[("KEEP_ME", "kept"), ("DROP_ME", "dropped")],
    );
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[("REQUEST_METHOD", "PUT"), ("QUERY_STRING", "a=1")],
    );
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "KEEP_ME", Some("kept"));
    expect_var(&c, &r, "DROP_ME", None);
    expect_var(&c, &r, "HOME", None);
    expect_var(&c, &r, "ADDED", Some("1"));
    expect_var(&c, &r, "REQUEST_METHOD", Some("PUT"));
    expect_var(&c, &r, "QUERY_STRING", Some("a=1"));
    expect_var(&c, &r, "GATEWAY_INTERFACE", Some("CGI/1.1"));
}

#[test]
fn repeated_http_headers_are_joined_and_cookies_with_semicolons() {
    let srv = Server::unix(&["--", &fixture_str("env.cgi")]);
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[
            ("REQUEST_METHOD", "GET"),
            ("HTTP_ACCEPT", "text/html"),
            ("HTTP_X_FORWARDED_FOR", "10.0.0.1"),
            ("HTTP_COOKIE", "a=1"),
            ("HTTP_ACCEPT", "application/json"),
            ("HTTP_COOKIE", "b=2"),
            ("HTTP_X_FORWARDED_FOR", "10.0.0.2"),
            ("HTTP_COOKIE", "c=3"),
        ],
    );
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "HTTP_ACCEPT", Some("text/html, application/json"));
    expect_var(&c, &r, "HTTP_X_FORWARDED_FOR", Some("10.0.0.1, 10.0.0.2"));
    expect_var(&c, &r, "HTTP_COOKIE", Some("a=1; b=2; c=3"));
}

#[test]
fn repeated_script_name_last_one_wins() {
    let srv = Server::unix(&["--", &fixture_str("env.cgi")]);
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[
            ("SCRIPT_NAME", "/first"),
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", "/second"),
            ("PATH_INFO", "/a"),
            ("PATH_INFO", "/b"),
        ],
    );
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "SCRIPT_NAME", Some("/second"));
    expect_var(&c, &r, "PATH_INFO", Some("/b"));
}

#[test]
fn content_length_minus_one_or_garbage_is_411_and_nothing_runs() {
    let dir = TempDir::new();
    let srv = Server::unix(&["--", &fixture_str("marker.cgi")]);
    let mut c = srv.connect();
    for (i, len) in ["-1", "chunked", "12abc"].into_iter().enumerate() {
        let marker = dir.join(&format!("ran-{i}"));
        let r = c.request(
            1,
            &[
                ("REQUEST_METHOD", "POST"),
                ("CONTENT_LENGTH", len),
                ("MARKER", path_str(&marker)),
            ],
            b"0123456789ab",
        );
        expect_status(&c, &r, 411);
        if marker.exists() {
            c.fail(&format!("CONTENT_LENGTH {len:?}: the program ran"));
        }
    }
    // A real length runs it.
    let marker = dir.join("ran-ok");
    let r = c.request(
        1,
        &[("CONTENT_LENGTH", "2"), ("MARKER", path_str(&marker))],
        b"ok",
    );
    expect_status(&c, &r, 200);
    assert!(marker.exists(), "{}", srv.dump());
}

#[test]
fn gateway_interface_is_cgi_1_1_when_the_web_server_does_not_send_it() {
    let srv = Server::unix(&["--", &fixture_str("env.cgi")]);
    let mut c = srv.connect();
    let r = get(&mut c, &[("REQUEST_METHOD", "GET")]);
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "GATEWAY_INTERFACE", Some("CGI/1.1"));
}

// ---------------------------------------------------------------------
// Path fixes (--script-name) and mod_proxy_fcgi
// ---------------------------------------------------------------------

/// Request params, then the `SCRIPT_NAME` and `PATH_INFO` the program
/// must see.
type PathCase<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

/// Sends each case to a server with `--script-name prefix` and checks
/// what the program saw.
fn check_script_name(prefix: &str, cases: &[PathCase]) {
    let srv = Server::unix(&[
        "--script-name",
        prefix,
        "--",
        &fixture_str("env.cgi"),
    ]);
    let mut c = srv.connect();
    for (params, script_name, path_info) in cases {
        let r = get(&mut c, params);
        expect_status(&c, &r, 200);
        let v = vars(&r);
        let got = (
            v.get("SCRIPT_NAME").map(String::as_str),
            v.get("PATH_INFO").map(String::as_str),
        );
        if got != (Some(*script_name), Some(*path_info)) {
            c.fail(&format!(
                "--script-name {prefix:?} with {params:?}: program saw \
                 (SCRIPT_NAME, PATH_INFO) = {got:?}, want \
                 ({script_name:?}, {path_info:?})"
            ));
        }
    }
}

#[test]
fn script_name_for_nginx_mounted_at_yourapplication() {
    check_script_name(
        "/yourapplication",
        &[
            (
                &[
                    ("REQUEST_URI", "/yourapplication/hello/world?x=1"),
                    ("SCRIPT_NAME", "/yourapplication/hello/world"),
                    ("PATH_INFO", ""),
                ],
                "/yourapplication",
                "/hello/world",
            ),
            (
                &[
                    ("REQUEST_URI", "/yourapplication"),
                    ("SCRIPT_NAME", "/yourapplication"),
                ],
                "/yourapplication",
                "",
            ),
            (
                &[("REQUEST_URI", "/yourapplication/?q=/x")],
                "/yourapplication",
                "/",
            ),
            // Not under the mount point: all of it is PATH_INFO.
            (
                &[("REQUEST_URI", "/yourapplicationx/y")],
                "/yourapplication",
                "/yourapplicationx/y",
            ),
        ],
    );
}

#[test]
fn script_name_empty_for_nginx_at_the_root() {
    check_script_name(
        "",
        &[
            (
                &[
                    ("REQUEST_URI", "/hello/world?x=1"),
                    ("SCRIPT_NAME", "/hello/world"),
                    ("PATH_INFO", ""),
                ],
                "",
                "/hello/world",
            ),
            (&[("REQUEST_URI", "/")], "", "/"),
        ],
    );
}

#[test]
fn script_name_empty_for_lighttpd_at_the_root() {
    check_script_name(
        "",
        &[
            // lighttpd (and a rewrite to app.fcgi): the script's name in
            // SCRIPT_NAME, the path in PATH_INFO, the original in
            // REQUEST_URI.
            (
                &[
                    ("REQUEST_URI", "/hello/world?x=1"),
                    ("SCRIPT_NAME", "/app.fcgi"),
                    ("PATH_INFO", "/hello/world"),
                ],
                "",
                "/hello/world",
            ),
            // lighttpd mounted at "/": the whole path as SCRIPT_NAME.
            (
                &[
                    ("REQUEST_URI", "/hello"),
                    ("SCRIPT_NAME", "/hello"),
                    ("PATH_INFO", ""),
                ],
                "",
                "/hello",
            ),
        ],
    );
}

#[test]
fn script_name_for_an_apache_htaccess_rewrite() {
    check_script_name(
        "/app",
        &[
            (
                &[
                    ("REQUEST_URI", "/app/x/y?z=1"),
                    ("SCRIPT_NAME", "/app/app.cgi"),
                    ("PATH_INFO", "/x/y"),
                ],
                "/app",
                "/x/y",
            ),
            (
                &[("REQUEST_URI", "/app/"), ("SCRIPT_NAME", "/app/app.cgi")],
                "/app",
                "/",
            ),
        ],
    );
}

#[test]
fn path_info_is_decoded_with_encoded_slashes_and_invalid_escapes_kept() {
    check_script_name(
        "/app",
        &[
            (
                &[("REQUEST_URI", "/app/a%2Fb/c%20d?q=%2F")],
                "/app",
                "/a/b/c d",
            ),
            (
                &[("REQUEST_URI", "/app/100%/%zz/%4")],
                "/app",
                "/100%/%zz/%4",
            ),
            // An encoded slash cannot fake the mount point's boundary.
            (&[("REQUEST_URI", "/app%2Fx")], "/app", "/app/x"),
            // An encoded mount point still matches.
            (&[("REQUEST_URI", "/%61pp/x")], "/app", "/x"),
        ],
    );
}

#[test]
fn without_script_name_the_variables_pass_through_untouched() {
    let srv = Server::unix(&["--", &fixture_str("env.cgi")]);
    let mut c = srv.connect();
    let r = get(
        &mut c,
        &[
            ("REQUEST_URI", "/yourapplication/a%2Fb"),
            ("SCRIPT_NAME", "/yourapplication/a/b"),
            ("PATH_INFO", ""),
        ],
    );
    expect_status(&c, &r, 200);
    expect_var(&c, &r, "SCRIPT_NAME", Some("/yourapplication/a/b"));
    expect_var(&c, &r, "PATH_INFO", Some(""));
}

#[test]
fn proxy_fcgi_script_filename_runs_the_path_in_it() {
    let root = TempDir::new();
    let script = install("env.cgi", root.path(), "p.cgi", 0o755);
    let srv = Server::unix(&[]);
    let mut c = srv.connect();
    for host in ["127.0.0.1:9000", "localhost"] {
        let f = format!("proxy:fcgi://{host}{}", script.display());
        let r = get(&mut c, &[("SCRIPT_FILENAME", &f)]);
        expect_status(&c, &r, 200);
        expect_var(&c, &r, "SCRIPT_FILENAME", Some(path_str(&script)));
    }
    // A proxy: name of a file that is not there runs nothing.
    let f = format!(
        "proxy:fcgi://localhost{}/missing.cgi",
        root.path().display()
    );
    let r = get(&mut c, &[("SCRIPT_FILENAME", &f)]);
    expect_status(&c, &r, 404);
    // Nor does one with no path at all.
    let r = get(&mut c, &[("SCRIPT_FILENAME", "proxy:fcgi://localhost")]);
    c.check_complete(&r);
    if matches!(r.cgi().status(), Some(200..=399)) {
        c.fail(&format!(
            "proxy:fcgi:// with no path: {}",
            show(&r.stdout, 300)
        ));
    }
}

/// Output held back while the body comes in never reached the client:
/// a `--timeout` then is still a 504, not an empty answer.
#[test]
fn timeout_while_output_is_held_is_still_504() {
    let srv =
        Server::unix(&["--timeout", "1", "--", &fixture_str("slow.cgi")]);
    let mut c = srv.connect();
    let dir = TempDir::new();
    let marker = dir.join("never");
    // More body than a pipe holds, which slow.cgi never reads.
    let body = pattern_bytes(1 << 20, 3);
    let r = c.request(
        1,
        &[
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_LENGTH", "1048576"),
            ("MARKER", path_str(&marker)),
        ],
        &body,
    );
    expect_status(&c, &r, 504);
}

/// A program that closes its output and runs on: what it wrote reaches
/// the client at once, and a client that then leaves gets it killed.
#[test]
fn program_that_closes_its_output_and_runs_on_is_sent_and_killed() {
    let dir = TempDir::new();
    let srv = Server::unix(&["--", &fixture_str("closes-output.cgi")]);
    let mut c = srv.connect();
    c.begin_responder(1);
    c.params(
        1,
        &[("REQUEST_METHOD", "GET"), ("PIDDIR", path_str(dir.path()))],
    );
    c.stdin(1, b"");
    let pids = read_pids(&c, dir.path(), &["child"]);
    let _reaper = Reaper(pids.clone());
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("bye") {
        let rec = c.next_record("the output written before closing it");
        if rec.rtype == fcgi::STDOUT {
            out.extend_from_slice(&rec.content);
        }
    }
    drop(c);
    let live = wait_dead(&pids, KILL_TIMEOUT);
    if !live.is_empty() {
        srv.fail(&format!(
            "program {live:?} still running {KILL_TIMEOUT:?} after the web \
             server hung up"
        ));
    }
}
