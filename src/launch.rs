//! The library's entry point: a builder for the server's settings, and
//! `run`, which detects how the process was started (DESIGN §2) and serves
//! the handler over that transport.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::api::Handler;
use crate::builtin::ServerFacts;
use crate::cgi;
use crate::cli::{
    DEFAULT_GRACE_SECS, DEFAULT_IO_TIMEOUT_SECS, DEFAULT_MAX_CONNS,
};
use crate::error::{Error, Result};
use crate::fcgi::conn::Limits;
use crate::listen::{BindAddr, Listener};
use crate::mode::{self, ForcedMode, Mode};
use crate::server::{self, ServerConfig};
use crate::signals::Signals;
use crate::sys;

static FACTS: OnceLock<ServerFacts> = OnceLock::new();

/// Set once inherited sockets (fd 0, systemd's fds) have been adopted:
/// a second adoption would close fds that belong to someone else by then.
static INHERITED_TAKEN: AtomicBool = AtomicBool::new(false);

/// What the running server is (for the `env` page); defaults before
/// [`Server::run`] has decided.
pub fn facts() -> ServerFacts {
    FACTS.get().cloned().unwrap_or_default()
}

/// The default worker count: two per CPU, at least two. A worker running
/// a CGI program mostly waits for it, so one per CPU would leave CPUs
/// idle; more than a few per CPU only adds contention.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_mul(2)
        .max(2)
}

/// Settings, then [`Server::run`].
///
/// ```no_run
/// use std::io::Write;
/// fcgi_launch::Server::new(|_req: &mut fcgi_launch::Request,
///                           resp: &mut fcgi_launch::Response| {
///     resp.write_all(b"Content-Type: text/plain\r\n\r\nhi\n")
/// })
/// .workers(4)
/// .run()
/// .unwrap();
/// ```
pub struct Server {
    handler: Arc<dyn Handler>,
    mode: Option<ForcedMode>,
    bind: Option<BindAddr>,
    socket_mode: Option<u32>,
    /// None: [`default_workers`], computed only if FastCGI is served.
    workers: Option<usize>,
    cfg: ServerConfig,
}

impl Server {
    /// A server for `handler` with the default settings.
    pub fn new(handler: impl Handler) -> Server {
        Server::from_arc(Arc::new(handler))
    }

    /// A server for a shared handler.
    pub fn from_arc(handler: Arc<dyn Handler>) -> Server {
        Server {
            handler,
            mode: None,
            bind: None,
            socket_mode: None,
            workers: None,
            cfg: ServerConfig {
                workers: 1,
                max_conns: DEFAULT_MAX_CONNS,
                io_timeout: Duration::from_secs(DEFAULT_IO_TIMEOUT_SECS),
                grace: Duration::from_secs(DEFAULT_GRACE_SECS),
                limits: Limits::default(),
                allow: None,
            },
        }
    }

    /// Worker threads: FastCGI requests served at once (at least 1).
    pub fn workers(mut self, n: usize) -> Server {
        self.workers = Some(n.max(1));
        self
    }

    /// Serves FastCGI on `addr` (see [`BindAddr::parse`]) instead of
    /// detecting the mode.
    pub fn bind(mut self, addr: &str) -> Result<Server> {
        self.bind = Some(BindAddr::parse(addr)?);
        Ok(self)
    }

    /// Serves FastCGI on an already parsed address.
    pub fn bind_addr(mut self, addr: BindAddr) -> Server {
        self.bind = Some(addr);
        self
    }

    /// Forces CGI or FastCGI instead of detecting it.
    pub fn mode(mut self, mode: ForcedMode) -> Server {
        self.mode = Some(mode);
        self
    }

    /// Permissions of a unix socket made by [`Server::bind`].
    pub fn socket_mode(mut self, mode: u32) -> Server {
        self.socket_mode = Some(mode);
        self
    }

    /// Connections kept open at once.
    pub fn max_conns(mut self, n: usize) -> Server {
        self.cfg.max_conns = n.max(1);
        self
    }

    /// How long a web server may stall in the middle of a request.
    pub fn io_timeout(mut self, t: Duration) -> Server {
        self.cfg.io_timeout = t;
        self
    }

    /// How long requests in flight may run on after SIGTERM.
    pub fn grace(mut self, t: Duration) -> Server {
        self.cfg.grace = t;
        self
    }

    /// Bounds on each request's params.
    pub fn limits(mut self, limits: Limits) -> Server {
        self.cfg.limits = limits;
        self
    }

    /// Accepts TCP peers only from these addresses (added to those of
    /// `FCGI_WEB_SERVER_ADDRS`).
    pub fn allow(mut self, addrs: Vec<IpAddr>) -> Server {
        self.cfg.allow.get_or_insert_with(Vec::new).extend(addrs);
        self
    }

    /// Detects how the process was started and serves until told to
    /// stop (FastCGI) or for the one request (CGI).
    ///
    /// While it serves FastCGI it handles SIGTERM, SIGINT and SIGHUP, and
    /// uses the real-time signal `SIGRTMIN+3` between its worker threads
    /// (a worker waiting on a quiet connection is interrupted to take
    /// other work); the program should leave these signals alone
    /// meanwhile.
    pub fn run(mut self) -> Result<()> {
        sys::ensure_std_fds()
            .map_err(|e| Error::io("opening /dev/null on fds 0-2", e))?;
        sys::cloexec_inherited_fds().map_err(|e| {
            Error::io("listing inherited fds in /proc/self/fd", e)
        })?;
        let mode =
            mode::decide(&mode::probe(), self.mode, self.bind.as_ref())?;
        let workers = match mode {
            Mode::Cgi => 1,
            _ => self.workers.unwrap_or_else(default_workers),
        };
        let _ = FACTS.set(ServerFacts {
            mode: mode.to_string(),
            workers,
        });
        log::debug!("mode: {mode}");
        let inherited =
            matches!(mode, Mode::FastCgiFd0 | Mode::SocketActivated(_));
        if inherited && INHERITED_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(Error::usage(
                "the inherited listening sockets were taken by an earlier \
                 run in this process",
            ));
        }
        let listeners = match mode {
            Mode::Cgi => return cgi::serve_cgi(&*self.handler),
            Mode::FastCgiFd0 => vec![Listener::from_fd(0)?],
            Mode::SocketActivated(fds) => fds
                .into_iter()
                .map(Listener::from_fd)
                .collect::<Result<Vec<_>>>()?,
            Mode::Bind(addr) => vec![Listener::bind(&addr, self.socket_mode)?],
        };
        if let Some(env) = web_server_addrs()? {
            self.cfg.allow.get_or_insert_with(Vec::new).extend(env);
        }
        self.cfg.workers = workers;
        let signals = Signals::install()?;
        server::serve(listeners, self.handler, self.cfg, &signals)
    }
}

/// `FCGI_WEB_SERVER_ADDRS`: comma-separated addresses of the web servers
/// allowed to connect over TCP (the libfcgi convention).
fn web_server_addrs() -> Result<Option<Vec<IpAddr>>> {
    let Ok(v) = std::env::var("FCGI_WEB_SERVER_ADDRS") else {
        return Ok(None);
    };
    let addrs = v
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|_| {
                Error::usage(format!(
                    "FCGI_WEB_SERVER_ADDRS: {a:?} is not an IP address"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((!addrs.is_empty()).then_some(addrs))
}

/// Detects the mode and serves `handler` with the default settings: the
/// one call a dual-mode program needs. Signals are used as
/// [`Server::run`] says.
pub fn serve(handler: impl Handler) -> Result<()> {
    crate::logging::init(0);
    Server::new(handler).run()
}
