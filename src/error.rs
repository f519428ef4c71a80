//! The one error type of the crate, and the exit-status contract.
//!
//! Every failure a user can see is an [`Error`]: its `Display` says what was
//! being attempted, on what, and why (`binding "/run/app.sock": Permission
//! denied`). The binary turns it into a message on stderr and an exit
//! status:
//!
//! | status | meaning                                              |
//! |--------|------------------------------------------------------|
//! | 0      | clean exit                                           |
//! | 1      | runtime or system failure (I/O, a syscall, a signal) |
//! | 2      | usage or configuration error                         |
//!
//! The same table is in the man page, section EXIT STATUS.

use std::fmt;
use std::io;

/// Exit status of a clean run.
pub const EXIT_OK: u8 = 0;
/// Exit status of a runtime or system failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// An error from fcgi-launch: a usage mistake, a protocol violation by a
/// peer, or an operating-system failure, always with its context.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The command line or configuration is wrong.
    Usage(String),
    /// A peer broke the FastCGI protocol.
    Protocol(String),
    /// A system call failed while doing `what`.
    Io { what: String, source: io::Error },
}

impl Error {
    /// A usage or configuration error (exit status 2).
    pub fn usage(msg: impl Into<String>) -> Error {
        Error {
            kind: Kind::Usage(msg.into()),
        }
    }

    /// A violation of the FastCGI protocol by the peer.
    pub fn protocol(msg: impl Into<String>) -> Error {
        Error {
            kind: Kind::Protocol(msg.into()),
        }
    }

    /// An I/O error while doing `what` (e.g. `binding "/run/x.sock"`).
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error {
            kind: Kind::Io {
                what: what.into(),
                source,
            },
        }
    }

    /// The process exit status this error maps to (see the module table).
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Usage(_) => EXIT_USAGE,
            Kind::Protocol(_) | Kind::Io { .. } => EXIT_FAILURE,
        }
    }

    /// True if and only if this is a usage or configuration error.
    pub fn is_usage(&self) -> bool {
        matches!(self.kind, Kind::Usage(_))
    }

    /// The underlying OS error, if and only if this error came from one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.kind {
            Kind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Usage(msg) | Kind::Protocol(msg) => f.write_str(msg),
            Kind::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e.kind {
            Kind::Io { source, .. } => source,
            Kind::Protocol(msg) => {
                io::Error::new(io::ErrorKind::InvalidData, msg)
            }
            Kind::Usage(msg) => {
                io::Error::new(io::ErrorKind::InvalidInput, msg)
            }
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_attempt_object_and_cause() {
        let e = Error::io(
            "binding \"/run/x.sock\"",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(
            e.to_string(),
            "binding \"/run/x.sock\": permission denied"
        );
        assert_eq!(e.exit_code(), EXIT_FAILURE);
        assert_eq!(Error::usage("bad").exit_code(), EXIT_USAGE);
    }
}
