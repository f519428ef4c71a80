//! How we were started (DESIGN §2): a pure decision over a [`Probe`] of
//! the process's circumstances, so every row of the table is tested
//! without starting a web server. Binds nothing, accepts nothing, and
//! changes no environment variable.

use std::os::fd::RawFd;

use crate::error::{Error, Result};
use crate::listen::BindAddr;
use crate::sys::{self, FdKind};

/// First fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// `--mode`: the gateway forced by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcedMode {
    /// `--mode cgi`
    Cgi,
    /// `--mode fastcgi`
    FastCgi,
}

/// What the process was started with, as far as the decision goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What fd 0 is.
    pub fd0: FdKind,
    /// `LISTEN_PID`, if set.
    pub listen_pid: Option<String>,
    /// `LISTEN_FDS`, if set.
    pub listen_fds: Option<String>,
    /// Our pid.
    pub pid: u32,
    /// True if and only if `GATEWAY_INTERFACE` is set.
    pub gateway_interface: bool,
}

/// The gateway to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One CGI/1.1 request on stdin/stdout (RFC 3875).
    Cgi,
    /// FastCGI on the listening socket at fd 0.
    FastCgiFd0,
    /// FastCGI on the sockets systemd passed (fd 3 ...).
    SocketActivated(Vec<RawFd>),
    /// FastCGI on a socket we bind.
    Bind(BindAddr),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Cgi => f.write_str("CGI: one request on stdin and stdout"),
            Mode::FastCgiFd0 => {
                f.write_str("FastCGI on the listening socket at fd 0")
            }
            Mode::SocketActivated(fds) => write!(
                f,
                "FastCGI on {} socket(s) passed by systemd",
                fds.len()
            ),
            Mode::Bind(a) => write!(f, "FastCGI on {a} (--bind)"),
        }
    }
}

/// Looks at fd 0 and the environment (read only).
pub fn probe() -> Probe {
    let var = |n| std::env::var(n).ok();
    Probe {
        fd0: sys::fd_kind(0),
        listen_pid: var("LISTEN_PID"),
        listen_fds: var("LISTEN_FDS"),
        pid: sys::getpid(),
        gateway_interface: std::env::var_os("GATEWAY_INTERFACE").is_some(),
    }
}

/// The fds systemd passed to this very process, if any (sd_listen_fds(3):
/// `LISTEN_PID` must be our pid, else the variables were meant for a
/// parent and are ignored).
fn activated_fds(p: &Probe) -> Option<Vec<RawFd>> {
    let pid: u32 = p.listen_pid.as_deref()?.trim().parse().ok()?;
    let n: RawFd = p.listen_fds.as_deref()?.trim().parse().ok()?;
    (pid == p.pid && n >= 1)
        .then(|| (LISTEN_FDS_START..LISTEN_FDS_START + n).collect())
}

fn describe_fd0(k: FdKind) -> &'static str {
    match k {
        FdKind::Closed => "closed",
        FdKind::ListeningSocket => "a listening socket",
        FdKind::ConnectedSocket => "a connected socket",
        FdKind::Terminal => "a terminal",
        FdKind::Other => "a pipe or a file",
    }
}

/// A FastCGI socket, if rows 2-4 of DESIGN §2 give one: `--bind`, then
/// socket activation, then a listening socket on fd 0.
fn fastcgi_socket(p: &Probe, bind: Option<&BindAddr>) -> Option<Mode> {
    if let Some(a) = bind {
        return Some(Mode::Bind(a.clone()));
    }
    if let Some(fds) = activated_fds(p) {
        return Some(Mode::SocketActivated(fds));
    }
    (p.fd0 == FdKind::ListeningSocket).then_some(Mode::FastCgiFd0)
}

/// Decides the mode, in the order of DESIGN §2.
pub fn decide(
    p: &Probe,
    forced: Option<ForcedMode>,
    bind: Option<&BindAddr>,
) -> Result<Mode> {
    match forced {
        Some(ForcedMode::Cgi) => return Ok(Mode::Cgi),
        Some(ForcedMode::FastCgi) => {
            return fastcgi_socket(p, bind).ok_or_else(|| {
                Error::usage(format!(
                    "--mode fastcgi: fd 0 is {}, not a listening socket, and \
                     neither --bind nor LISTEN_FDS gives one",
                    describe_fd0(p.fd0)
                ))
            })
        }
        None => {}
    }
    if let Some(mode) = fastcgi_socket(p, bind) {
        return Ok(mode);
    }
    if p.gateway_interface {
        return Ok(Mode::Cgi);
    }
    Err(Error::usage(format!(
        "not started by a web server: fd 0 is {}, not a listening socket, \
         and neither --bind, LISTEN_FDS nor GATEWAY_INTERFACE is set\n\
         to serve FastCGI, run: fcgi-launch --bind unix:/run/app.sock \
         [OPTIONS] [-- PROGRAM]\n\
         to try one request by hand, run: fcgi-launch --request 'GET /' \
         [OPTIONS] [-- PROGRAM]   (see --help)",
        describe_fd0(p.fd0)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(fd0: FdKind) -> Probe {
        Probe {
            fd0,
            listen_pid: None,
            listen_fds: None,
            pid: 42,
            gateway_interface: false,
        }
    }

    #[test]
    fn every_row_of_the_design_table() {
        use FdKind::*;
        let bind = BindAddr::Unix("/tmp/x.sock".into());
        let activated = Probe {
            listen_pid: Some("42".into()),
            listen_fds: Some("2".into()),
            ..probe(Terminal)
        };
        let cgi = Probe {
            gateway_interface: true,
            ..probe(Other)
        };
        let fc = Some(ForcedMode::FastCgi);
        // name, probe, --mode, --bind, the mode (None: a usage error)
        type Row<'a> = (
            &'a str,
            Probe,
            Option<ForcedMode>,
            Option<&'a BindAddr>,
            Option<Mode>,
        );
        let table: Vec<Row> = vec![
            // 1. --mode is obeyed.
            (
                "mode cgi",
                probe(ListeningSocket),
                Some(ForcedMode::Cgi),
                None,
                Some(Mode::Cgi),
            ),
            (
                "mode fastcgi fd0",
                probe(ListeningSocket),
                fc,
                None,
                Some(Mode::FastCgiFd0),
            ),
            (
                "mode fastcgi bind",
                probe(Terminal),
                fc,
                Some(&bind),
                Some(Mode::Bind(bind.clone())),
            ),
            ("mode fastcgi, no socket", cgi.clone(), fc, None, None),
            // 2. --bind wins over what fd 0 is.
            (
                "bind",
                probe(ListeningSocket),
                None,
                Some(&bind),
                Some(Mode::Bind(bind.clone())),
            ),
            // 3. socket activation, only for our pid.
            (
                "activated",
                activated.clone(),
                None,
                None,
                Some(Mode::SocketActivated(vec![3, 4])),
            ),
            (
                "other pid",
                Probe {
                    listen_pid: Some("7".into()),
                    ..activated.clone()
                },
                None,
                None,
                None,
            ),
            (
                "zero fds",
                Probe {
                    listen_fds: Some("0".into()),
                    ..activated.clone()
                },
                None,
                None,
                None,
            ),
            (
                "junk fds",
                Probe {
                    listen_fds: Some("x".into()),
                    ..activated.clone()
                },
                None,
                None,
                None,
            ),
            // 4. a listening socket on fd 0, even with GATEWAY_INTERFACE.
            (
                "fd0",
                Probe {
                    gateway_interface: true,
                    ..probe(ListeningSocket)
                },
                None,
                None,
                Some(Mode::FastCgiFd0),
            ),
            // 5. CGI, with a pipe or a connected socket (mod_cgid) on fd 0.
            ("cgi pipe", cgi.clone(), None, None, Some(Mode::Cgi)),
            (
                "cgi socket",
                Probe {
                    fd0: ConnectedSocket,
                    ..cgi.clone()
                },
                None,
                None,
                Some(Mode::Cgi),
            ),
            (
                "cgi closed",
                Probe {
                    fd0: Closed,
                    ..cgi.clone()
                },
                None,
                None,
                Some(Mode::Cgi),
            ),
            // 6. a person at a terminal.
            ("terminal", probe(Terminal), None, None, None),
            ("connected socket", probe(ConnectedSocket), None, None, None),
        ];
        for (name, p, forced, bind, want) in table {
            let got = decide(&p, forced, bind);
            match want {
                Some(m) => assert_eq!(got.ok(), Some(m), "{name}"),
                None => {
                    let e = got.expect_err(name);
                    assert!(e.is_usage(), "{name}: {e}");
                }
            }
        }
    }

    #[test]
    fn terminal_message_says_why_and_what_to_run() {
        let e = decide(&probe(FdKind::Terminal), None, None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("fd 0 is a terminal"), "{msg}");
        assert!(msg.contains("--bind") && msg.contains("--request"), "{msg}");
        assert!(msg.lines().count() <= 3, "{msg}");
    }
}
