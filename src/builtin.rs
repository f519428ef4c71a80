//! The built-in handlers (DESIGN §3), served in process with no child:
//! `hello` (the smallest response; the benchmark target), `echo` (the
//! body back) and `env` (the diagnostic page that answers "what does my
//! web server send?").

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::api::{Handler, Request, Response, Transport};
use crate::cgi::env::EnvPolicy;

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

    /// The handler; `policy` is what the `env` page applies to show what
    /// a CGI program would get.
    pub fn handler(self, policy: EnvPolicy) -> Arc<dyn Handler> {
        match self {
            Builtin::Hello => Arc::new(Hello),
            Builtin::Echo => Arc::new(Echo),
            Builtin::Env => Arc::new(EnvPage { policy }),
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

struct Hello;

impl Handler for Hello {
    fn handle(&self, _: &mut Request, resp: &mut Response) -> io::Result<()> {
        resp.write_all(HELLO)
    }
}

struct Echo;

impl Handler for Echo {
    fn handle(
        &self,
        req: &mut Request,
        resp: &mut Response,
    ) -> io::Result<()> {
        echo(req, resp)
    }
}

struct EnvPage {
    policy: EnvPolicy,
}

impl Handler for EnvPage {
    fn handle(
        &self,
        req: &mut Request,
        resp: &mut Response,
    ) -> io::Result<()> {
        env_page(&crate::launch::facts(), &self.policy, req, resp)
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
    policy: &EnvPolicy,
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
    for (n, v) in req.params().iter() {
        page.push_str(&format!("{}={}\n", show(n), show(v)));
    }
    // What a CGI program would get: repeats merged, path fixes and
    // --env applied; the launcher's own environment left out.
    match crate::cgi::env::build(&[], req.params(), policy) {
        Ok(mut vars) => {
            vars.sort();
            page.push_str(&format!(
                "\n== as a CGI program gets them ({}, repeats merged, \
                 --script-name and --env applied) ==\n",
                vars.len()
            ));
            for (n, v) in vars {
                page.push_str(&format!(
                    "{}={}\n",
                    show(n.as_bytes()),
                    show(v.as_bytes())
                ));
            }
        }
        Err(e) => page.push_str(&format!(
            "\n== a CGI program would get a 411: {e} ==\n"
        )),
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
