//! The command line: the getopts table, `--help`, and argv turned into a
//! validated [`Config`]. Touches no socket, environment variable, signal
//! or logger; the man page lists the same options (a test checks it).

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use getopts::{Options, ParsingStyle};

use crate::builtin::Builtin;
use crate::error::{Error, Result};
use crate::listen::BindAddr;
use crate::mode::ForcedMode;

/// Default `--grace`: long enough for a slow page to finish, short
/// enough for `systemctl stop` (whose default timeout is 90 s).
pub const DEFAULT_GRACE_SECS: u64 = 10;
/// Default `--io-timeout`: nginx's own default for reading a FastCGI
/// response is 60 s; a web server never pauses mid-request that long.
pub const DEFAULT_IO_TIMEOUT_SECS: u64 = 60;
/// Default `--max-conns`: parked connections are cheap, file descriptors
/// are the bound (the usual soft limit is 1024).
pub const DEFAULT_MAX_CONNS: usize = 900;

/// Everything the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--mode`
    pub mode: Option<ForcedMode>,
    /// `--bind`
    pub bind: Option<BindAddr>,
    /// `--workers`; None: the documented default.
    pub workers: Option<usize>,
    /// `--builtin`
    pub builtin: Option<Builtin>,
    /// PROGRAM and its ARGS after the options.
    pub program: Vec<OsString>,
    /// `--max-conns`
    pub max_conns: usize,
    /// `--io-timeout`
    pub io_timeout: Duration,
    /// `--grace`
    pub grace: Duration,
    /// `--socket-mode`
    pub socket_mode: Option<u32>,
    /// `--allow` (repeatable)
    pub allow: Vec<IpAddr>,
    /// -v minus -q.
    pub verbosity: i32,
    /// `--root`
    pub root: Option<PathBuf>,
    /// `--chdir`
    pub chdir: Option<PathBuf>,
    /// `--env NAME=VALUE` (repeatable)
    pub env: Vec<(OsString, OsString)>,
    /// `--clear-env`
    pub clear_env: bool,
    /// `--pass-env NAME` (repeatable)
    pub pass_env: Vec<OsString>,
    /// `--timeout`
    pub timeout: Option<Duration>,
    /// `--script-name`
    pub script_name: Option<String>,
    /// `--log-stderr`
    pub log_stderr: bool,
    /// `--request 'METHOD URI'`
    pub request: Option<String>,
    /// `-H` (repeatable)
    pub headers: Vec<String>,
    /// `-d`
    pub data: Option<String>,
    /// `--connect`
    pub connect: Option<BindAddr>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print this help text and exit 0.
    Help(String),
    /// Print the version and exit 0.
    Version,
    /// Serve.
    Run(Box<Config>),
}

/// The one-line synopsis.
pub const USAGE: &str =
    "usage: fcgi-launch [OPTIONS] [--builtin NAME | [--] PROGRAM [ARGS...]]";

fn options() -> Options {
    let mut o = Options::new();
    o.parsing_style(ParsingStyle::StopAtFirstFree);
    o.optopt("b", "bind", "serve FastCGI on ADDR: unix:/PATH, /PATH, ./PATH, tcp:HOST:PORT, HOST:PORT, [V6]:PORT", "ADDR");
    o.optopt(
        "m",
        "mode",
        "force the gateway instead of detecting it: cgi or fastcgi",
        "MODE",
    );
    o.optopt(
        "w",
        "workers",
        "requests served at once (default: 2 per CPU, at least 2)",
        "N",
    );
    o.optopt(
        "",
        "builtin",
        "serve a built-in handler instead of a program: hello, echo or env",
        "NAME",
    );
    o.optopt(
        "",
        "max-conns",
        &format!(
            "connections kept open at once (default {DEFAULT_MAX_CONNS})"
        ),
        "N",
    );
    o.optopt("", "io-timeout", &format!("close a connection stalled mid-request this long (default {DEFAULT_IO_TIMEOUT_SECS})"), "SECS");
    o.optopt("", "grace", &format!("on SIGTERM, let requests finish this long (default {DEFAULT_GRACE_SECS})"), "SECS");
    o.optopt(
        "",
        "socket-mode",
        "permissions of the unix socket made by --bind, in octal",
        "MODE",
    );
    o.optmulti("", "allow", "accept TCP peers only from ADDR (repeatable; adds to FCGI_WEB_SERVER_ADDRS)", "ADDR");
    o.optopt("", "root", "run only scripts that resolve inside DIR; the document root of --request", "DIR");
    o.optopt(
        "",
        "chdir",
        "working directory of the programs (default: the script's directory)",
        "DIR",
    );
    o.optmulti(
        "",
        "env",
        "set NAME=VALUE in the programs' environment (repeatable)",
        "NAME=VALUE",
    );
    o.optflag(
        "",
        "clear-env",
        "do not pass our own environment to the programs",
    );
    o.optmulti(
        "",
        "pass-env",
        "with --clear-env, still pass NAME (repeatable)",
        "NAME",
    );
    o.optopt("", "timeout", "stop a program running longer: SIGTERM, SIGKILL 2 s later; 504 if it sent nothing", "SECS");
    o.optopt("", "script-name", "the application is mounted at PREFIX: sets SCRIPT_NAME to it and PATH_INFO to the rest of the path", "PREFIX");
    o.optflag(
        "",
        "log-stderr",
        "copy the programs' stderr to our own log too",
    );
    o.optopt("", "request", "run one request in process and print the raw CGI response (a hand test)", "'METHOD URI'");
    o.optmulti(
        "H",
        "header",
        "with --request: add a request header (repeatable)",
        "'NAME: VALUE'",
    );
    o.optopt(
        "d",
        "data",
        "with --request: the request body; @FILE reads a file, @- stdin",
        "DATA",
    );
    o.optopt(
        "",
        "connect",
        "with --request: send it to the FastCGI server at ADDR instead",
        "ADDR",
    );
    o.optflagmulti(
        "v",
        "verbose",
        "log more: -v logs each request, -vv debugs",
    );
    o.optflagmulti("q", "quiet", "log less: errors only");
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    o
}

/// The `--help` text.
pub fn help() -> String {
    options().usage(USAGE)
}

fn number<T: std::str::FromStr>(v: &str, opt: &str) -> Result<T> {
    v.parse().map_err(|_| {
        Error::usage(format!("--{opt}: {v:?} is not a valid number"))
    })
}

fn positive(v: &str, opt: &str) -> Result<usize> {
    match number::<usize>(v, opt)? {
        0 => Err(Error::usage(format!("--{opt}: must be at least 1"))),
        n => Ok(n),
    }
}

fn seconds(v: &str, opt: &str) -> Result<Duration> {
    let s: f64 = number(v, opt)?;
    if !(0.0..=1e9).contains(&s) {
        return Err(Error::usage(format!(
            "--{opt}: {v:?} is not a number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[OsString]) -> Result<Command> {
    let m = options()
        .parse(args)
        .map_err(|e| Error::usage(format!("{e}\n{USAGE}")))?;
    if m.opt_present("help") {
        return Ok(Command::Help(help()));
    }
    if m.opt_present("version") {
        return Ok(Command::Version);
    }
    let mode = match m.opt_str("mode").as_deref() {
        None => None,
        Some("cgi") => Some(ForcedMode::Cgi),
        Some("fastcgi") | Some("fcgi") => Some(ForcedMode::FastCgi),
        Some(other) => {
            return Err(Error::usage(format!(
                "--mode: {other:?} is not a mode (cgi or fastcgi)"
            )))
        }
    };
    let builtin = m
        .opt_str("builtin")
        .map(|b| {
            Builtin::from_name(&b).ok_or_else(|| {
                Error::usage(format!("--builtin: {b:?} is not a built-in handler (hello, echo or env)"))
            })
        })
        .transpose()?;
    let program: Vec<OsString> = m.free.iter().map(OsString::from).collect();
    if builtin.is_some() && !program.is_empty() {
        return Err(Error::usage(format!(
            "--builtin and a PROGRAM ({:?}) exclude each other",
            program[0]
        )));
    }
    let socket_mode = m
        .opt_str("socket-mode")
        .map(|v| {
            u32::from_str_radix(&v, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| Error::usage(format!("--socket-mode: {v:?} is not an octal mode such as 0660")))
        })
        .transpose()?;
    let allow = m
        .opt_strs("allow")
        .iter()
        .map(|a| {
            a.parse::<IpAddr>().map_err(|_| {
                Error::usage(format!("--allow: {a:?} is not an IP address"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let env = m
        .opt_strs("env")
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
            _ => Err(Error::usage(format!("--env: {kv:?} is not NAME=VALUE"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let request = m.opt_str("request");
    for flag in ["header", "data", "connect"] {
        if request.is_none() && m.opt_present(flag) {
            return Err(Error::usage(format!("--{flag} goes with --request")));
        }
    }
    if m.opt_present("connect") && (builtin.is_some() || !program.is_empty()) {
        return Err(Error::usage("--connect sends the request to a server: give no --builtin or PROGRAM"));
    }
    Ok(Command::Run(Box::new(Config {
        root: m.opt_str("root").map(PathBuf::from),
        chdir: m.opt_str("chdir").map(PathBuf::from),
        env,
        clear_env: m.opt_present("clear-env"),
        pass_env: m
            .opt_strs("pass-env")
            .into_iter()
            .map(OsString::from)
            .collect(),
        timeout: m
            .opt_str("timeout")
            .map(|v| seconds(&v, "timeout"))
            .transpose()?,
        script_name: m.opt_str("script-name"),
        log_stderr: m.opt_present("log-stderr"),
        request,
        headers: m.opt_strs("header"),
        data: m.opt_str("data"),
        connect: m
            .opt_str("connect")
            .map(|a| BindAddr::parse(&a))
            .transpose()?,
        mode,
        bind: m.opt_str("bind").map(|a| BindAddr::parse(&a)).transpose()?,
        workers: m
            .opt_str("workers")
            .map(|v| positive(&v, "workers"))
            .transpose()?,
        builtin,
        program,
        max_conns: m
            .opt_str("max-conns")
            .map(|v| positive(&v, "max-conns"))
            .transpose()?
            .unwrap_or(DEFAULT_MAX_CONNS),
        io_timeout: m
            .opt_str("io-timeout")
            .map(|v| seconds(&v, "io-timeout"))
            .transpose()?
            .unwrap_or(Duration::from_secs(DEFAULT_IO_TIMEOUT_SECS)),
        grace: m
            .opt_str("grace")
            .map(|v| seconds(&v, "grace"))
            .transpose()?
            .unwrap_or(Duration::from_secs(DEFAULT_GRACE_SECS)),
        socket_mode,
        allow,
        verbosity: m.opt_count("verbose") as i32 - m.opt_count("quiet") as i32,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        match parse(&args)? {
            Command::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn program_and_its_args_are_not_options() {
        let c = run(&["-w", "3", "--", "/bin/prog", "-w", "x"]).unwrap();
        assert_eq!(c.workers, Some(3));
        assert_eq!(c.program, ["/bin/prog", "-w", "x"]);
        let c = run(&["/bin/prog", "--bind", "x"]).unwrap();
        assert_eq!(c.program, ["/bin/prog", "--bind", "x"]);
        assert_eq!(c.bind, None);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["-w", "0"][..],
            &["-w", "x"],
            &["--mode", "scgi"],
            &["--builtin", "nope"],
            &["--builtin", "hello", "/bin/true"],
            &["--socket-mode", "999"],
            &["--allow", "host"],
            &["--grace", "-1"],
            &["--bind", "nowhere"],
            &["--no-such-option"],
            &["--env", "NOEQUALS"],
            &["-H", "X: y"],
            &["--connect", "/tmp/x.sock"],
            &["--request", "GET /", "--connect", "/x.sock", "/bin/prog"],
            &["--timeout", "soon"],
        ] {
            let e = run(args).expect_err(&format!("{args:?}"));
            assert!(e.is_usage(), "{args:?}: {e}");
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c.workers, None);
        assert_eq!(c.max_conns, DEFAULT_MAX_CONNS);
        assert_eq!(c.grace, Duration::from_secs(DEFAULT_GRACE_SECS));
        assert_eq!(c.socket_mode, None);
        assert_eq!(
            run(&["--socket-mode", "660"]).unwrap().socket_mode,
            Some(0o660)
        );
        assert_eq!(run(&["-vv", "-q"]).unwrap().verbosity, 1);
    }
}
