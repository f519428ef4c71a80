//! `--request 'METHOD URI'` (DESIGN §7): builds the request a web server
//! would send (nginx's `fastcgi_params`, in effect) and either runs it
//! through the configured handler in process, printing the raw CGI
//! response, or hands it to `client` for `--connect`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::api::{
    self, Body, Handler, Params, Request, Response, Role, Transport,
};
use crate::cgi::StdOutput;
use crate::error::{Error, Result};

/// A hand-made request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request URI as a client would send it (`/path?query`).
    pub uri: String,
    /// Header lines (`Name: value`), in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl LocalRequest {
    /// Parses `'METHOD URI'`, the `-H` lines and the `-d` data (`@FILE`
    /// reads a file, `@-` stdin).
    pub fn parse(
        line: &str,
        headers: &[String],
        data: Option<&str>,
    ) -> Result<LocalRequest> {
        let mut words = line.split_whitespace();
        let (method, uri) = match (words.next(), words.next(), words.next()) {
            (Some(m), Some(u), None) if u.starts_with('/') => (m.to_string(), u.to_string()),
            (Some(u), None, None) if u.starts_with('/') => ("GET".to_string(), u.to_string()),
            _ => {
                return Err(Error::usage(format!(
                    "--request {line:?}: expected 'METHOD /PATH[?QUERY]', e.g. 'GET /'"
                )))
            }
        };
        if !method.bytes().all(|c| c.is_ascii_alphabetic()) {
            return Err(Error::usage(format!(
                "--request: {method:?} is not an HTTP method"
            )));
        }
        let headers = headers
            .iter()
            .map(|h| {
                let (n, v) = h.split_once(':').ok_or_else(|| {
                    Error::usage(format!("-H {h:?}: expected 'Name: value'"))
                })?;
                let n = n.trim();
                if n.is_empty()
                    || !n.bytes().all(|c| {
                        c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
                    })
                {
                    return Err(Error::usage(format!(
                        "-H {h:?}: bad header name"
                    )));
                }
                Ok((n.to_string(), v.trim().to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let body = match data {
            None => Vec::new(),
            Some("@-") => {
                let mut b = Vec::new();
                io::Read::read_to_end(&mut io::stdin(), &mut b)
                    .map_err(|e| Error::io("reading -d @- from stdin", e))?;
                b
            }
            Some(d) => match d.strip_prefix('@') {
                Some(file) => std::fs::read(file).map_err(|e| {
                    Error::io(format!("reading -d @{file}"), e)
                })?,
                None => d.as_bytes().to_vec(),
            },
        };
        Ok(LocalRequest {
            method: method.to_ascii_uppercase(),
            uri,
            headers,
            body,
        })
    }

    /// The params nginx would send with its stock `fastcgi_params` and
    /// `SCRIPT_FILENAME $document_root$fastcgi_script_name`, with
    /// `document_root` as the document root.
    pub fn params(&self, document_root: &Path) -> Params {
        let (path, query) = match self.uri.split_once('?') {
            Some((p, q)) => (p, q),
            None => (self.uri.as_str(), ""),
        };
        let decoded = String::from_utf8_lossy(
            &crate::cgi::env::percent_decode(path.as_bytes()),
        )
        .into_owned();
        let root = document_root.to_string_lossy();
        let root = root.trim_end_matches('/');
        // As Apache maps a URL: the longest prefix naming a file is the
        // script, the rest is PATH_INFO.
        let (script, info) = (1..=decoded.len())
            .rev()
            .filter(|&i| {
                decoded.is_char_boundary(i)
                    && (i == decoded.len() || decoded.as_bytes()[i] == b'/')
            })
            .map(|i| decoded.split_at(i))
            .find(|(s, _)| Path::new(&format!("{root}{s}")).is_file())
            .unwrap_or((decoded.as_str(), ""));
        let filename = format!("{root}{script}");
        let mut p: Vec<(String, String)> = vec![
            ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
            (
                "SERVER_SOFTWARE".into(),
                format!("fcgi-launch/{}", env!("CARGO_PKG_VERSION")),
            ),
            ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
            ("SERVER_NAME".into(), "localhost".into()),
            ("SERVER_ADDR".into(), "127.0.0.1".into()),
            ("SERVER_PORT".into(), "80".into()),
            ("REMOTE_ADDR".into(), "127.0.0.1".into()),
            ("REMOTE_PORT".into(), "50000".into()),
            ("REQUEST_SCHEME".into(), "http".into()),
            ("REQUEST_METHOD".into(), self.method.clone()),
            ("REQUEST_URI".into(), self.uri.clone()),
            ("DOCUMENT_URI".into(), path.into()),
            ("QUERY_STRING".into(), query.into()),
            ("DOCUMENT_ROOT".into(), document_root.display().to_string()),
            ("SCRIPT_NAME".into(), script.into()),
            ("PATH_INFO".into(), info.into()),
            ("SCRIPT_FILENAME".into(), filename),
            (
                "CONTENT_LENGTH".into(),
                if self.body.is_empty() && self.method == "GET" {
                    String::new()
                } else {
                    self.body.len().to_string()
                },
            ),
            ("CONTENT_TYPE".into(), String::new()),
        ];
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            p.push(("HTTP_HOST".into(), "localhost".into()));
        }
        for (n, v) in &self.headers {
            let var = n.to_ascii_uppercase().replace('-', "_");
            match var.as_str() {
                "CONTENT_TYPE" | "CONTENT_LENGTH" => {
                    if let Some(slot) = p.iter_mut().find(|(k, _)| *k == var) {
                        slot.1 = v.clone();
                    }
                }
                _ => p.push((format!("HTTP_{var}"), v.clone())),
            }
        }
        p.into_iter().collect()
    }
}

/// The document root a hand test uses: `--root`, else the working
/// directory (as if the web server's root were here).
pub fn document_root(root: Option<&Path>) -> Result<PathBuf> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::io("finding the working directory", e))?;
    Ok(match root {
        Some(r) => cwd.join(r),
        None => cwd,
    })
}

/// True if and only if `status` means success for a health check.
pub fn success(status: Option<u16>) -> bool {
    status.is_some_and(|s| (200..400).contains(&s))
}

/// Runs `req` through `handler` in process, writing the raw CGI response
/// to stdout. Ok(status) with the response's status code, if it had one.
pub fn run(
    handler: &dyn Handler,
    req: &LocalRequest,
    document_root: &Path,
) -> Result<Option<u16>> {
    crate::sys::cloexec_inherited_fds()
        .map_err(|e| Error::io("listing inherited fds in /proc/self/fd", e))?;
    let body = Body::from_reader(io::Cursor::new(req.body.clone()));
    let mut request = Request::new(
        req.params(document_root),
        Role::Responder,
        Transport::Local,
        body,
    );
    let mut resp =
        Response::new(Box::new(StdOutput), Arc::new(AtomicBool::new(false)));
    api::dispatch(handler, &mut request, &mut resp);
    resp.flush()
        .map_err(|e| Error::io("writing the response to stdout", e))?;
    let _ = io::stdout().flush();
    Ok(resp.status())
}
