//! Signal handling by self-pipe (signal-hook's pattern): SIGTERM, SIGINT
//! and SIGHUP only write their number to a non-blocking pipe; the server
//! reads the pipe in its own time. Installed by `main` before any thread
//! starts. SIGPIPE stays ignored (Rust's runtime ignores it), so a web
//! server that hangs up shows as a write error, not a dead process.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys::{self, Interest};

/// The signals handled through the pipe.
const HANDLED: &[i32] = &[sys::sig::TERM, sys::sig::INT, sys::sig::HUP];

/// The signals that stop or reload us, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop.
    Stop,
    /// SIGHUP: reload (rolling restart under `--spawn`).
    Reload,
}

/// The read end of the signal pipe.
#[derive(Debug)]
pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Signals {
    /// Installs the handlers. Call once, before threads exist.
    pub fn install() -> Result<Signals> {
        let what = |e| Error::io("installing signal handlers", e);
        let (read, write) = sys::pipe().map_err(what)?;
        sys::install_signal_pipe(write.as_raw_fd(), HANDLED).map_err(what)?;
        Ok(Signals {
            read,
            _write: write,
        })
    }

    /// The fd that becomes readable when a signal arrives.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Waits up to `timeout` and returns the signals received meanwhile.
    pub fn wait(&self, timeout: Duration) -> Vec<Signal> {
        if !sys::wait_fd(self.fd(), Interest::Read, timeout).unwrap_or(false) {
            return Vec::new();
        }
        sys::read_bytes(self.fd())
            .into_iter()
            .map(|b| {
                if i32::from(b) == sys::sig::HUP {
                    Signal::Reload
                } else {
                    Signal::Stop
                }
            })
            .collect()
    }
}

impl Drop for Signals {
    /// A library user's program may go on after serving: the signals get
    /// their default actions back before the pipe closes.
    fn drop(&mut self) {
        sys::uninstall_signal_pipe(HANDLED);
    }
}
