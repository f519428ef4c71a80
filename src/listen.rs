//! Listening sockets and accepted connections: from fd 0, from systemd's
//! `LISTEN_FDS`, or bound by `--bind`. Owns the bind-address syntax, stale
//! unix-socket removal, socket permissions and unlinking on exit. Reads no
//! request: accepted connections are handed out as [`Stream`]s.

use std::fmt;
use std::io;
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fcgi::conn::Wire;
use crate::sys::{self, Interest};

/// Where `--bind` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP `host:port` (host may be a name, an IPv4 or a `[v6]`).
    Tcp(String),
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            BindAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl BindAddr {
    /// Parses the ADDR forms of DESIGN §2, fcgiwrap's `-s` forms among
    /// them: `unix:/path`, `/path`, `./path`, `tcp:HOST:PORT`,
    /// `tcp6:[V6]:PORT`, `HOST:PORT`, `[V6]:PORT`.
    pub fn parse(s: &str) -> Result<BindAddr> {
        let bad =
            |why: &str| Error::usage(format!("bad address {s:?}: {why}"));
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return Ok(BindAddr::Unix(PathBuf::from(s)));
        }
        let hostport = s
            .strip_prefix("tcp:")
            .or_else(|| s.strip_prefix("tcp6:"))
            .or_else(|| s.strip_prefix("tcp4:"))
            .unwrap_or(s);
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| bad("expected [IPV6]:PORT"))?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address"))?;
            (v6, port)
        } else {
            hostport
                .rsplit_once(':')
                .ok_or_else(|| bad("expected unix:PATH, /PATH or HOST:PORT"))?
        };
        if host.is_empty()
            || (host.contains(':') && !hostport.starts_with('['))
        {
            return Err(bad(
                "expected HOST:PORT, with an IPv6 host in brackets",
            ));
        }
        port.parse::<u16>()
            .map_err(|_| bad("port must be a number from 0 to 65535"))?;
        Ok(BindAddr::Tcp(hostport.to_string()))
    }
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A unix-domain socket; `owned` is set when we created the path and
    /// so must remove it on exit.
    Unix {
        /// The socket.
        sock: UnixListener,
        /// Path and inode of a socket file we created.
        owned: Mutex<Option<(PathBuf, u64)>>,
    },
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `addr`. A unix socket path left by a dead server is removed
    /// first; one a live server answers on is an error. `mode` sets the
    /// socket file's permissions.
    pub fn bind(addr: &BindAddr, mode: Option<u32>) -> Result<Listener> {
        match addr {
            BindAddr::Unix(path) => bind_unix(path, mode),
            BindAddr::Tcp(hostport) => {
                let what = || format!("binding {addr}");
                let addrs: Vec<_> = hostport
                    .to_socket_addrs()
                    .map_err(|e| Error::io(what(), e))?
                    .collect();
                let sock = TcpListener::bind(&addrs[..])
                    .map_err(|e| Error::io(what(), e))?;
                let l = Listener::Tcp(sock);
                l.prepare().map_err(|e| Error::io(what(), e))?;
                Ok(l)
            }
        }
    }

    /// Adopts an inherited listening socket (fd 0, or systemd's fd 3...).
    /// Takes ownership of `fd`: the caller makes sure nothing else owns
    /// it (see `launch`, which adopts each inherited fd once).
    pub(crate) fn from_fd(fd: RawFd) -> Result<Listener> {
        let what = || format!("using inherited socket fd {fd}");
        let owned: OwnedFd =
            sys::adopt_fd(fd).map_err(|e| Error::io(what(), e))?;
        let family =
            sys::socket_family(fd).map_err(|e| Error::io(what(), e))?;
        let l = if sys::is_unix_family(family) {
            Listener::Unix {
                sock: UnixListener::from(owned),
                owned: Mutex::new(None),
            }
        } else {
            Listener::Tcp(TcpListener::from(owned))
        };
        l.prepare().map_err(|e| Error::io(what(), e))?;
        Ok(l)
    }

    /// Puts the socket in blocking mode with a receive timeout of
    /// [`WAIT_SLICE`], which bounds every wait in `accept` (see
    /// [`Listener::accept_within`]; [`Listener::accept`] does not wait).
    fn prepare(&self) -> io::Result<()> {
        let fd = self.as_raw_fd();
        sys::set_nonblocking(fd, false)?;
        sys::set_recv_timeout(fd, WAIT_SLICE)
    }

    /// Accepts one connection if one is waiting, without waiting; None if
    /// none is (another process sharing the socket took it, say).
    pub fn accept(&self, timeout: Duration) -> io::Result<Option<Stream>> {
        match sys::accept_now(self.as_raw_fd()) {
            Ok(fd) => Ok(self.stream(fd, timeout)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Accepts one connection, waiting up to `wait` (one slice at least)
    /// for it in `accept` itself; None if none came, or if a kick (see
    /// `server`) ended the wait. No other thread of ours may be in
    /// [`Listener::accept`] meanwhile (it makes the socket non-blocking
    /// for a moment).
    ///
    /// The wait is in slices of [`WAIT_SLICE`] (the socket's receive
    /// timeout): a kick that lands just before a slice's `accept` starts,
    /// and so does not interrupt it, is seen when the slice ends.
    pub fn accept_within(
        &self,
        timeout: Duration,
        wait: Duration,
    ) -> io::Result<Option<Stream>> {
        let fd = self.as_raw_fd();
        let slices = slices(wait);
        let mut accepted = None;
        for _ in 0..slices {
            if sys::kick_pending() {
                break;
            }
            let start = Instant::now();
            match sys::accept(fd) {
                Ok(new) => {
                    accepted = Some(new);
                    break;
                }
                // Back at once: the socket is non-blocking after all (a
                // process sharing it made it so). Wait in poll instead.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && start.elapsed() < WAIT_SLICE / 2 =>
                {
                    if sys::kick_pending()
                        || !sys::wait_readable_unless_signalled(
                            fd, WAIT_SLICE,
                        )?
                    {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => return Err(e),
            }
        }
        match accepted {
            Some(fd) => Ok(self.stream(fd, timeout)),
            None => Ok(None),
        }
    }

    /// An accepted connection, with waits bounded by `timeout`; None if
    /// the client reset it before we took it (its address is gone then:
    /// ENOTCONN), which concerns that connection only.
    fn stream(&self, fd: OwnedFd, timeout: Duration) -> Option<Stream> {
        let (inner, peer, ip) = match self {
            Listener::Unix { .. } => {
                (Inner::Unix(UnixStream::from(fd)), String::new(), None)
            }
            Listener::Tcp(_) => {
                let s = TcpStream::from(fd);
                let _ = s.set_nodelay(true);
                let addr = match s.peer_addr() {
                    Ok(a) => a,
                    Err(e) => {
                        log::debug!("accepted on {self}, then gone: {e}");
                        return None;
                    }
                };
                (Inner::Tcp(s), addr.to_string(), Some(addr.ip()))
            }
        };
        Some(Stream {
            inner,
            peer,
            ip,
            timeout,
            recv_timeout: AtomicU64::new(0),
        })
    }

    /// Removes our socket file now (at shutdown, so new clients are
    /// refused at once); the drop does nothing more.
    pub fn unlink(&self) {
        if let Listener::Unix { owned, .. } = self {
            let taken = owned.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some((path, ino)) = taken {
                // Never remove a socket another server has put there since.
                if std::fs::metadata(&path).is_ok_and(|m| m.ino() == ino) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Unix { sock, .. } => sock.as_raw_fd(),
            Listener::Tcp(sock) => sock.as_raw_fd(),
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Unix { sock, .. } => match sock.local_addr() {
                Ok(a) => match a.as_pathname() {
                    Some(p) => write!(f, "unix:{}", p.display()),
                    None => write!(f, "unix socket fd {}", sock.as_raw_fd()),
                },
                Err(_) => write!(f, "unix socket fd {}", sock.as_raw_fd()),
            },
            Listener::Tcp(sock) => match sock.local_addr() {
                Ok(a) => write!(f, "tcp:{a}"),
                Err(_) => write!(f, "tcp socket fd {}", sock.as_raw_fd()),
            },
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.unlink();
    }
}

fn bind_unix(path: &Path, mode: Option<u32>) -> Result<Listener> {
    let what = || format!("binding unix socket {:?}", path);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::usage(format!(
                    "binding unix socket {path:?}: a server is already answering on it"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("removing stale socket {path:?}");
                std::fs::remove_file(path).map_err(|e| Error::io(what(), e))?;
            }
            Err(e) => return Err(Error::io(what(), e)),
        },
        Ok(_) => {
            return Err(Error::usage(format!(
                "binding unix socket {path:?}: the path exists and is not a socket"
            )))
        }
        Err(_) => {}
    }
    let sock = UnixListener::bind(path).map_err(|e| Error::io(what(), e))?;
    let ino = std::fs::metadata(path)
        .map_err(|e| Error::io(what(), e))?
        .ino();
    let l = Listener::Unix {
        sock,
        owned: Mutex::new(Some((path.to_path_buf(), ino))),
    };
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| {
                Error::io(format!("setting mode {mode:o} on {path:?}"), e)
            })?;
    }
    l.prepare().map_err(|e| Error::io(what(), e))?;
    Ok(l)
}

#[derive(Debug)]
enum Inner {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Longest single wait of [`Wire::read_within`] and
/// [`Listener::accept_within`].
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// How many waits of at most [`WAIT_SLICE`] make up `wait` (one at least).
fn slices(wait: Duration) -> u32 {
    let n = wait.as_nanos().div_ceil(WAIT_SLICE.as_nanos()).max(1);
    n.min(u128::from(u32::MAX)) as u32
}

/// An accepted connection, with waits bounded by its I/O timeout. The
/// socket is in blocking mode, but only [`Wire::read_within`] waits in a
/// system call; every other read and write returns at once.
#[derive(Debug)]
pub struct Stream {
    inner: Inner,
    peer: String,
    ip: Option<IpAddr>,
    timeout: Duration,
    /// The socket's receive timeout in microseconds (0: never set).
    recv_timeout: AtomicU64,
}

impl Stream {
    /// The peer, for log lines.
    pub fn peer(&self) -> &str {
        if self.peer.is_empty() {
            "unix socket peer"
        } else {
            &self.peer
        }
    }

    /// The peer's IP address; None on a unix socket.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// Receives; a waiting receive interrupted by a signal (a kick, see
    /// `server`) returns `WouldBlock`, as at its timeout.
    fn recv(&self, buf: &mut [u8], wait: bool) -> io::Result<usize> {
        loop {
            match sys::recv(self.as_raw_fd(), buf, wait) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if wait {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
                // A reset peer is a closed peer.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(0)
                }
                r => return r,
            }
        }
    }

    fn wait(&self, interest: Interest) -> io::Result<()> {
        if sys::wait_fd(self.as_raw_fd(), interest, self.timeout)? {
            Ok(())
        } else {
            let dir = match interest {
                Interest::Read => "sent nothing",
                Interest::Write => "read nothing",
            };
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer {dir} for {} s", self.timeout.as_secs_f32()),
            ))
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match &self.inner {
            Inner::Unix(s) => s.as_raw_fd(),
            Inner::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Wire for Stream {
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf, false)
    }

    /// Waits in slices of at most [`WAIT_SLICE`], each a read with that
    /// receive timeout: a kick (see `server`) that lands just before a
    /// slice's read starts, and so does not interrupt it, is seen when
    /// the slice ends.
    fn read_within(
        &self,
        buf: &mut [u8],
        wait: Duration,
    ) -> io::Result<usize> {
        let slices = slices(wait);
        let slice = wait / slices;
        let micros = slice.as_micros().max(1) as u64;
        if self.recv_timeout.swap(micros, Ordering::Relaxed) != micros {
            if let Err(e) = sys::set_recv_timeout(self.as_raw_fd(), slice) {
                self.recv_timeout.store(0, Ordering::Relaxed);
                return Err(e);
            }
        }
        for _ in 0..slices {
            if sys::kick_pending() {
                break;
            }
            match self.recv(buf, true) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn wait_readable(&self) -> io::Result<()> {
        self.wait(Interest::Read)
    }

    fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match sys::send(self.as_raw_fd(), buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(Interest::Write)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn hung_up(&self) -> bool {
        sys::peer_hung_up(self.as_raw_fd())
    }

    fn shutdown_write(&self) {
        let _ = match &self.inner {
            Inner::Unix(s) => s.shutdown(Shutdown::Write),
            Inner::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_reset_before_it_is_taken_is_no_connection() {
        // getpeername fails with ENOTCONN on a reset connection, as on any
        // socket with no peer (here: a second listening socket).
        let l = Listener::Tcp(TcpListener::bind("127.0.0.1:0").expect("bind"));
        let no_peer = TcpListener::bind("127.0.0.1:0").expect("bind");
        let got = l.stream(OwnedFd::from(no_peer), Duration::from_secs(1));
        assert!(got.is_none());
    }

    #[test]
    fn parses_every_bind_form() {
        let unix = |p: &str| Ok(BindAddr::Unix(PathBuf::from(p)));
        let tcp = |a: &str| Ok(BindAddr::Tcp(a.to_string()));
        let table: &[(&str, Result<BindAddr>)] = &[
            ("unix:/run/a.sock", unix("/run/a.sock")),
            ("unix:rel.sock", unix("rel.sock")),
            ("/tmp/a.sock", unix("/tmp/a.sock")),
            ("./a.sock", unix("./a.sock")),
            ("tcp:127.0.0.1:9000", tcp("127.0.0.1:9000")),
            ("tcp:localhost:9000", tcp("localhost:9000")),
            ("127.0.0.1:9000", tcp("127.0.0.1:9000")),
            ("[::1]:9000", tcp("[::1]:9000")),
            ("tcp6:[::1]:9000", tcp("[::1]:9000")),
            ("tcp:[::1]:9000", tcp("[::1]:9000")),
        ];
        for (input, want) in table {
            let got = BindAddr::parse(input);
            assert_eq!(got.ok(), want.as_ref().ok().cloned(), "{input}");
        }
        for bad in [
            "unix:",
            "9000",
            "::1:9000",
            "host:",
            "host:99999",
            "[x]:1",
            "a b",
        ] {
            assert!(BindAddr::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
