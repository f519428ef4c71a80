//! The `fcgi-launch` binary: parse the command line, start logging, pick
//! the handler, and run. Errors become one `fcgi-launch: ` line on stderr
//! and the exit status of `error.rs`.

use std::ffi::OsString;
use std::process::ExitCode;

use fcgi_launch::cli::{self, Command, Config};
use fcgi_launch::{logging, Error, Server};

fn run(config: Config) -> Result<(), Error> {
    logging::init(config.verbosity);
    let handler = match config.builtin {
        Some(b) => b,
        None => {
            return Err(Error::usage(format!(
                "no handler: give --builtin NAME or a PROGRAM\n{}",
                cli::USAGE
            )))
        }
    };
    let mut server = Server::new(handler)
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
    server.run()
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
        Ok(Command::Run(config)) => run(config),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("fcgi-launch: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
