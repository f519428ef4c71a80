//! # fcgi-launch
//!
//! Run a web application under whatever gateway the host offers: FastCGI
//! (a listening socket on fd 0 from Apache mod_fcgid, spawn-fcgi or
//! lighttpd; systemd socket activation; or `--bind`) or plain CGI
//! (`GATEWAY_INTERFACE` set), with no change of configuration.
//!
//! The library gives the same to a Rust program: write one [`Handler`],
//! call [`serve`], and the binary works as a CGI script and as a FastCGI
//! server alike, like Go's `net/http/cgi` plus `net/http/fcgi`.
//!
//! ## A dual-mode application
//!
//! ```no_run
//! use std::io::{self, Read, Write};
//! use fcgi_launch::{Request, Response};
//!
//! fn app(req: &mut Request, resp: &mut Response) -> io::Result<()> {
//!     // Params are the CGI meta-variables, as bytes or as text.
//!     let who = req.param_str("QUERY_STRING").unwrap_or("").to_owned();
//!     // The body streams; read it as much as you need.
//!     let mut body = Vec::new();
//!     req.body().take(1 << 20).read_to_end(&mut body)?;
//!     // A CGI response: header lines, an empty line, the body.
//!     write!(resp, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n")?;
//!     writeln!(resp, "hello {who}, you sent {} bytes", body.len())?;
//!     // Anything on stderr goes to the web server's error log.
//!     resp.stderr().send(b"app: served a request\n")
//! }
//!
//! fn main() {
//!     // CGI under Apache mod_cgi, FastCGI under nginx (--bind), mod_fcgid,
//!     // spawn-fcgi or systemd: detected at run time.
//!     if let Err(e) = fcgi_launch::serve(app) {
//!         eprintln!("app: {e}");
//!         std::process::exit(e.exit_code().into());
//!     }
//! }
//! ```
//!
//! For settings (workers, address, limits) use [`Server`]:
//! `Server::new(app).workers(8).bind("unix:/run/app.sock")?.run()`.
//!
//! ## Map of the crate
//! - [`fcgi`]: the FastCGI wire codecs (pure) and connection state machine.
//! - [`cgi`]: the CGI/1.1 transport and response header parser.
//! - `server` (private): the worker pool and the readiness watcher.
//! - [`mode`]: how the process was started, as a pure decision.
//! - `sys` (private): the only module that calls libc.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod api;
pub mod builtin;
pub mod cgi;
pub mod cli;
pub mod client;
mod episode;
mod error;
pub mod fcgi;
mod launch;
pub mod listen;
pub mod local;
pub mod logging;
pub mod mode;
mod server;
mod signals;
mod sys;

pub use api::{
    AbortWatch, Body, Handler, Params, Request, Response, Role, StderrHandle,
    Transport,
};
pub use error::{Error, Result, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
pub use launch::{default_workers, facts, serve, Server};
