//! The CGI-program handler outside a FastCGI server: plain CGI/1.1 (the
//! request in our environment, the body on stdin, the response on
//! stdout; DESIGN §2 row 5, §3) and the hand test `--request`, in process
//! or sent with `--connect` to a FastCGI server (ours, or Debian's
//! fcgiwrap when installed; DESIGN §7).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cgi_program::{
    fixture, fixture_str, open_fds, signal_masks, GLIBC_INTERNAL,
};
use crate::util::{
    bin, compare_bytes, kill_group, pattern_bytes, show, CgiResponse, Server,
    Stream, TempDir,
};

/// Hard time limit for one run of the binary.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// What one run of the binary produced.
struct Run {
    cmdline: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\ncommand: {}\nstatus: {:?}\n----- stdout -----\n{}\n\
             ----- stderr -----\n{}",
            self.cmdline,
            self.status,
            show(&self.stdout, 3000),
            self.stderr
        )
    }

    fn cgi(&self) -> CgiResponse {
        CgiResponse::parse(&self.stdout)
    }

    /// Fails unless the exit status is `code`.
    fn expect_code(&self, code: i32) {
        if self.status.code() != Some(code) {
            self.fail(&format!("want exit status {code}"));
        }
    }

    /// Fails unless stdout is a CGI response with HTTP status `want`.
    fn expect_status(&self, want: u16) -> CgiResponse {
        let cgi = self.cgi();
        if cgi.status() != Some(want) {
            self.fail(&format!(
                "want HTTP status {want}, got {:?}",
                cgi.status()
            ));
        }
        cgi
    }

    /// The `env:NAME=VALUE` lines of `env.cgi`'s page.
    fn vars(&self) -> BTreeMap<String, String> {
        String::from_utf8_lossy(&self.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("env:"))
            .filter_map(|l| l.split_once('='))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn expect_var(&self, name: &str, want: Option<&str>) {
        let v = self.vars();
        if v.get(name).map(String::as_str) != want {
            self.fail(&format!(
                "{name}: want {want:?}, the program saw {:?}",
                v.get(name)
            ));
        }
    }

    /// Fails unless some stderr line contains every one of `needles`.
    fn expect_stderr_line(&self, needles: &[&str]) -> String {
        match self
            .stderr
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            Some(l) => l.to_string(),
            None => {
                self.fail(&format!("no stderr line with all of {needles:?}"))
            }
        }
    }
}

/// How stdin is set up for a run.
enum Input<'a> {
    /// /dev/null.
    Null,
    /// A pipe carrying these bytes, then closed.
    Bytes(&'a [u8]),
    /// A pipe carrying these bytes and held open until the process
    /// exits, as a web server may do.
    BytesHeldOpen(&'a [u8]),
}

/// Runs the binary with `args`; `configure` sets the environment and
/// working directory. Kills it (by pid and its own process group) if it
/// runs longer than [`RUN_TIMEOUT`].
fn run(
    args: &[&str],
    input: Input,
    configure: impl FnOnce(&mut Command),
) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    run_cmd(cmd, input, configure)
}

/// Like [`run`], but through `sh`, which first opens fd 7 on a file
/// without close-on-exec: what a careless parent leaves open.
fn run_with_fd7(
    args: &[&str],
    input: Input,
    configure: impl FnOnce(&mut Command),
) -> Run {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"exec 7</etc/hostname; exec "$0" "$@""#)
        .arg(bin())
        .args(args);
    run_cmd(cmd, input, configure)
}

fn run_cmd(
    mut cmd: Command,
    input: Input,
    configure: impl FnOnce(&mut Command),
) -> Run {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.stdin(match input {
        Input::Null => Stdio::null(),
        _ => Stdio::piped(),
    });
    configure(&mut cmd);
    let mut cmdline = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            cmdline.push_str(&format!("{}={:?} ", k.to_string_lossy(), v));
        }
    }
    cmdline.push_str(&format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    ));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let writer = match input {
        Input::Null => None,
        Input::Bytes(b) | Input::BytesHeldOpen(b) => {
            let hold = matches!(input, Input::BytesHeldOpen(_));
            let data = b.to_vec();
            let mut w = child.stdin.take().expect("stdin");
            Some(thread::spawn(move || {
                let _ = w.write_all(&data);
                if hold {
                    Some(w)
                } else {
                    None
                }
            }))
        }
    };
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    let status = wait_or_kill(&mut child, RUN_TIMEOUT);
    // A held-open stdin is closed only now.
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr =
        String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    match status {
        Some(status) => Run {
            cmdline,
            status,
            stdout,
            stderr,
        },
        None => Run {
            cmdline,
            status: ExitStatus::from_raw(9),
            stdout,
            stderr,
        }
        .fail(&format!("still running after {RUN_TIMEOUT:?}; killed")),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut b = Vec::new();
        let _ = r.read_to_end(&mut b);
        b
    })
}

/// Waits for `child` to exit; on timeout kills it and its group and
/// returns None.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            kill_group(child);
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A plain CGI invocation: a clean environment with `PATH`,
/// `GATEWAY_INTERFACE` and the request's variables `vars`.
fn cgi(args: &[&str], vars: &[(&str, &str)], input: Input) -> Run {
    run(args, input, |c| {
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        for (n, v) in vars {
            c.env(n, v);
        }
    })
}

/// `--request` (and its friends) run from `cwd`, stdin `input`.
fn hand(args: &[&str], input: Input, cwd: &Path) -> Run {
    run(args, input, |c| {
        c.env_remove("GATEWAY_INTERFACE").current_dir(cwd);
    })
}

fn fixtures_dir() -> PathBuf {
    fixture("")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------
// Plain CGI
// ---------------------------------------------------------------------

#[test]
fn cgi_mode_serves_the_request_in_its_environment() {
    let script = fixture_str("env.cgi");
    let r = cgi(
        &[],
        &[
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", "a=1&b=2"),
            ("SCRIPT_FILENAME", &script),
            ("SCRIPT_NAME", "/env.cgi"),
            ("HTTP_X_PROBE", "probe-value"),
        ],
        Input::Bytes(b""),
    );
    r.expect_code(0);
    r.expect_status(200);
    r.expect_var("QUERY_STRING", Some("a=1&b=2"));
    r.expect_var("HTTP_X_PROBE", Some("probe-value"));
    r.expect_var("GATEWAY_INTERFACE", Some("CGI/1.1"));
    // It ran in the script's directory.
    let cwd = fs::canonicalize(fixtures_dir()).unwrap();
    let want = format!("cwd:{}", cwd.display());
    if !String::from_utf8_lossy(&r.stdout)
        .lines()
        .any(|l| l == want)
    {
        r.fail(&format!("want the line {want:?}"));
    }
}

#[test]
fn cgi_mode_runs_a_fixed_program() {
    let r = cgi(
        &["--", &fixture_str("env.cgi"), "arg-one"],
        &[("REQUEST_METHOD", "GET")],
        Input::Bytes(b""),
    );
    r.expect_code(0);
    r.expect_status(200);
    if !String::from_utf8_lossy(&r.stdout).contains("arg:arg-one\n") {
        r.fail("argument missing");
    }
}

#[test]
fn cgi_mode_missing_script_filename_is_404() {
    let missing =
        path_str(&fixtures_dir().join("no-such-script.cgi")).to_string();
    let r = cgi(
        &[],
        &[("REQUEST_METHOD", "GET"), ("SCRIPT_FILENAME", &missing)],
        Input::Bytes(b""),
    );
    r.expect_status(404);
    r.expect_stderr_line(&[&missing, "404"]);
}

#[test]
fn cgi_mode_never_runs_itself_as_the_script() {
    // Apache ScriptAlias straight to the binary, no PROGRAM: the script
    // the server names is fcgi-launch; running it would recurse.
    let me = bin();
    let me = path_str(&me).to_string();
    let r = cgi(
        &[],
        &[("REQUEST_METHOD", "GET"), ("SCRIPT_FILENAME", &me)],
        Input::Bytes(b""),
    );
    r.expect_status(500);
    r.expect_stderr_line(&["fcgi-launch itself", "PROGRAM"]);
}

#[test]
fn cgi_mode_502_puts_the_program_stderr_and_exit_status_on_our_stderr() {
    let prog = fixture_str("no-headers.cgi");
    let r = cgi(
        &["--", &prog],
        &[("REQUEST_METHOD", "GET")],
        Input::Bytes(b""),
    );
    let page = r.expect_status(502);
    if page.body.is_empty() {
        r.fail("502 without a body");
    }
    // The program's own lines, prefixed with its name ...
    r.expect_stderr_line(&[&format!(
        "{prog}: no-headers: cannot open database"
    )]);
    // ... and the log line with its exit status and stderr tail.
    r.expect_stderr_line(&[&prog, "exit status 3", "giving up"]);
}

#[test]
fn cgi_mode_script_name_fixes_path_info() {
    let r = cgi(
        &["--script-name", "/app", "--", &fixture_str("env.cgi")],
        &[
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/app/x%20y/z?q=1"),
            ("SCRIPT_NAME", "/app/app.cgi"),
            ("PATH_INFO", "/x y/z"),
        ],
        Input::Bytes(b""),
    );
    r.expect_status(200);
    r.expect_var("SCRIPT_NAME", Some("/app"));
    r.expect_var("PATH_INFO", Some("/x y/z"));
}

#[test]
fn cgi_mode_reads_no_more_than_content_length_from_stdin() {
    // The web server keeps our stdin open after the body: the program
    // must still see the end of its body after CONTENT_LENGTH bytes.
    let r = cgi(
        &["--", &fixture_str("stdin-eof.cgi")],
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "5")],
        Input::BytesHeldOpen(b"helloEXTRA BYTES NOT IN THE BODY"),
    );
    r.expect_code(0);
    let page = r.expect_status(200);
    if page.body != b"helloEOF seen\n" {
        r.fail("want the body \"hello\" then EOF");
    }
}

#[test]
fn cgi_mode_without_content_length_gives_the_program_no_body() {
    let r = cgi(
        &["--", &fixture_str("stdin-eof.cgi")],
        &[("REQUEST_METHOD", "GET")],
        Input::BytesHeldOpen(b"not a body"),
    );
    let page = r.expect_status(200);
    if page.body != b"EOF seen\n" {
        r.fail("want an empty body");
    }
}

#[test]
fn cgi_mode_echoes_a_large_body() {
    let body = pattern_bytes(3 * 1024 * 1024, 31);
    let len = body.len().to_string();
    let r = cgi(
        &["--", &fixture_str("echo.cgi")],
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", &len)],
        Input::Bytes(&body),
    );
    r.expect_code(0);
    let page = r.expect_status(200);
    if let Some(d) = compare_bytes(&page.body, &body) {
        r.fail(&format!("echo: {d}"));
    }
}

#[test]
fn cgi_mode_program_gets_no_fd_but_0_1_2() {
    let r = run_with_fd7(
        &["--", &fixture_str("fds.cgi")],
        Input::Bytes(b""),
        |c| {
            c.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("GATEWAY_INTERFACE", "CGI/1.1")
                .env("REQUEST_METHOD", "GET");
        },
    );
    r.expect_code(0);
    let fds = open_fds(&String::from_utf8_lossy(&r.cgi().body));
    if fds != ["0", "1", "2"] {
        r.fail(&format!("the program's open fds: {fds:?}"));
    }
}

#[test]
fn cgi_mode_program_starts_with_no_signal_blocked_or_ignored() {
    // Started as a web server started in the background by a shell
    // would start it: SIGINT and SIGQUIT ignored.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"trap '' INT QUIT; exec "$0" "$@""#)
        .arg(bin())
        .args(["--", &fixture_str("signals.cgi")]);
    let r = run_cmd(cmd, Input::Null, |c| {
        c.env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", "GET");
    });
    r.expect_code(0);
    let page = String::from_utf8_lossy(&r.cgi().body).into_owned();
    match signal_masks(&page) {
        Some((0, ign)) if ign & !GLIBC_INTERNAL == 0 => {}
        m => r.fail(&format!("signal masks (blocked, ignored): {m:x?}")),
    }
}

// ---------------------------------------------------------------------
// --request, in process
// ---------------------------------------------------------------------

#[test]
fn request_prints_the_raw_response_and_exits_0() {
    let root = fixtures_dir();
    let r = hand(
        &[
            "--request",
            "GET /env.cgi/extra/path?x=1",
            "--root",
            path_str(&root),
        ],
        Input::Null,
        &root,
    );
    r.expect_code(0);
    if !r.stdout.starts_with(b"Content-Type: text/plain\r\n\r\n") {
        r.fail("stdout is not the script's raw response");
    }
    r.expect_var("REQUEST_METHOD", Some("GET"));
    r.expect_var("QUERY_STRING", Some("x=1"));
    r.expect_var("SCRIPT_NAME", Some("/env.cgi"));
    r.expect_var("PATH_INFO", Some("/extra/path"));
    r.expect_var("REQUEST_URI", Some("/env.cgi/extra/path?x=1"));
    r.expect_var("SCRIPT_FILENAME", Some(&fixture_str("env.cgi")));
}

#[test]
fn request_for_a_missing_script_exits_1_with_a_one_line_reason() {
    let root = fixtures_dir();
    let r = hand(
        &["--request", "GET /missing.cgi", "--root", path_str(&root)],
        Input::Null,
        &root,
    );
    r.expect_code(1);
    r.expect_status(404);
    let last = r.stderr.lines().last().unwrap_or("");
    if !(last.starts_with("fcgi-launch") && last.contains("404")) {
        r.fail("the last stderr line should give the reason (404)");
    }
}

#[test]
fn request_with_a_failing_program_exits_1_and_says_why() {
    let prog = fixture_str("no-headers.cgi");
    let dir = TempDir::new();
    let r = hand(
        &["--request", "GET /", "--", &prog],
        Input::Null,
        dir.path(),
    );
    r.expect_code(1);
    r.expect_status(502);
    r.expect_stderr_line(&[&prog, "exit status 3", "cannot open database"]);
    let last = r.stderr.lines().last().unwrap_or("");
    if !(last.starts_with("fcgi-launch") && last.contains("502")) {
        r.fail("the last stderr line should give the reason (502)");
    }
}

#[test]
fn request_redirect_exits_0() {
    let dir = TempDir::new();
    let r = run(
        &["--request", "GET /", "--", &fixture_str("location.cgi")],
        Input::Null,
        |c| {
            c.env("LOCATION", "https://example.org/")
                .current_dir(dir.path());
        },
    );
    r.expect_code(0);
    r.expect_status(302);
}

#[test]
fn request_with_a_header_block_over_1_kib_exits_0() {
    // A long Location (an OAuth redirect, say) makes a header block
    // longer than 1 KiB; its status still decides the exit status.
    let dir = TempDir::new();
    let url = format!("https://example.org/cb?state={}", "s".repeat(1500));
    let r = run(
        &["--request", "GET /", "--", &fixture_str("location.cgi")],
        Input::Null,
        |c| {
            c.env("LOCATION", &url).current_dir(dir.path());
        },
    );
    r.expect_code(0);
    r.expect_status(302);
}

/// The hand test runs the program "with the same environment and
/// errors as the real thing" (DESIGN §7): no fd the launcher inherited
/// reaches it either.
#[test]
fn request_program_gets_no_fd_but_0_1_2() {
    let dir = TempDir::new();
    let r = run_with_fd7(
        &["--request", "GET /", "--", &fixture_str("fds.cgi")],
        Input::Null,
        |c| {
            c.current_dir(dir.path());
        },
    );
    r.expect_code(0);
    let fds = open_fds(&String::from_utf8_lossy(&r.cgi().body));
    if fds != ["0", "1", "2"] {
        r.fail(&format!("the program's open fds: {fds:?}"));
    }
}

#[test]
fn request_headers_become_http_variables() {
    let dir = TempDir::new();
    let r = hand(
        &[
            "--request",
            "POST /form",
            "-H",
            "X-Probe: probe value",
            "-H",
            "Accept: text/html",
            "-H",
            "Accept: application/json",
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "-H",
            "Host: example.org",
            "-d",
            "a=1",
            "--",
            &fixture_str("env.cgi"),
        ],
        Input::Null,
        dir.path(),
    );
    r.expect_code(0);
    r.expect_var("HTTP_X_PROBE", Some("probe value"));
    r.expect_var("HTTP_ACCEPT", Some("text/html, application/json"));
    r.expect_var("HTTP_HOST", Some("example.org"));
    r.expect_var("CONTENT_TYPE", Some("application/x-www-form-urlencoded"));
    r.expect_var("CONTENT_LENGTH", Some("3"));
    r.expect_var("REQUEST_METHOD", Some("POST"));
}

#[test]
fn request_data_from_a_file_is_the_body() {
    let dir = TempDir::new();
    let body = pattern_bytes(200_000, 4242);
    let file = dir.join("body.bin");
    fs::write(&file, &body).unwrap();
    let at = format!("@{}", file.display());
    let r = hand(
        &[
            "--request",
            "PUT /up",
            "-d",
            &at,
            "--",
            &fixture_str("echo.cgi"),
        ],
        Input::Null,
        dir.path(),
    );
    r.expect_code(0);
    let page = r.expect_status(200);
    if let Some(d) = compare_bytes(&page.body, &body) {
        r.fail(&format!("-d @FILE: {d}"));
    }
}

#[test]
fn request_data_from_stdin_and_literal_data_are_the_body() {
    let dir = TempDir::new();
    let echo = fixture_str("echo.cgi");
    let r = hand(
        &["--request", "POST /", "-d", "@-", "--", &echo],
        Input::Bytes(b"from stdin\0\xff"),
        dir.path(),
    );
    r.expect_code(0);
    if r.cgi().body != b"from stdin\0\xff" {
        r.fail("-d @-: body differs");
    }
    let r = hand(
        &["--request", "POST /", "-d", "literal data", "--", &echo],
        Input::Null,
        dir.path(),
    );
    r.expect_code(0);
    if r.cgi().body != b"literal data" {
        r.fail("-d DATA: body differs");
    }
}

// ---------------------------------------------------------------------
// --connect
// ---------------------------------------------------------------------

#[test]
fn connect_to_a_running_server_prints_its_answer_and_exits_0() {
    let srv = Server::unix(&["--", &fixture_str("env.cgi")]);
    let addr = format!("unix:{}", srv.socket_path().display());
    let r = hand(
        &[
            "--connect",
            &addr,
            "--request",
            "GET /some/path?k=v",
            "-H",
            "X-Probe: p",
        ],
        Input::Null,
        srv.dir(),
    );
    r.expect_code(0);
    r.expect_status(200);
    r.expect_var("REQUEST_URI", Some("/some/path?k=v"));
    r.expect_var("QUERY_STRING", Some("k=v"));
    r.expect_var("HTTP_X_PROBE", Some("p"));
}

#[test]
fn connect_to_a_server_answering_404_exits_1() {
    let srv = Server::unix(&[]);
    let addr = format!("unix:{}", srv.socket_path().display());
    let root = TempDir::new();
    let r = hand(
        &[
            "--connect",
            &addr,
            "--request",
            "GET /missing.cgi",
            "--root",
            path_str(root.path()),
        ],
        Input::Null,
        srv.dir(),
    );
    r.expect_code(1);
    r.expect_status(404);
    let last = r.stderr.lines().last().unwrap_or("");
    if !last.contains("404") {
        r.fail("the last stderr line should give the reason (404)");
    }
}

#[test]
fn connect_where_nothing_listens_exits_1_with_one_line() {
    let dir = TempDir::new();
    let sock = dir.join("nobody.sock");
    let addr = format!("unix:{}", sock.display());
    let r = hand(
        &["--connect", &addr, "--request", "GET /"],
        Input::Null,
        dir.path(),
    );
    r.expect_code(1);
    let lines: Vec<&str> = r.stderr.lines().collect();
    if lines.len() != 1
        || !lines[0].starts_with("fcgi-launch")
        || !lines[0].contains("nobody.sock")
    {
        r.fail("want exactly one stderr line naming the address");
    }
    if !r.stdout.is_empty() {
        r.fail("nothing should be printed on stdout");
    }
}

/// Where Debian installs fcgiwrap (`/usr/sbin`, often not in a user's
/// PATH), or anywhere in PATH.
fn find_fcgiwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("fcgiwrap"))
        .find(|p| p.is_file())
}

/// fcgiwrap on a unix socket in its own temp dir; killed on drop.
struct Fcgiwrap {
    child: Child,
    sock: PathBuf,
    _dir: TempDir,
}

impl Drop for Fcgiwrap {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

impl Fcgiwrap {
    fn start(exe: &Path) -> Fcgiwrap {
        let dir = TempDir::new();
        let sock = dir.join("fcgiwrap.sock");
        let child = Command::new(exe)
            .arg("-s")
            .arg(format!("unix:{}", sock.display()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let mut w = Fcgiwrap {
            child,
            sock,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = crate::util::Addr::Unix(w.sock.clone());
        while Stream::connect(&addr).is_err() {
            if let Ok(Some(s)) = w.child.try_wait() {
                panic!("fcgiwrap exited at start: {s:?}");
            }
            if Instant::now() >= deadline {
                panic!("fcgiwrap not accepting on {}", w.sock.display());
            }
            thread::sleep(Duration::from_millis(20));
        }
        w
    }
}

#[test]
fn connect_to_fcgiwrap_runs_its_script() {
    let Some(exe) = find_fcgiwrap() else {
        if std::env::var_os("FCGI_LAUNCH_REQUIRE_PEERS").is_some() {
            panic!("fcgiwrap is not installed and FCGI_LAUNCH_REQUIRE_PEERS is set");
        }
        eprintln!("skipped: fcgiwrap is not installed");
        return;
    };
    let w = Fcgiwrap::start(&exe);
    let addr = format!("unix:{}", w.sock.display());
    let root = fixtures_dir();
    let r = hand(
        &[
            "--connect",
            &addr,
            "--request",
            "GET /env.cgi?x=1",
            "--root",
            path_str(&root),
        ],
        Input::Null,
        &root,
    );
    r.expect_code(0);
    r.expect_status(200);
    r.expect_var("QUERY_STRING", Some("x=1"));
    r.expect_var("SCRIPT_NAME", Some("/env.cgi"));
    // A POST body reaches the script through fcgiwrap.
    let r = hand(
        &[
            "--connect",
            &addr,
            "--request",
            "POST /echo.cgi",
            "-d",
            "posted",
            "--root",
            path_str(&root),
        ],
        Input::Null,
        &root,
    );
    r.expect_code(0);
    if r.cgi().body != b"posted" {
        r.fail("echo through fcgiwrap");
    }
    // A script that fails is not a success.
    let r = hand(
        &[
            "--connect",
            &addr,
            "--request",
            "GET /no-headers.cgi",
            "--root",
            path_str(&root),
        ],
        Input::Null,
        &root,
    );
    r.expect_code(1);
}
