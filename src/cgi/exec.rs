//! The CGI-program handler (DESIGN §3): runs a program per request with
//! the RFC 3875 environment, streams the body into its stdin while its
//! stdout streams back, sends its stderr to the web server's error log,
//! and turns every way a program can fail into a clear status and log
//! line. Every child is reaped; its whole process group is killed on
//! timeout, on client abort and when it is done.
//!
//! Running the program is `child`'s part. It writes to a [`Response`]
//! and reads the request body; FastCGI records are none of its business.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::child::{self, describe, End};
use super::env::{self, EnvError, EnvPolicy};
use crate::api::{Handler, Request, Response};
use crate::sys;

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
    /// The fixed program's absolute path (found in PATH if it has no `/`).
    program_path: Option<PathBuf>,
    root: Option<PathBuf>,
    base_env: Vec<(OsString, OsString)>,
    running: Mutex<HashSet<u32>>,
    /// Device and inode of our own executable, so we never run ourselves.
    own_exe: Option<(u64, u64)>,
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
        let program_path = match &cfg.program {
            Some((p, _)) => Some(locate(Path::new(p), cfg.chdir.as_deref())?),
            None => None,
        };
        Ok(CgiProgram {
            cfg,
            program_path,
            root,
            base_env: std::env::vars_os().collect(),
            running: Mutex::new(HashSet::new()),
            own_exe: std::env::current_exe()
                .and_then(std::fs::metadata)
                .map(|m| (m.dev(), m.ino()))
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
        if let Some(root) = &self.root {
            let real = std::fs::canonicalize(script)
                .map_err(|e| forbid(format!("script {script:?}: {e}")))?;
            if !real.starts_with(root) {
                return Err(forbid(format!(
                    "script {script:?} resolves to {real:?}, outside --root {root:?}"
                )));
            }
        }
        // Started as a CGI script itself (Apache ScriptAlias to this
        // binary), with no PROGRAM, SCRIPT_FILENAME names us: running it
        // would start us again, and again.
        if self.own_exe == Some((meta.dev(), meta.ino())) {
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

    /// The file to execute for `prog`: the fixed program as found at
    /// start-up, or a script as named (its path is absolute:
    /// `check_script`).
    fn exe<'a>(&'a self, prog: &'a Path) -> &'a Path {
        self.program_path.as_deref().unwrap_or(prog)
    }

    fn spawn(
        &self,
        prog: &Path,
        args: &[OsString],
        dir: Option<&Path>,
        env: Vec<(OsString, OsString)>,
    ) -> io::Result<child::Process> {
        let child = child::spawn(self.exe(prog), prog, args, env, dir)?;
        lock(&self.running).insert(child.id());
        Ok(child)
    }
}

/// Where a PROGRAM without a `/` is looked for when our PATH is unset
/// (glibc's `execvp` default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The absolute path of the fixed PROGRAM, found once, at start-up.
///
/// A relative path (with a `/`) is taken from the program's working
/// directory, `--chdir DIR` if given, as `exec` after a `cd` would. A name
/// without a `/` is looked up in our own PATH as a shell does (an empty
/// entry is our working directory), whatever PATH the program gets; an
/// error names the directories searched.
fn locate(program: &Path, chdir: Option<&Path>) -> io::Result<PathBuf> {
    if program.is_absolute() {
        return Ok(program.to_path_buf());
    }
    let cwd = std::env::current_dir()?;
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(cwd.join(chdir.unwrap_or(Path::new("."))).join(program));
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| OsString::from(DEFAULT_PATH));
    std::env::split_paths(&path)
        .map(|dir| cwd.join(dir).join(program))
        .find(|p| p.is_file() && sys::is_executable(p))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "PROGRAM {program:?} is not an executable file in any \
                     directory of PATH ({})",
                    path.to_string_lossy()
                ),
            )
        })
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
                let place = dir.as_ref().map_or(String::new(), |d| {
                    format!(" (in {})", d.display())
                });
                log::error!(
                    "cannot run {:?}{place}: {e}; answered 502",
                    self.exe(&prog).display().to_string()
                );
                return error_page(
                    resp,
                    502,
                    "Bad Gateway",
                    "the program could not be started",
                );
            }
        };
        let deadline = self.cfg.timeout.map(|t| Instant::now() + t);
        let pid = child.id();
        let out = child::run(
            &mut child,
            &name,
            deadline,
            self.cfg.log_stderr,
            req.body(),
            resp,
        );
        lock(&self.running).remove(&pid);
        let status = describe(out.status);
        let tail = tail_text(&out.tail);
        match out.end {
            End::Aborted => {
                log::info!(
                    "{name}: client went away; killed the program ({status})"
                );
                Ok(())
            }
            End::TimedOut if !out.head_sent => {
                log::warn!("{name}: no response within --timeout; killed ({status}); answered 504{tail}");
                error_page(
                    resp,
                    504,
                    "Gateway Timeout",
                    "the program took too long",
                )
            }
            End::TimedOut => {
                log::warn!("{name}: still running at --timeout; killed ({status}){tail}");
                Ok(())
            }
            End::Overflow => {
                log::error!(
                    "{name}: wrote more than {} MiB before its request body \
                     was in ({status}); answered 502{tail}",
                    child::HOLD_LIMIT >> 20
                );
                error_page(
                    resp,
                    502,
                    "Bad Gateway",
                    "the program wrote too much before reading its request",
                )
            }
            End::BadHead | End::Eof if !out.head_sent => {
                if out.end == End::Eof {
                    log::error!("{name}: ended before a complete header block ({status}); answered 502{tail}");
                } else {
                    log::error!("{name}: killed after invalid output ({status}); answered 502{tail}");
                }
                error_page(
                    resp,
                    502,
                    "Bad Gateway",
                    "the program did not send a valid CGI response",
                )
            }
            _ => {
                if out.status.is_some_and(|s| !s.success()) {
                    log::info!("{name}: {status} after its response{tail}");
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

/// The last stderr lines for a log line.
fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        return "; it wrote nothing on stderr".into();
    }
    let lines: Vec<String> = tail.iter().map(|l| format!("{l:?}")).collect();
    format!("; its last stderr lines: {}", lines.join(" | "))
}
