//! The environment a CGI program gets (RFC 3875 §4.1, DESIGN §3, §4,
//! §11): the launcher's own environment as a base, the request's
//! meta-variables over it, `--env` over those, then the path fixes.
//! Pure: it reads no process state and never mutates the process
//! environment (the child's is built with `env_clear().envs(...)`).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::api::Params;

/// A name-value pair, owned.
pub type Param = (Vec<u8>, Vec<u8>);

/// Which parts of the launcher's environment reach the program, and what
/// is added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPolicy {
    /// `--clear-env`: start from nothing but `pass`.
    pub clear: bool,
    /// `--pass-env NAME`: kept even with `clear`.
    pub pass: Vec<OsString>,
    /// `--env NAME=VALUE`, applied over the request's variables.
    pub set: Vec<(OsString, OsString)>,
    /// `--script-name PREFIX`: where the application is mounted.
    pub script_name: Option<Vec<u8>>,
}

/// Why a request cannot be given to a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// `CONTENT_LENGTH` is `-1` or not a number: the web server streams a
    /// body of unknown length, which CGI cannot express (answer 411).
    UnknownLength(String),
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvError::UnknownLength(v) => write!(
                f,
                "CONTENT_LENGTH {v:?} is not a length: a CGI program needs the \
                 body's size in advance"
            ),
        }
    }
}

/// Names never taken from the launcher's environment: systemd's socket
/// activation variables (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`,
/// any later `LISTEN_*`) are for us, not for the program.
fn is_launcher_only(name: &[u8]) -> bool {
    name.starts_with(b"LISTEN_")
}

/// True if and only if a name can be an environment variable name.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&b'=') && !name.contains(&0)
}

/// Merges repeated request params: an `HTTP_*` header sent twice is
/// joined with `, ` (cookies with `; `) as RFC 3875 §4.1.18 asks of the
/// server; any other repeated variable is last-wins. `HTTP_PROXY` is
/// dropped (httpoxy).
pub fn merge_params(params: &Params) -> Vec<Param> {
    let mut out: Vec<Param> = Vec::with_capacity(params.len());
    for (name, value) in params.iter() {
        if name == b"HTTP_PROXY" || !valid_name(name) || value.contains(&0) {
            continue;
        }
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) if name.starts_with(b"HTTP_") => {
                let sep: &[u8] =
                    if name == b"HTTP_COOKIE" { b"; " } else { b", " };
                v.extend_from_slice(sep);
                v.extend_from_slice(value);
            }
            Some((_, v)) => *v = value.to_vec(),
            None => out.push((name.to_vec(), value.to_vec())),
        }
    }
    out
}

fn set(env: &mut Vec<Param>, name: &[u8], value: Vec<u8>) {
    match env.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value,
        None => env.push((name.to_vec(), value)),
    }
}

fn get<'a>(env: &'a [Param], name: &[u8]) -> Option<&'a [u8]> {
    env.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Builds the program's environment from the launcher's environment
/// `base` and the request's `params`.
pub fn build(
    base: &[(OsString, OsString)],
    params: &Params,
    policy: &EnvPolicy,
) -> Result<Vec<(OsString, OsString)>, EnvError> {
    let mut env: Vec<Param> = base
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .filter(|(n, _)| {
            !is_launcher_only(n)
                && n != b"HTTP_PROXY"
                && (!policy.clear
                    || policy.pass.iter().any(|p| p.as_bytes() == n))
        })
        .collect();
    for (n, v) in merge_params(params) {
        set(&mut env, &n, v);
    }
    for (n, v) in &policy.set {
        set(&mut env, n.as_bytes(), v.as_bytes().to_vec());
    }
    if get(&env, b"GATEWAY_INTERFACE").is_none() {
        set(&mut env, b"GATEWAY_INTERFACE", b"CGI/1.1".to_vec());
    }
    if let Some(len) = get(&env, b"CONTENT_LENGTH") {
        let text = String::from_utf8_lossy(len).trim().to_string();
        if text.is_empty() {
            env.retain(|(n, _)| n != b"CONTENT_LENGTH");
        } else if text.parse::<u64>().is_err() {
            return Err(EnvError::UnknownLength(text));
        }
    }
    if let Some(prefix) = &policy.script_name {
        let (script, info) = split_path(&request_path(&env), prefix);
        set(&mut env, b"SCRIPT_NAME", script);
        set(&mut env, b"PATH_INFO", info);
    }
    if let Some(f) = get(&env, b"SCRIPT_FILENAME") {
        let fixed = strip_proxy_scheme(f).to_vec();
        set(&mut env, b"SCRIPT_FILENAME", fixed);
    }
    Ok(env
        .into_iter()
        .map(|(n, v)| (OsString::from_vec(n), OsString::from_vec(v)))
        .collect())
}

/// The raw path of the request: `REQUEST_URI` without its query, or else
/// `SCRIPT_NAME` + `PATH_INFO`.
fn request_path(env: &[Param]) -> Vec<u8> {
    match get(env, b"REQUEST_URI") {
        Some(uri) => {
            let end = uri
                .iter()
                .position(|&c| c == b'?' || c == b'#')
                .unwrap_or(uri.len());
            uri[..end].to_vec()
        }
        None => {
            let mut p = get(env, b"SCRIPT_NAME").unwrap_or_default().to_vec();
            p.extend_from_slice(get(env, b"PATH_INFO").unwrap_or_default());
            p
        }
    }
}

/// Decodes `%XX` escapes; an invalid escape stays as it is.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Splits a raw request path at the mount point `prefix` (DESIGN §4):
/// `(SCRIPT_NAME, PATH_INFO)`. The match is segment by segment on the
/// decoded path, so `/app` mounts `/app` and `/app/x` but not `/apple`,
/// and an encoded slash (`%2F`) inside a segment cannot fake a boundary.
/// A path outside the mount keeps all of itself as `PATH_INFO`.
pub fn split_path(raw: &[u8], prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let prefix = prefix.strip_suffix(b"/").unwrap_or(prefix);
    let prefix_segs: Vec<&[u8]> =
        prefix.split(|&c| c == b'/').skip(1).collect();
    let raw_segs: Vec<&[u8]> = raw.split(|&c| c == b'/').skip(1).collect();
    let inside = raw.starts_with(b"/")
        && raw_segs.len() >= prefix_segs.len()
        && raw_segs
            .iter()
            .zip(&prefix_segs)
            .all(|(r, p)| percent_decode(r) == *p);
    let rest: &[&[u8]] = if inside {
        &raw_segs[prefix_segs.len()..]
    } else {
        &raw_segs
    };
    let mut info = Vec::new();
    for seg in rest {
        info.push(b'/');
        info.extend_from_slice(&percent_decode(seg));
    }
    (prefix.to_vec(), info)
}

/// `SCRIPT_FILENAME` as Apache mod_proxy_fcgi sends it without
/// `ProxyFCGIBackendType GENERIC`: `proxy:fcgi://HOST:PORT/path` → `/path`
/// (what php-fpm does). Anything else is returned unchanged.
pub fn strip_proxy_scheme(f: &[u8]) -> &[u8] {
    for scheme in [&b"proxy:fcgi://"[..], b"proxy:balancer://"] {
        if let Some(rest) = f.strip_prefix(scheme) {
            return match rest.iter().position(|&c| c == b'/') {
                Some(i) => &rest[i..],
                None => b"",
            };
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str, v: &str) -> Param {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    fn ps(pairs: &[Param]) -> Params {
        pairs.iter().map(|(n, v)| (n, v)).collect()
    }

    fn os(n: &str, v: &str) -> (OsString, OsString) {
        (n.into(), v.into())
    }

    fn lookup(env: &[(OsString, OsString)], name: &str) -> Option<String> {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    }

    #[test]
    fn repeats_join_headers_and_last_wins_for_the_rest() {
        let merged = merge_params(&ps(&[
            p("HTTP_ACCEPT", "a"),
            p("SCRIPT_NAME", "/first"),
            p("HTTP_COOKIE", "x=1"),
            p("HTTP_ACCEPT", "b"),
            p("SCRIPT_NAME", "/second"),
            p("HTTP_COOKIE", "y=2"),
            p("HTTP_PROXY", "http://evil/"),
        ]));
        assert_eq!(
            merged,
            vec![
                p("HTTP_ACCEPT", "a, b"),
                p("SCRIPT_NAME", "/second"),
                p("HTTP_COOKIE", "x=1; y=2"),
            ]
        );
    }

    #[test]
    fn base_env_reaches_the_program_without_launcher_variables() {
        let base = [
            os("PATH", "/bin"),
            os("APP_SECRET", "s"),
            os("LISTEN_FDS", "1"),
            os("LISTEN_PID", "9"),
            os("HTTP_PROXY", "http://evil/"),
        ];
        let env = build(
            &base,
            &ps(&[p("REQUEST_METHOD", "GET")]),
            &EnvPolicy::default(),
        )
        .unwrap();
        assert_eq!(lookup(&env, "APP_SECRET").as_deref(), Some("s"));
        assert_eq!(
            lookup(&env, "GATEWAY_INTERFACE").as_deref(),
            Some("CGI/1.1")
        );
        assert_eq!(lookup(&env, "REQUEST_METHOD").as_deref(), Some("GET"));
        for gone in ["LISTEN_FDS", "LISTEN_PID", "HTTP_PROXY"] {
            assert_eq!(lookup(&env, gone), None, "{gone}");
        }
        let policy = EnvPolicy {
            clear: true,
            pass: vec!["PATH".into()],
            set: vec![os("APP_MODE", "prod"), os("REQUEST_METHOD", "forced")],
            script_name: None,
        };
        let env =
            build(&base, &ps(&[p("REQUEST_METHOD", "GET")]), &policy).unwrap();
        assert_eq!(lookup(&env, "PATH").as_deref(), Some("/bin"));
        assert_eq!(lookup(&env, "APP_SECRET"), None);
        assert_eq!(lookup(&env, "APP_MODE").as_deref(), Some("prod"));
        assert_eq!(lookup(&env, "REQUEST_METHOD").as_deref(), Some("forced"));
    }

    #[test]
    fn content_length_minus_one_is_refused() {
        let r = build(
            &[],
            &ps(&[p("CONTENT_LENGTH", "-1")]),
            &EnvPolicy::default(),
        );
        assert_eq!(r, Err(EnvError::UnknownLength("-1".into())));
        let env =
            build(&[], &ps(&[p("CONTENT_LENGTH", "")]), &EnvPolicy::default())
                .unwrap();
        assert_eq!(lookup(&env, "CONTENT_LENGTH"), None);
        let env = build(
            &[],
            &ps(&[p("CONTENT_LENGTH", "12")]),
            &EnvPolicy::default(),
        )
        .unwrap();
        assert_eq!(lookup(&env, "CONTENT_LENGTH").as_deref(), Some("12"));
    }

    #[test]
    fn split_path_table() {
        let table: &[(&str, &str, &str, &str)] = &[
            // nginx at /yourapplication
            (
                "/yourapplication/hello/x",
                "/yourapplication",
                "/yourapplication",
                "/hello/x",
            ),
            (
                "/yourapplication",
                "/yourapplication",
                "/yourapplication",
                "",
            ),
            (
                "/yourapplication/",
                "/yourapplication",
                "/yourapplication",
                "/",
            ),
            (
                "/yourapplication/",
                "/yourapplication/",
                "/yourapplication",
                "/",
            ),
            // mounted at the root: lighttpd's and flup's cases
            ("/", "", "", "/"),
            ("/hello/world", "", "", "/hello/world"),
            ("/app.fcgi/hello", "/app.fcgi", "/app.fcgi", "/hello"),
            // decoding, %2F included; invalid escapes stay
            ("/app/a%20b/c%2Fd", "/app", "/app", "/a b/c/d"),
            ("/app/100%/%zz/%4", "/app", "/app", "/100%/%zz/%4"),
            ("/%61pp/x", "/app", "/app", "/x"),
            // not under the mount: the whole path is PATH_INFO
            ("/apple/x", "/app", "/app", "/apple/x"),
            ("/app%2Fx", "/app", "/app", "/app/x"),
            ("/other", "/app", "/app", "/other"),
        ];
        for (raw, prefix, script, info) in table {
            let (s, i) = split_path(raw.as_bytes(), prefix.as_bytes());
            assert_eq!(
                (String::from_utf8_lossy(&s), String::from_utf8_lossy(&i)),
                ((*script).into(), (*info).into()),
                "{raw} at {prefix}"
            );
        }
    }

    #[test]
    fn script_name_fix_uses_request_uri_without_query() {
        let policy = EnvPolicy {
            script_name: Some(b"/yourapplication".to_vec()),
            ..EnvPolicy::default()
        };
        let params = [
            p("REQUEST_URI", "/yourapplication/hi%21?q=%2F"),
            p("SCRIPT_NAME", "/yourapplication/hi!"),
            p("SCRIPT_NAME", "/yourapplication/hi!"),
            p("PATH_INFO", ""),
        ];
        let env = build(&[], &ps(&params), &policy).unwrap();
        assert_eq!(
            lookup(&env, "SCRIPT_NAME").as_deref(),
            Some("/yourapplication")
        );
        assert_eq!(lookup(&env, "PATH_INFO").as_deref(), Some("/hi!"));
    }

    #[test]
    fn proxy_fcgi_script_filename() {
        let table: &[(&str, &str)] = &[
            (
                "proxy:fcgi://127.0.0.1:9000/var/www/x.cgi",
                "/var/www/x.cgi",
            ),
            ("proxy:fcgi://localhost/srv/a/b.py", "/srv/a/b.py"),
            ("proxy:balancer://pool/srv/x", "/srv/x"),
            ("proxy:fcgi://host", ""),
            ("/var/www/plain.cgi", "/var/www/plain.cgi"),
        ];
        for (input, want) in table {
            assert_eq!(
                strip_proxy_scheme(input.as_bytes()),
                want.as_bytes(),
                "{input}"
            );
        }
    }
}
