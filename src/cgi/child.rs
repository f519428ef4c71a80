//! One run of a CGI program, from its spawn to its reaping: the request
//! body into its stdin, its stdout (header block checked, then the body
//! untouched) and its stderr (line by line, prefixed) out, all at once so
//! that no pipe can fill up and stall both sides. One thread does it all
//! in a `poll` loop; only a body too large for the stdin pipe gets a
//! thread of its own to feed it, so a plain GET costs no thread at all.
//!
//! Ends early on client abort, `--timeout` or invalid output, and then
//! stops the program's process group: SIGTERM, SIGKILL after
//! [`KILL_GRACE`]. The group always gets a final SIGKILL, so nothing the
//! program started outlives the request.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::response::{self, HeadError, MAX_HEAD};
use crate::api::{AbortWatch, Body, Response, StderrHandle};
use crate::fcgi::record::Status;
use crate::sys;

/// Time between SIGTERM and SIGKILL when a program must stop.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often a waiting request checks for a client abort or a timeout.
const TICK: Duration = Duration::from_millis(50);
/// Lines of a program's stderr quoted when it fails.
const STDERR_TAIL: usize = 5;
/// Longest stderr line passed on in one piece.
const STDERR_LINE: usize = 4096;
/// How long output waits for more before it is sent.
const COALESCE: Duration = Duration::from_micros(200);
/// Size of the pipe reads and of the body chunks.
const CHUNK: usize = 64 * 1024;
/// Size of a run's first reads, until one fills it.
const FIRST_CHUNK: usize = 4096;

/// Grows `buf` to [`CHUNK`] when a read of `n` bytes filled it: more is
/// coming. What it holds is kept.
fn grow(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && n < CHUNK {
        buf.resize(CHUNK, 0);
    }
}

/// How the program's output ended, as far as the response goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its stdout ended.
    Eof,
    /// The client went away.
    Aborted,
    /// `--timeout` passed.
    TimedOut,
    /// Its header block was invalid (already logged).
    BadHead,
    /// It wrote more than [`HOLD_LIMIT`] before its body was in.
    Overflow,
}

/// What a run came to.
pub struct Outcome {
    /// How the output ended.
    pub end: End,
    /// True if and only if a valid header block was sent on.
    pub head_sent: bool,
    /// Its exit status, if it was reaped.
    pub status: Option<ExitStatus>,
    /// Its last stderr lines, for the log.
    pub tail: Vec<String>,
}

/// A running program: its pid (also its process group) and the parent's
/// ends of its stdin, stdout and stderr pipes. Reaped on drop if nobody
/// did (its group killed first), so no run leaves a zombie.
pub struct Process {
    pid: u32,
    status: Option<ExitStatus>,
    /// Writes to its stdin.
    pub stdin: Option<File>,
    /// Reads its stdout.
    pub stdout: Option<File>,
    /// Reads its stderr.
    pub stderr: Option<File>,
}

/// Starts `program` (absolute) with `args` after `argv0`, exactly the
/// environment `env`, in `dir` if given, in a process group of its own,
/// with its stdio on pipes.
pub fn spawn(
    program: &Path,
    argv0: &Path,
    args: &[OsString],
    env: Vec<(OsString, OsString)>,
    dir: Option<&Path>,
) -> io::Result<Process> {
    let c = |bytes: Vec<u8>, what: &str| {
        CString::new(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} contains a NUL byte"),
            )
        })
    };
    let program = c(program.as_os_str().as_bytes().to_vec(), "the path")?;
    let mut argv = vec![c(argv0.as_os_str().as_bytes().to_vec(), "argv[0]")?];
    for a in args {
        argv.push(c(a.as_bytes().to_vec(), "an argument")?);
    }
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in env {
        let mut kv = k.into_vec();
        let name = String::from_utf8_lossy(&kv).into_owned();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(c(kv, &format!("variable {name}"))?);
    }
    let dir = match dir {
        Some(d) => {
            Some(c(d.as_os_str().as_bytes().to_vec(), "the directory")?)
        }
        None => None,
    };
    let (in_r, in_w) = sys::blocking_pipe()?;
    let (out_r, out_w) = sys::blocking_pipe()?;
    let (err_r, err_w) = sys::blocking_pipe()?;
    let pid = sys::spawn(
        &program,
        &argv,
        &envp,
        dir.as_deref(),
        [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
    )?;
    Ok(Process {
        pid,
        status: None,
        stdin: Some(File::from(in_w)),
        stdout: Some(File::from(out_r)),
        stderr: Some(File::from(err_r)),
    })
}

impl Process {
    /// Its pid, which is also its process group's id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status if it has exited (reaping it), None if not.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = sys::wait_child(self.pid, false)?;
        }
        Ok(self.status)
    }

    /// Waits for it to exit and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        match self.status {
            Some(s) => Ok(s),
            None => {
                let s = sys::wait_child(self.pid, true)?.ok_or_else(|| {
                    io::Error::other("waitpid returned no status")
                })?;
                self.status = Some(s);
                Ok(s)
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = sys::kill_group(self.pid, sys::sig::KILL);
            let _ = self.wait();
        }
    }
}

/// "exit status 3", "killed by signal 9".
pub fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
        None => "still running".into(),
    }
}

/// Runs the spawned `child` (its stdio piped, its own process group)
/// for the request: `name` prefixes its stderr lines.
pub fn run(
    child: &mut Process,
    name: &str,
    deadline: Option<Instant>,
    log_stderr: bool,
    body: &mut Body,
    resp: &mut Response,
) -> Outcome {
    let mut st = State {
        name,
        deadline,
        log_stderr,
        err_out: resp.stderr(),
        line: Vec::new(),
        tail: VecDeque::new(),
        stderr: child.stderr.take(),
    };
    let watch = body.abort_watch();
    // One buffer for the run, small until a read fills it: a bodiless
    // request on a tiny program touches one page of it, not sixteen.
    let mut buf = vec![0u8; FIRST_CHUNK];
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stop_feeding = AtomicBool::new(false);
    let (end, head_sent, status) = std::thread::scope(|s| {
        let stop = &stop_feeding;
        let feeder =
            feed_inline(body, stdin, &mut buf).map(|(stdin, left)| {
                // The pipe is full: the program reads slower than the body
                // comes. Feed the rest from a thread while we pump output.
                s.spawn(move || feed(body, stdin, left, stop))
            });
        let body_done = || feeder.as_ref().map_or(true, |f| f.is_finished());
        let (end, head_sent) = match stdout {
            Some(out) => st.pump(out, resp, &watch, &body_done, &mut buf),
            None => (End::Eof, false),
        };
        if end == End::Eof && matches!(child.try_wait(), Ok(None)) {
            // It closed its output and runs on: send what it wrote now.
            let _ = resp.flush();
        }
        let status = st.finish(child, end, &watch, &mut buf);
        // The program is gone; a process outside its group may still
        // hold its stdin open, so the feeder must not wait on it.
        stop_feeding.store(true, Ordering::Relaxed);
        (end, head_sent, status)
    });
    Outcome {
        end,
        head_sent,
        status,
        tail: st.tail.into_iter().collect(),
    }
}

/// Writes the body into the non-blocking stdin pipe until the body ends
/// (then stdin is closed: None) or the pipe is full (Some: the pipe and
/// the bytes not yet written). A program that closes its stdin early gets
/// no more; the rest of the body is read and dropped to keep the
/// connection in step.
fn feed_inline(
    body: &mut Body,
    stdin: Option<File>,
    buf: &mut Vec<u8>,
) -> Option<(File, Vec<u8>)> {
    let mut stdin = stdin;
    let mut nonblocking = false;
    loop {
        let n = match body.read(buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        grow(buf, n);
        let Some(w) = &mut stdin else { continue };
        // Only now: a request without a body (most) costs no fcntl.
        if !nonblocking {
            if sys::set_nonblocking(w.as_raw_fd(), true).is_err() {
                stdin = None;
                continue;
            }
            nonblocking = true;
        }
        let mut done = 0;
        while done < n {
            match w.write(&buf[done..n]) {
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = buf[done..n].to_vec();
                    return stdin.map(|s| (s, left));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    stdin = None;
                    break;
                }
            }
        }
    }
}

/// The rest of [`feed_inline`]'s work, with blocking writes.
///
/// The pipe stays non-blocking: each wait for room is one tick, so the
/// feeder stops when `stop` is set even if something outside the
/// program's process group keeps the pipe open and never reads.
fn feed(body: &mut Body, stdin: File, left: Vec<u8>, stop: &AtomicBool) {
    let mut stdin = Some(stdin);
    let write = |mut data: &[u8], stdin: &mut Option<File>| {
        while let Some(w) = stdin.as_mut().filter(|_| !data.is_empty()) {
            match w.write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stop.load(Ordering::Relaxed) {
                        *stdin = None;
                    } else {
                        let fd = w.as_raw_fd();
                        let _ = sys::wait_fd(fd, sys::Interest::Write, TICK);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => *stdin = None,
            }
        }
    };
    write(&left, &mut stdin);
    let mut buf = vec![0u8; CHUNK];
    loop {
        match body.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => write(&buf[..n], &mut stdin),
        }
    }
}

/// Output beyond this much is held in a temporary file.
const HOLD_MEMORY: usize = 1 << 20;
/// Most output held while the body comes in; a program that writes more
/// before reading its body gets a 502.
pub const HOLD_LIMIT: u64 = 64 << 20;

/// Output held back until the request body is in: in memory, then in an
/// unlinked temporary file, so memory stays bounded.
#[derive(Default)]
struct Held {
    mem: Vec<u8>,
    file: Option<std::fs::File>,
    total: u64,
}

impl Held {
    fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.total += data.len() as u64;
        if self.total > HOLD_LIMIT {
            return Err(io::Error::other("output held past the limit"));
        }
        if self.file.is_none() && self.mem.len() + data.len() <= HOLD_MEMORY {
            self.mem.extend_from_slice(data);
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let mut f = sys::temp_file()?;
                f.write_all(&std::mem::take(&mut self.mem))?;
                self.file.insert(f)
            }
        };
        file.write_all(data)
    }

    /// Sends what was held, in order.
    fn release(self, resp: &mut Response) -> io::Result<()> {
        resp.write_all(&self.mem)?;
        if let Some(mut f) = self.file {
            use std::io::Seek;
            f.seek(io::SeekFrom::Start(0))?;
            io::copy(&mut f, resp)?;
        }
        resp.flush()
    }
}

/// The output side of a run.
struct State<'a> {
    name: &'a str,
    deadline: Option<Instant>,
    log_stderr: bool,
    err_out: StderrHandle,
    /// An incomplete stderr line.
    line: Vec<u8>,
    tail: VecDeque<String>,
    /// Open until it ends.
    stderr: Option<File>,
}

impl State<'_> {
    fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Passes one stderr line on, prefixed with the program's name, and
    /// keeps it for the log of a failure.
    fn stderr_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        let _ = self
            .err_out
            .send(format!("{}: {text}\n", self.name).as_bytes());
        if self.log_stderr {
            log::warn!("{}: {text}", self.name);
        }
        if self.tail.len() == STDERR_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(text.to_string());
    }

    /// Reads what stderr has (it is readable); closes it at its end.
    fn read_stderr(&mut self, buf: &mut Vec<u8>) {
        let Some(err) = &mut self.stderr else { return };
        let n = match err.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => 0,
        };
        if n == 0 {
            self.stderr = None;
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.stderr_line(&line);
            }
            return;
        }
        self.line.extend_from_slice(&buf[..n]);
        grow(buf, n);
        while let Some(nl) = self.line.iter().position(|&c| c == b'\n') {
            let rest = self.line.split_off(nl + 1);
            let line = std::mem::replace(&mut self.line, rest);
            self.stderr_line(&line);
        }
        while self.line.len() >= STDERR_LINE {
            let rest = self.line.split_off(STDERR_LINE);
            let line = std::mem::replace(&mut self.line, rest);
            self.stderr_line(&line);
        }
    }

    fn stderr_fd(&self) -> Option<RawFd> {
        self.stderr.as_ref().map(|e| e.as_raw_fd())
    }

    /// Reads stdout and stderr as they come: the header block first
    /// (checked, and a bare absolute `Location` made a 302 as RFC 3875
    /// §6.2.3 says), then the body passed on untouched and sent as soon
    /// as the program pauses, so a progress page streams. Returns how it
    /// ended and whether a header block went out.
    ///
    /// While the body is still coming in (`body_done` false), output is
    /// held back, in memory and then in a temporary file: nginx stops
    /// sending a request body once the response has begun, so a program
    /// that answers before reading its body would wait for it forever.
    fn pump(
        &mut self,
        mut out: File,
        resp: &mut Response,
        watch: &AbortWatch,
        body_done: &dyn Fn() -> bool,
        buf: &mut Vec<u8>,
    ) -> (End, bool) {
        let mut head: Vec<u8> = Vec::new();
        let mut head_sent = false;
        let fd = out.as_raw_fd();
        let mut last_check = Instant::now();
        let mut held = (!body_done()).then(Held::default);
        let (end, head_sent) = loop {
            if held.is_some() && body_done() {
                if let Err(e) = held.take().map_or(Ok(()), |h| h.release(resp))
                {
                    log::info!("{}: sending held output: {e}", self.name);
                    break (End::Aborted, head_sent);
                }
            }
            if resp.is_aborted() {
                break (End::Aborted, head_sent);
            }
            if self.timed_out() {
                break (End::TimedOut, head_sent);
            }
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                // Once the body is in, the web server sends nothing more
                // unless it aborts the request or hangs up.
                if watch.poll() {
                    break (End::Aborted, head_sent);
                }
            }
            let ready = match sys::poll_readable(
                &[Some(fd), self.stderr_fd()],
                TICK,
            ) {
                Ok(r) => r,
                Err(_) => break (End::Eof, head_sent),
            };
            if ready & 2 != 0 {
                self.read_stderr(buf);
            }
            if ready & 1 == 0 {
                continue;
            }
            let n = match out.read(buf) {
                Ok(0) | Err(_) if held.is_some() => {
                    // Output is complete; the body is still coming.
                    if !self.await_body(resp, watch, body_done) {
                        break (End::Aborted, head_sent);
                    }
                    continue;
                }
                Ok(0) => break (End::Eof, head_sent),
                Ok(n) => {
                    grow(buf, n);
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break (End::Eof, head_sent),
            };
            let mut emit = |data: &[u8], resp: &mut Response| match &mut held {
                Some(h) => h.push(data),
                None => resp.write_all(data),
            };
            let written = if head_sent {
                emit(&buf[..n], resp)
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
                            let _ = emit(b"Status: 302 Found\r\n", resp);
                        }
                        emit(&std::mem::take(&mut head), resp)
                    }
                    Ok(Status::Partial) if head.len() <= MAX_HEAD => Ok(()),
                    Ok(Status::Partial) => {
                        log::error!("{}: {}", self.name, HeadError::TooLong);
                        break (End::BadHead, false);
                    }
                    Err(e) => {
                        log::error!("{}: invalid CGI output, {e}", self.name);
                        break (End::BadHead, false);
                    }
                }
            };
            match written {
                Err(_)
                    if held.as_ref().is_some_and(|h| h.total > HOLD_LIMIT) =>
                {
                    break (End::Overflow, head_sent);
                }
                Err(_) => break (End::Aborted, head_sent),
                Ok(()) => {}
            }
            // Send now unless more output, or its end, comes within a
            // moment: a short program's answer then leaves in one packet
            // with END_REQUEST, and a pause in a long one is seen at once.
            let more = sys::poll_readable(&[Some(fd)], COALESCE)
                .is_ok_and(|r| r != 0);
            if head_sent && held.is_none() && !more && resp.flush().is_err() {
                break (End::Aborted, head_sent);
            }
        };
        // Output still held never reached the client.
        (end, head_sent && held.is_none())
    }

    /// Waits until the body has all come in (the feeder drops what the
    /// program no longer reads); false if the client went away first.
    fn await_body(
        &mut self,
        resp: &Response,
        watch: &AbortWatch,
        body_done: &dyn Fn() -> bool,
    ) -> bool {
        while !body_done() {
            if resp.is_aborted() || watch.poll() || self.timed_out() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Waits for the program and reaps it, reading the rest of its
    /// stderr. After a complete output it may go on tidying up (within
    /// `--timeout` if there is one); after an early end its group gets
    /// SIGTERM, then SIGKILL after [`KILL_GRACE`]. Either way the group
    /// gets a final SIGKILL.
    fn finish(
        &mut self,
        child: &mut Process,
        end: End,
        watch: &AbortWatch,
        buf: &mut Vec<u8>,
    ) -> Option<ExitStatus> {
        let group = child.id();
        let mut status = None;
        if end == End::Eof {
            status =
                self.wait(child, buf, |st| st.timed_out() || watch.poll());
        }
        if status.is_none() {
            let _ = sys::kill_group(group, sys::sig::TERM);
            let grace = Instant::now() + KILL_GRACE;
            status = self.wait(child, buf, |_| Instant::now() >= grace);
        }
        let _ = sys::kill_group(group, sys::sig::KILL);
        let status = status.or_else(|| child.wait().ok());
        // What the program wrote last, now that nothing holds the pipe.
        while let Some(fd) = self.stderr_fd() {
            match sys::poll_readable(&[Some(fd)], Duration::ZERO) {
                Ok(r) if r != 0 => self.read_stderr(buf),
                _ => break,
            }
        }
        status
    }

    /// Reads stderr while waiting for the program to exit, until it does
    /// or `give_up` (asked at most once per tick) says to stop waiting.
    fn wait(
        &mut self,
        child: &mut Process,
        buf: &mut Vec<u8>,
        give_up: impl Fn(&Self) -> bool,
    ) -> Option<ExitStatus> {
        // Readable when the program exits (Linux 5.3+); without it, short
        // pauses, as a program that closed its output is usually gone in
        // tens of microseconds.
        let mut exited = None;
        let mut pause = Duration::from_micros(20);
        let mut last_check: Option<Instant> = None;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if last_check.map_or(true, |t| t.elapsed() >= TICK) {
                if give_up(self) {
                    return None;
                }
                last_check = Some(Instant::now());
            }
            match self.stderr_fd() {
                // Its stderr closes when it exits (or a grandchild holds
                // it: hence the bounded wait).
                Some(fd) => {
                    if let Ok(r) = sys::poll_readable(&[Some(fd)], TICK) {
                        if r != 0 {
                            self.read_stderr(buf);
                        }
                    }
                }
                None => match exited
                    .get_or_insert_with(|| sys::pidfd_open(child.id()).ok())
                {
                    Some(pidfd) => {
                        let fd = pidfd.as_raw_fd();
                        let _ = sys::poll_readable(&[Some(fd)], TICK);
                    }
                    None => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(TICK);
                    }
                },
            }
        }
    }
}
