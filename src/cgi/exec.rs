//! The CGI-program handler (DESIGN §3): runs a program per request with
//! the RFC 3875 environment, streams the body into its stdin while its
//! stdout streams back, sends its stderr to the web server's error log,
//! and turns every way a program can fail into a clear status and log
//! line. Every child is reaped; its whole process group is killed on
//! timeout, on client abort and when it is done.
//!
//! It writes to a [`Response`] and reads a [`Body`]; FastCGI records are
//! none of its business.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::env::{self, EnvError, EnvPolicy};
use super::response::{self, HeadError, MAX_HEAD};
use crate::api::{AbortWatch, Body, Handler, Request, Response, StderrHandle};
use crate::fcgi::record::Status;
use crate::sys::{self, Interest};

/// Time between SIGTERM and SIGKILL when a child must stop.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often a waiting request checks for a client abort or a timeout.
const TICK: Duration = Duration::from_millis(50);
/// Lines of a program's stderr quoted when it fails.
const STDERR_TAIL: usize = 5;
/// Longest stderr line passed on in one piece.
const STDERR_LINE: u64 = 4096;
/// Size of the pipe reads.
const CHUNK: usize = 64 * 1024;

/// Settings of the CGI-program handler.
#[derive(Debug, Clone, Default)]
pub struct CgiConfig {
    /// A fixed program and its arguments; None: run `SCRIPT_FILENAME`.
    pub program: Option<(OsString, Vec<OsString>)>,
    /// `--root`: scripts must resolve inside this directory.
    pub root: Option<PathBuf>,
    /// `--chdir`: the working directory of every program.
    pub chdir: Option<PathBuf>,
    /// The environment rules.
    pub env: EnvPolicy,
    /// `--timeout`: the longest a program may run.
    pub timeout: Option<Duration>,
    /// `--log-stderr`: copy program stderr to our own log as well.
    pub log_stderr: bool,
}

/// Runs a CGI program for each request.
pub struct CgiProgram {
    cfg: CgiConfig,
    root: Option<PathBuf>,
    base_env: Vec<(OsString, OsString)>,
    running: Mutex<HashSet<u32>>,
    /// Our own executable, resolved, so we never run ourselves.
    own_exe: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A refusal before anything runs: status, reason phrase, log detail.
struct Refusal(u16, &'static str, String);

impl CgiProgram {
    /// A handler with `cfg`; the launcher's environment is read now, once.
    pub fn new(cfg: CgiConfig) -> io::Result<CgiProgram> {
        let root = match &cfg.root {
            Some(r) => Some(std::fs::canonicalize(r).map_err(|e| {
                io::Error::new(e.kind(), format!("--root {r:?}: {e}"))
            })?),
            None => None,
        };
        Ok(CgiProgram {
            cfg,
            root,
            base_env: std::env::vars_os().collect(),
            running: Mutex::new(HashSet::new()),
            own_exe: std::env::current_exe()
                .and_then(std::fs::canonicalize)
                .ok(),
        })
    }

    /// Finds what to run: the fixed program, or the request's script
    /// after the 404/403 checks (nothing is executed when they fail).
    fn target(
        &self,
        env: &[(OsString, OsString)],
    ) -> Result<(PathBuf, Vec<OsString>, Option<PathBuf>), Refusal> {
        if let Some((prog, args)) = &self.cfg.program {
            return Ok((
                PathBuf::from(prog),
                args.clone(),
                self.cfg.chdir.clone(),
            ));
        }
        let var =
            |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let script = match var("SCRIPT_FILENAME").filter(|f| !f.is_empty()) {
            Some(f) => PathBuf::from(f),
            None => match (var("DOCUMENT_ROOT"), var("SCRIPT_NAME")) {
                (Some(root), Some(name)) if !name.is_empty() => {
                    let mut p = root.into_vec();
                    p.extend_from_slice(&name.into_vec());
                    PathBuf::from(OsString::from_vec(p))
                }
                _ => {
                    return Err(Refusal(
                        500,
                        "Internal Server Error",
                        "no program to run: the web server sent neither \
                         SCRIPT_FILENAME nor DOCUMENT_ROOT and SCRIPT_NAME \
                         (and no PROGRAM was given)"
                            .into(),
                    ))
                }
            },
        };
        self.check_script(&script)?;
        let dir = self
            .cfg
            .chdir
            .clone()
            .or_else(|| script.parent().map(Path::to_path_buf));
        Ok((script, Vec::new(), dir))
    }

    fn check_script(&self, script: &Path) -> Result<(), Refusal> {
        let forbid = |why: String| Refusal(403, "Forbidden", why);
        if !script.is_absolute() {
            return Err(forbid(format!(
                "script {script:?} is not an absolute path"
            )));
        }
        let meta = match std::fs::metadata(script) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(forbid(format!("script {script:?}: {e}")))
            }
            Err(e) => {
                return Err(Refusal(
                    404,
                    "Not Found",
                    format!("script {script:?}: {e}"),
                ))
            }
        };
        if !meta.is_file() {
            return Err(forbid(format!(
                "script {script:?} is not a regular file"
            )));
        }
        if meta.permissions().mode() & 0o111 == 0
            || !sys::is_executable(script)
        {
            return Err(forbid(format!(
                "script {script:?} is not executable"
            )));
        }
        let real = std::fs::canonicalize(script)
            .map_err(|e| forbid(format!("script {script:?}: {e}")))?;
        if let Some(root) = &self.root {
            if !real.starts_with(root) {
                return Err(forbid(format!(
                    "script {script:?} resolves to {real:?}, outside --root {root:?}"
                )));
            }
        }
        // Started as a CGI script itself (Apache ScriptAlias to this
        // binary), with no PROGRAM, SCRIPT_FILENAME names us: running it
        // would start us again, and again.
        if self.own_exe.as_deref() == Some(real.as_path()) {
            return Err(Refusal(
                500,
                "Internal Server Error",
                format!(
                    "script {script:?} is fcgi-launch itself: run as a CGI \
                     script, give it the PROGRAM to run (-- PROGRAM)"
                ),
            ));
        }
        Ok(())
    }

    fn spawn(
        &self,
        prog: &Path,
        args: &[OsString],
        dir: Option<&Path>,
        env: Vec<(OsString, OsString)>,
    ) -> io::Result<Child> {
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let child = cmd.spawn()?;
        lock(&self.running).insert(child.id());
        Ok(child)
    }
}

/// Writes a short plain-text error page.
fn error_page(
    resp: &mut Response,
    status: u16,
    reason: &str,
    text: &str,
) -> io::Result<()> {
    write!(
        resp,
        "Status: {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         {status} {reason}: {text}\n"
    )
}

/// How a program run ended, as far as the response goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its stdout ended.
    Eof,
    /// The client went away.
    Aborted,
    /// `--timeout` passed.
    TimedOut,
    /// Its header block was invalid.
    BadHead,
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        None => "still running".into(),
    }
}

impl Handler for CgiProgram {
    fn handle(
        &self,
        req: &mut Request,
        resp: &mut Response,
    ) -> io::Result<()> {
        let env = match env::build(&self.base_env, req.params(), &self.cfg.env)
        {
            Ok(env) => env,
            Err(e @ EnvError::UnknownLength(_)) => {
                log::warn!("{e}: answered 411");
                return error_page(
                    resp,
                    411,
                    "Length Required",
                    "send the body with a Content-Length",
                );
            }
        };
        let (prog, args, dir) = match self.target(&env) {
            Ok(t) => t,
            Err(Refusal(status, reason, why)) => {
                log::warn!("{why}: answered {status}, nothing executed");
                return error_page(
                    resp,
                    status,
                    reason,
                    "see the server's error log",
                );
            }
        };
        let name = prog.display().to_string();
        let mut child = match self.spawn(&prog, &args, dir.as_deref(), env) {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "cannot run {name:?} (in {dir:?}): {e}; answered 502"
                );
                return error_page(
                    resp,
                    502,
                    "Bad Gateway",
                    "the program could not be started",
                );
            }
        };
        let run = Run {
            name: &name,
            pid: child.id(),
            deadline: self.cfg.timeout.map(|t| Instant::now() + t),
            tail: Mutex::new(VecDeque::new()),
            log_stderr: self.cfg.log_stderr,
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let err_handle = resp.stderr();
        let (end, head_sent, status) = std::thread::scope(|s| {
            let body = req.body();
            let watch = body.abort_watch();
            s.spawn(move || feed(body, stdin));
            let run = &run;
            s.spawn(move || run.drain_stderr(stderr, &err_handle));
            let (end, head_sent) = match stdout {
                Some(out) => run.pump(out, resp, &watch),
                None => (End::Eof, false),
            };
            let status = run.reap(&mut child, end);
            (end, head_sent, status)
        });
        lock(&self.running).remove(&run.pid);
        let tail = run.tail_text();
        match end {
            End::Aborted => {
                log::info!(
                    "{name}: client went away; killed the program ({})",
                    describe(status)
                );
                Ok(())
            }
            End::TimedOut if !head_sent => {
                log::warn!("{name}: no response within --timeout; killed ({}); answered 504{tail}", describe(status));
                error_page(
                    resp,
                    504,
                    "Gateway Timeout",
                    "the program took too long",
                )
            }
            End::TimedOut => {
                log::warn!(
                    "{name}: still running at --timeout; killed ({}){tail}",
                    describe(status)
                );
                Ok(())
            }
            End::BadHead | End::Eof if !head_sent => {
                if end == End::Eof {
                    log::error!(
                        "{name}: ended before a complete header block ({}); answered 502{tail}",
                        describe(status)
                    );
                }
                error_page(
                    resp,
                    502,
                    "Bad Gateway",
                    "the program did not send a valid CGI response",
                )
            }
            _ => {
                if status.is_some_and(|s| !s.success()) {
                    log::info!(
                        "{name}: {} after its response{tail}",
                        describe(status)
                    );
                }
                Ok(())
            }
        }
    }

    fn stop(&self) {
        for pid in lock(&self.running).drain() {
            let _ = sys::kill_group(pid, sys::sig::KILL);
        }
    }
}

/// Copies the body into the child's stdin and closes it at the end. If
/// the child stops reading, the rest of the body is read and dropped so
/// the connection stays in step.
fn feed(body: &mut Body, stdin: Option<std::process::ChildStdin>) {
    let mut stdin = stdin;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(w) = &mut stdin {
            if w.write_all(&buf[..n]).is_err() {
                stdin = None;
            }
        }
    }
}

/// One program run.
struct Run<'a> {
    name: &'a str,
    pid: u32,
    deadline: Option<Instant>,
    tail: Mutex<VecDeque<String>>,
    log_stderr: bool,
}

impl Run<'_> {
    fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Passes stderr on line by line, prefixed with the program's name,
    /// and keeps the last lines for the log of a failure.
    fn drain_stderr(
        &self,
        stderr: Option<std::process::ChildStderr>,
        out: &StderrHandle,
    ) {
        let Some(stderr) = stderr else { return };
        let mut r = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut r).take(STDERR_LINE).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            let _ = out.send(format!("{}: {text}\n", self.name).as_bytes());
            if self.log_stderr {
                log::warn!("{}: {text}", self.name);
            }
            let mut tail = lock(&self.tail);
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(text.to_string());
        }
    }

    fn tail_text(&self) -> String {
        let tail = lock(&self.tail);
        if tail.is_empty() {
            return "; it wrote nothing on stderr".into();
        }
        let lines: Vec<String> =
            tail.iter().map(|l| format!("{l:?}")).collect();
        format!("; its last stderr lines: {}", lines.join(" | "))
    }

    /// Reads the child's stdout: the header block first (checked, and a
    /// bare absolute `Location` turned into a 302), then the body passed
    /// on untouched. Output is sent as soon as the child pauses, so a
    /// progress page streams. Returns how it ended and whether a header
    /// block went out.
    fn pump(
        &self,
        mut out: ChildStdout,
        resp: &mut Response,
        watch: &AbortWatch,
    ) -> (End, bool) {
        let mut head: Vec<u8> = Vec::new();
        let mut head_sent = false;
        let mut buf = vec![0u8; CHUNK];
        let fd = out.as_raw_fd();
        let mut last_check = Instant::now();
        loop {
            if resp.is_aborted() {
                return (End::Aborted, head_sent);
            }
            if self.timed_out() {
                return (End::TimedOut, head_sent);
            }
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                if watch.poll() {
                    return (End::Aborted, head_sent);
                }
            }
            match sys::wait_fd(fd, Interest::Read, TICK) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return (End::Eof, head_sent),
            }
            let n = match out.read(&mut buf) {
                Ok(0) => return (End::Eof, head_sent),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return (End::Eof, head_sent),
            };
            let written = if head_sent {
                resp.write_all(&buf[..n])
            } else {
                head.extend_from_slice(&buf[..n]);
                match response::parse_head(&head) {
                    Ok(Status::Complete(h, _)) => {
                        head_sent = true;
                        let absolute = h
                            .location
                            .as_deref()
                            .is_some_and(|l| !l.starts_with('/'));
                        if absolute && !h.has_status {
                            let _ = resp.write_all(b"Status: 302 Found\r\n");
                        }
                        resp.write_all(&std::mem::take(&mut head))
                    }
                    Ok(Status::Partial) if head.len() <= MAX_HEAD => Ok(()),
                    Ok(Status::Partial) => {
                        log::error!(
                            "{}: {}; answered 502",
                            self.name,
                            HeadError::TooLong
                        );
                        return (End::BadHead, false);
                    }
                    Err(e) => {
                        log::error!(
                            "{}: invalid CGI output, {e}; answered 502",
                            self.name
                        );
                        return (End::BadHead, false);
                    }
                }
            };
            if written.is_err() {
                return (End::Aborted, head_sent);
            }
            // Send now unless more output is already waiting.
            if head_sent
                && !sys::wait_fd(fd, Interest::Read, Duration::ZERO)
                    .unwrap_or(false)
                && resp.flush().is_err()
            {
                return (End::Aborted, head_sent);
            }
        }
    }

    /// Waits for the child and reaps it. Ended early (abort, timeout,
    /// bad output): SIGTERM to its group, SIGKILL after [`KILL_GRACE`].
    /// Either way the group gets a final SIGKILL, so no grandchild
    /// outlives the request.
    fn reap(&self, child: &mut Child, end: End) -> Option<ExitStatus> {
        let group = self.pid;
        let mut status = None;
        if end == End::Eof {
            // Its output is complete; it may still be tidying up, within
            // --timeout if there is one.
            status = wait_until(child, |_| self.timed_out());
        }
        if status.is_none() {
            let _ = sys::kill_group(group, sys::sig::TERM);
            let grace = Instant::now() + KILL_GRACE;
            status = wait_until(child, |now| now >= grace);
        }
        let _ = sys::kill_group(group, sys::sig::KILL);
        status.or_else(|| child.wait().ok())
    }
}

/// Polls for the child's exit with a growing interval until it exits or
/// `give_up` says to stop waiting.
fn wait_until(
    child: &mut Child,
    give_up: impl Fn(Instant) -> bool,
) -> Option<ExitStatus> {
    let mut pause = Duration::from_micros(100);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if give_up(Instant::now()) {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(TICK);
    }
}
