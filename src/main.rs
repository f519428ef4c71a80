//! The `fcgi-launch` binary: parse the command line, start logging, pick
//! the handler, and run. Errors become one `fcgi-launch: ` line on stderr
//! and the exit status of `error.rs`.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use fcgi_launch::cgi::env::EnvPolicy;
use fcgi_launch::cgi::exec::{CgiConfig, CgiProgram};
use fcgi_launch::cli::{self, Command, Config};
use fcgi_launch::local::{self, LocalRequest};
use fcgi_launch::{client, logging, Error, Handler, Server};

/// Exit status of a hand test or health check whose answer was not a
/// success (2xx or 3xx).
const EXIT_BAD_ANSWER: u8 = fcgi_launch::EXIT_FAILURE;

fn handler(config: &Config) -> Result<Arc<dyn Handler>, Error> {
    let policy = EnvPolicy {
        clear: config.clear_env,
        pass: config.pass_env.clone(),
        set: config.env.clone(),
        script_name: config.script_name.clone().map(String::into_bytes),
    };
    if let Some(b) = config.builtin {
        return Ok(b.handler(policy));
    }
    let program = config
        .program
        .split_first()
        .map(|(p, args)| (p.clone(), args.to_vec()));
    let cgi = CgiProgram::new(CgiConfig {
        program,
        root: config.root.clone(),
        chdir: config.chdir.clone(),
        env: policy,
        timeout: config.timeout,
        log_stderr: config.log_stderr,
    })
    .map_err(|e| Error::usage(e.to_string()))?;
    Ok(Arc::new(cgi))
}

/// `--request`, in process or with `--connect`: prints the response and
/// says whether it was a success.
fn hand_test(config: &Config, line: &str) -> Result<ExitCode, Error> {
    let req =
        LocalRequest::parse(line, &config.headers, config.data.as_deref())?;
    let root = local::document_root(config.root.as_deref())?;
    let status = match &config.connect {
        Some(addr) => {
            let answer = client::send(
                addr,
                &req.params(&root),
                &req.body,
                config.io_timeout,
            )?;
            std::io::stdout()
                .write_all(&answer.stdout)
                .map_err(|e| Error::io("writing the response to stdout", e))?;
            let _ = std::io::stderr().write_all(&answer.stderr);
            if answer.protocol_status != 0 {
                eprintln!("fcgi-launch: {addr} refused the request (protocolStatus {})", answer.protocol_status);
                return Ok(ExitCode::from(EXIT_BAD_ANSWER));
            }
            answer.status()
        }
        None => local::run(&*handler(config)?, &req, &root)?,
    };
    if local::success(status) {
        return Ok(ExitCode::SUCCESS);
    }
    match status {
        Some(s) => eprintln!("fcgi-launch: {line}: answered status {s}"),
        None => eprintln!("fcgi-launch: {line}: no valid CGI response"),
    }
    Ok(ExitCode::from(EXIT_BAD_ANSWER))
}

fn run(config: Config) -> Result<ExitCode, Error> {
    logging::init(config.verbosity);
    if let Some(line) = &config.request {
        return hand_test(&config, line);
    }
    let mut server = Server::from_arc(handler(&config)?)
        .max_conns(config.max_conns)
        .io_timeout(config.io_timeout)
        .grace(config.grace);
    if let Some(n) = config.workers {
        server = server.workers(n);
    }
    if let Some(m) = config.mode {
        server = server.mode(m);
    }
    if let Some(a) = config.bind {
        server = server.bind_addr(a);
    }
    if let Some(m) = config.socket_mode {
        server = server.socket_mode(m);
    }
    if !config.allow.is_empty() {
        server = server.allow(config.allow);
    }
    server.run().map(|()| ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = match cli::parse(&args) {
        Ok(Command::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("fcgi-launch {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(config)) => run(*config),
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("fcgi-launch: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
