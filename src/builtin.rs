//! The built-in handlers (DESIGN §3), served in process with no child:
//! `hello` (the smallest response; the benchmark target), `echo` (the
//! body back) and `env` (the diagnostic page that answers "what does my
//! web server send?").

use std::io::{self, Read, Write};

use crate::api::{Handler, Request, Response, Transport};

/// A built-in handler's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `hello`
    Hello,
    /// `echo`
    Echo,
    /// `env`
    Env,
}

impl Builtin {
    /// The handler for a `--builtin` name.
    pub fn from_name(name: &str) -> Option<Builtin> {
        match name {
            "hello" => Some(Builtin::Hello),
            "echo" => Some(Builtin::Echo),
            "env" => Some(Builtin::Env),
            _ => None,
        }
    }
}

/// What the `env` page reports about the server itself.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    /// How we were started (mode detection's verdict).
    pub mode: String,
    /// Worker threads (FastCGI) or 1 (CGI).
    pub workers: usize,
}

/// The body of `hello`.
pub const HELLO: &[u8] =
    b"Content-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";

impl Handler for Builtin {
    fn handle(&self, req: &mut Request, resp: &mut Response) -> io::Result<()> {
        match self {
            Builtin::Hello => resp.write_all(HELLO),
            Builtin::Echo => echo(req, resp),
            Builtin::Env => env_page(&crate::launch::facts(), req, resp),
        }
    }
}

fn echo(req: &mut Request, resp: &mut Response) -> io::Result<()> {
    resp.write_all(b"Content-Type: application/octet-stream\r\n")?;
    if let Some(n) = req
        .param_str("CONTENT_LENGTH")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        write!(resp, "Content-Length: {n}\r\n")?;
    }
    resp.write_all(b"\r\n")?;
    io::copy(req.body(), resp)?;
    Ok(())
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

fn env_page(
    facts: &ServerFacts,
    req: &mut Request,
    resp: &mut Response,
) -> io::Result<()> {
    let mut page = String::new();
    let transport = match req.transport() {
        Transport::FastCgi => "FastCGI",
        Transport::Cgi => "CGI",
        Transport::Local => "in process (--request)",
    };
    page.push_str("fcgi-launch env: what this request looks like here\n\n");
    page.push_str(&format!("pid:       {}\n", std::process::id()));
    page.push_str(&format!("mode:      {}\n", facts.mode));
    page.push_str(&format!("transport: {transport}\n"));
    page.push_str(&format!("workers:   {}\n", facts.workers));
    page.push_str(&format!(
        "\n== params as received ({}, in order) ==\n",
        req.params().len()
    ));
    for (n, v) in req.params() {
        page.push_str(&format!("{}={}\n", show(n), show(v)));
    }
    let mut effective: Vec<&(Vec<u8>, Vec<u8>)> = Vec::new();
    for p in req.params().iter().rev() {
        if !effective.iter().any(|e| e.0 == p.0) {
            effective.push(p);
        }
    }
    effective.sort();
    page.push_str(&format!(
        "\n== effective variables ({}, repeats resolved: last wins) ==\n",
        effective.len()
    ));
    for (n, v) in effective {
        page.push_str(&format!("{}={}\n", show(n), show(v)));
    }
    let mut body = Vec::new();
    let n = io::copy(&mut req.body().take(1 << 20), &mut body)?;
    page.push_str(&format!("\n== body: {n} bytes read ==\n"));
    write!(
        resp,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        page.len()
    )?;
    resp.write_all(page.as_bytes())
}
