//! The only module that calls `libc` or uses `unsafe`: thin, policy-free
//! wrappers that turn system calls into `io::Result`s. Which mode to run
//! in, what to log and when to retry are decided elsewhere.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// Runs a libc call and turns a `-1` result into the thread's `errno`.
macro_rules! syscall {
    ($call:expr) => {{
        let r = $call;
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }};
}

/// What fd 0 (or any fd) is, as far as mode detection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// Not open.
    Closed,
    /// A socket that listens (`SO_ACCEPTCONN`, or no peer: `ENOTCONN`).
    ListeningSocket,
    /// A socket with a peer (Apache mod_cgid hands CGI scripts one).
    ConnectedSocket,
    /// A terminal.
    Terminal,
    /// Anything else: a pipe, a file, /dev/null.
    Other,
}

/// Classifies `fd` without changing it.
pub fn fd_kind(fd: RawFd) -> FdKind {
    // SAFETY: fstat writes into a zeroed stat buffer we own; a bad fd
    // only makes it fail with EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is valid for writes.
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        return FdKind::Closed;
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        // SAFETY: isatty only inspects the fd.
        return if unsafe { libc::isatty(fd) } == 1 {
            FdKind::Terminal
        } else {
            FdKind::Other
        };
    }
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option buffer is a c_int of the given length.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        return if listening != 0 {
            FdKind::ListeningSocket
        } else {
            FdKind::ConnectedSocket
        };
    }
    // No SO_ACCEPTCONN (old kernels): a socket without a peer listens.
    // SAFETY: a zeroed sockaddr_storage is a valid output buffer.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut alen =
        std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr/alen describe a buffer we own.
    let r = unsafe {
        libc::getpeername(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut alen,
        )
    };
    if r == -1
        && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
    {
        FdKind::ListeningSocket
    } else {
        FdKind::ConnectedSocket
    }
}

/// The address family of the socket `fd` (`AF_UNIX`, `AF_INET`, ...).
pub fn socket_family(fd: RawFd) -> io::Result<i32> {
    // SAFETY: a zeroed sockaddr_storage is a valid output buffer.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len =
        std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr/len describe a buffer we own.
    syscall!(unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    Ok(i32::from(addr.ss_family))
}

/// True if and only if `family` is `AF_UNIX`.
pub fn is_unix_family(family: i32) -> bool {
    family == libc::AF_UNIX
}

/// Takes ownership of an inherited fd (fd 0 from spawn-fcgi, fd 3... from
/// systemd) and marks it close-on-exec so no child inherits it.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only inspects the fd; it fails with EBADF if closed.
    syscall!(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the fd is open (checked above) and is handed to us by our
    // parent; main adopts each inherited fd exactly once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(owned.as_raw_fd())?;
    Ok(owned)
}

/// Sets `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we hold; no memory is passed.
    let flags = syscall!(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above.
    syscall!(unsafe {
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)
    })?;
    Ok(())
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if not), so that no
/// socket or file we open later lands on them (slowcgi does the same).
pub fn ensure_std_fds() -> io::Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD only inspects the fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            let path = b"/dev/null\0";
            // SAFETY: a NUL-terminated path literal; the new fd is the
            // lowest free one, which is `fd`, and is kept open for good.
            syscall!(unsafe {
                libc::open(path.as_ptr().cast(), libc::O_RDWR)
            })?;
        }
    }
    Ok(())
}

/// Accepts a connection on listening socket `fd`, close-on-exec and in
/// blocking mode: each read and write on it says whether it may wait
/// ([`recv`], [`send`]), so a wait can be done in the read itself. A
/// signal that interrupts the wait is reported (`Interrupted`), not
/// retried.
pub fn accept(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: null address buffers are allowed; the flags are valid.
    let r = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    let new = syscall!(r)?;
    // SAFETY: accept4 returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Accepts a connection on listening socket `fd` (in blocking mode) if
/// one is waiting, without waiting: `WouldBlock` if none is. The socket
/// is non-blocking for just this call (FIONBIO; no other thread of ours
/// waits on it meanwhile), so a connection that another process sharing
/// the socket took first costs no wait.
pub fn accept_now(fd: RawFd) -> io::Result<OwnedFd> {
    let set = |on: libc::c_int| {
        // SAFETY: FIONBIO reads one int we own.
        syscall!(unsafe { libc::ioctl(fd, libc::FIONBIO, &on) })
    };
    set(1)?;
    let r = accept(fd);
    // A socket left non-blocking only makes accept duty wait in poll
    // (see `listen`): not worth losing the connection over.
    let _ = set(0);
    r
}

/// Receives into `buf` from socket `fd`. Without `wait`, `WouldBlock` if
/// nothing is there; with it, the call waits as long as the socket's
/// receive timeout ([`set_recv_timeout`]) if `fd` is in blocking mode.
pub fn recv(fd: RawFd, buf: &mut [u8], wait: bool) -> io::Result<usize> {
    let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = syscall!(unsafe {
        libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags)
    })?;
    Ok(n as usize)
}

/// Sends from `buf` on socket `fd` without waiting (`WouldBlock` if there
/// is no room) and without SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let n = syscall!(unsafe {
        libc::send(fd, buf.as_ptr().cast(), buf.len(), flags)
    })?;
    Ok(n as usize)
}

/// Sets how long a waiting read on socket `fd` waits (`SO_RCVTIMEO`, at
/// least 1 µs; the kernel rounds it up to a clock tick) before it fails
/// with `WouldBlock`.
pub fn set_recv_timeout(fd: RawFd, timeout: Duration) -> io::Result<()> {
    // Zero would mean "no timeout".
    let timeout = timeout.max(Duration::from_micros(1));
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: tv is a valid timeval and its size is passed.
    syscall!(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// True if and only if `e`, from `accept`, concerns only the connection
/// being taken (aborted before we took it, refused by a firewall rule, or a
/// network error already pending on it, which accept(2) says to treat like
/// EAGAIN), or no connection was there: the next call may well succeed.
pub fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EAGAIN
                | libc::EINTR
                | libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::EPERM
                | libc::EPROTO
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ETIMEDOUT
        )
    )
}

/// A pidfd for process `pid` (pidfd_open(2), Linux 5.3+): it becomes
/// readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: the syscall takes a pid and flags and returns a new fd.
    let fd =
        unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just created and is owned by nobody else; it is
    // close-on-exec (pidfd_open sets O_CLOEXEC).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Our process id.
pub fn getpid() -> u32 {
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    pid as u32
}

/// Readiness interest for [`Poller`] and [`wait_fd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Wait until the fd is readable (or hung up).
    Read,
    /// Wait until the fd is writable (or hung up).
    Write,
}

/// Waits until `fd` is ready for `interest`, at most `timeout`. Returns
/// true if and only if it became ready (hang-ups and errors count as
/// ready: the next read or write reports them).
pub fn wait_fd(
    fd: RawFd,
    interest: Interest,
    timeout: Duration,
) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    Ok(poll_fds(&[Some(fd)], events, timeout)? != 0)
}

/// Waits until one of `fds` (None: skipped) is readable or hung up, at
/// most `timeout`; returns a bit mask, bit i for `fds[i]` (0: timeout).
pub fn poll_readable(
    fds: &[Option<RawFd>],
    timeout: Duration,
) -> io::Result<u32> {
    poll_fds(fds, libc::POLLIN, timeout)
}

/// Waits until `fd` is readable (or hung up), at most `timeout`: true if
/// it is, or if the wait timed out; false if a signal ended the wait.
pub fn wait_readable_unless_signalled(
    fd: RawFd,
    timeout: Duration,
) -> io::Result<bool> {
    let mut pfd = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    match ppoll(&mut pfd, timeout) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// One ppoll(2) call on `pfds`, with a timeout finer than poll(2)'s
/// milliseconds and no signal mask; `Interrupted` if a signal ended it.
fn ppoll(pfds: &mut [libc::pollfd], timeout: Duration) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: the pollfds of a slice we borrow, a timespec we own, and no
    // signal mask.
    syscall!(unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    })?;
    Ok(())
}

/// [`ppoll`] for up to four fds waiting for `events`, again after a
/// signal; the ready ones as a bit mask.
fn poll_fds(
    fds: &[Option<RawFd>],
    events: libc::c_short,
    timeout: Duration,
) -> io::Result<u32> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    let n = fds.len().min(pfds.len());
    for (p, fd) in pfds.iter_mut().zip(&fds[..n]) {
        // A negative fd is ignored by poll(2).
        p.fd = fd.unwrap_or(-1);
        p.events = events;
    }
    loop {
        match ppoll(&mut pfds[..n], timeout) {
            Ok(()) => {
                let mut mask = 0;
                for (i, p) in pfds[..n].iter().enumerate() {
                    if p.revents != 0 {
                        mask |= 1 << i;
                    }
                }
                return Ok(mask);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd we hold; no memory is passed.
    let flags = syscall!(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    syscall!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) })?;
    Ok(())
}

/// A new temporary file that has no name (`O_TMPFILE`, or created and
/// unlinked at once where the file system lacks it): gone when closed.
pub fn temp_file() -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir);
    if let Ok(f) = tmpfile {
        return Ok(f);
    }
    let path = dir.join(format!(
        "fcgi-launch-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// True if and only if the peer of socket `fd` has closed or reset it
/// (POLLRDHUP, POLLHUP or POLLERR now, without waiting).
pub fn peer_hung_up(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd we own, count 1, no wait.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0
        && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// An epoll instance shared by several waiting threads: one-shot and
/// edge-triggered registrations report each readiness to one thread.
#[derive(Debug)]
pub struct Poller {
    ep: OwnedFd,
}

impl Poller {
    /// Creates the epoll instance (close-on-exec).
    pub fn new() -> io::Result<Poller> {
        let fd =
            // SAFETY: epoll_create1 returns a new fd or -1.
            syscall!(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the fd was just created and is owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller { ep })
    }

    fn ctl(
        &self,
        op: i32,
        fd: RawFd,
        token: u64,
        flags: u32,
    ) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: flags,
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        syscall!(unsafe {
            libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev)
        })?;
        Ok(())
    }

    fn oneshot_flags() -> u32 {
        (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32
    }

    /// Registers `fd` for one readability report carrying `token`.
    pub fn add_oneshot(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, Self::oneshot_flags())
    }

    /// Registers `fd` edge-triggered for readability: each arrival of
    /// bytes (or a hang-up) is reported once, to one waiter.
    pub fn add_edge(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, Self::edge_flags())
    }

    fn edge_flags() -> u32 {
        (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32
    }

    /// Registers `fd` level-triggered, reported to every waiter until it
    /// is drained or removed (used for the shutdown pipe).
    pub fn add_level(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, libc::EPOLLIN as u32)
    }

    /// Arms a one-shot registration again.
    pub fn rearm(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, Self::oneshot_flags())
    }

    /// Removes a registration.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for one event at most `timeout` (None: forever); returns its
    /// token, or None on timeout or signal interruption.
    pub fn wait_one(
        &self,
        timeout: Option<Duration>,
    ) -> io::Result<Option<u64>> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        let ms =
            timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: one epoll_event buffer we own, maxevents 1.
        match syscall!(unsafe {
            libc::epoll_wait(self.ep.as_raw_fd(), &mut ev, 1, ms)
        }) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(ev.u64)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A pipe whose both ends are non-blocking and close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe_with(libc::O_NONBLOCK)
}

/// A pipe whose both ends block and are close-on-exec: (read, write), for
/// a child's stdio.
pub fn blocking_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe_with(0)
}

fn pipe_with(flags: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    syscall!(unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | flags)
    })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(
        unsafe {
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        },
    )
}

/// Writes the byte `b` to `fd`, ignoring every error; async-signal-safe.
pub fn write_byte(fd: RawFd, b: u8) {
    let b = [b];
    // SAFETY: write(2) is async-signal-safe; the buffer is one byte we own.
    unsafe {
        libc::write(fd, b.as_ptr().cast(), 1);
    }
}

/// Reads what the non-blocking `fd` holds, up to 64 bytes.
pub fn read_bytes(fd: RawFd) -> Vec<u8> {
    let mut buf = [0u8; 64];
    // SAFETY: buf is ours and its length is passed.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    buf[..n.max(0) as usize].to_vec()
}

/// The write end of the signal pipe, read by the handler.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let errno = io::Error::last_os_error().raw_os_error();
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        write_byte(fd, sig as u8);
    }
    // write(2) may change errno; restore it for the interrupted code.
    if let Some(e) = errno {
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = e };
    }
}

/// Makes each of `signals` write its number as one byte to `pipe_fd` (a non-blocking
/// pipe). Only the byte is written: no lock, no allocation, no logging.
pub fn install_signal_pipe(pipe_fd: RawFd, signals: &[i32]) -> io::Result<()> {
    SIGNAL_PIPE.store(pipe_fd, Ordering::Relaxed);
    for &sig in signals {
        // SAFETY: a zeroed sigaction is valid; we set a plain handler
        // whose body is async-signal-safe (write(2) and errno only).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            syscall!(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

/// Gives `signals` back their default action and forgets the pipe, so
/// a signal after the pipe is closed never writes into a reused fd.
pub fn uninstall_signal_pipe(signals: &[i32]) {
    for &sig in signals {
        // SAFETY: SIG_DFL is a valid disposition for these signals.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    SIGNAL_PIPE.store(-1, Ordering::Relaxed);
}

/// A thread, as [`kick`] names it.
pub type ThreadHandle = libc::pthread_t;

/// The calling thread.
pub fn this_thread() -> ThreadHandle {
    // SAFETY: pthread_self cannot fail.
    unsafe { libc::pthread_self() }
}

/// The signal that [`kick`] sends: a real-time signal, which nothing
/// else sends by convention.
fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 3
}

thread_local! {
    /// A kick reached this thread (set by the signal handler).
    static KICKED: std::sync::atomic::AtomicBool =
        const { std::sync::atomic::AtomicBool::new(false) };
}

extern "C" fn on_kick(_: libc::c_int) {
    // A const-initialised thread-local without destructor is a plain TLS
    // access: async-signal-safe.
    KICKED.with(|k| k.store(true, Ordering::SeqCst));
}

/// True if a kick reached this thread since [`take_signals`] or
/// [`forget_kick`]: a waiting read about to start should not (the kick may
/// have landed before it).
pub fn kick_pending() -> bool {
    KICKED.with(|k| k.load(Ordering::SeqCst))
}

/// Makes sure the kick signal is not blocked in the calling thread (a
/// program may start the server from a thread that blocks signals).
pub fn unblock_kick() -> io::Result<()> {
    // SAFETY: a sigset_t we own, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
        let r = libc::pthread_sigmask(
            libc::SIG_UNBLOCK,
            &set,
            std::ptr::null_mut(),
        );
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

/// While alive, the kick signal only marks the thread it reaches (see
/// [`kick_pending`]) and interrupts the waiting system call it lands in
/// (EINTR: no `SA_RESTART`); dropped, the signal's previous action is
/// back.
pub struct KickHandler {
    previous: libc::sigaction,
}

impl KickHandler {
    /// Installs the handler.
    pub fn install() -> io::Result<KickHandler> {
        // SAFETY: zeroed sigactions are valid; the handler only stores to
        // a thread-local atomic, which is async-signal-safe; `previous`
        // is written by the call.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            syscall!(libc::sigaction(kick_signal(), &sa, &mut previous))?;
            Ok(KickHandler { previous })
        }
    }
}

impl Drop for KickHandler {
    fn drop(&mut self) {
        // SAFETY: `previous` is the action sigaction gave us.
        unsafe {
            libc::sigaction(
                kick_signal(),
                &self.previous,
                std::ptr::null_mut(),
            );
        }
    }
}

impl std::fmt::Debug for KickHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KickHandler")
    }
}

/// Interrupts `thread`'s waiting system call (see [`KickHandler`]).
pub fn kick(thread: ThreadHandle) {
    // SAFETY: the handle came from this_thread() of a thread that is
    // still running (the server's workers outlive every kick).
    unsafe {
        libc::pthread_kill(thread, kick_signal());
    }
}

/// Lets a signal sent to this thread land now, in a system call that
/// does not wait (signals are handled on the way out of the kernel),
/// rather than interrupting a later one; then forgets the kick.
pub fn take_signals() {
    // SAFETY: a sigset_t we own, written by the call.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
    }
    forget_kick();
}

/// Forgets a kick that reached this thread: one that landed later than
/// [`take_signals`] expected (as under a tool that delays signals, such
/// as valgrind) must not end every wait from then on.
pub fn forget_kick() {
    KICKED.with(|k| k.store(false, Ordering::SeqCst));
}

/// Signal numbers used by the crate.
pub mod sig {
    /// SIGTERM
    pub const TERM: i32 = libc::SIGTERM;
    /// SIGINT
    pub const INT: i32 = libc::SIGINT;
    /// SIGHUP
    pub const HUP: i32 = libc::SIGHUP;
    /// SIGKILL
    pub const KILL: i32 = libc::SIGKILL;
}

/// Sends `sig` to the process group `pgid`.
pub fn kill_group(pgid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) with a negative pid signals a process group.
    syscall!(unsafe { libc::kill(-(pgid as libc::pid_t), sig) })?;
    Ok(())
}

/// True if and only if we may execute `path` (access(2) with X_OK).
pub fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated string for the call's duration.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// Marks every open fd from 3 up close-on-exec, so that nothing our
/// parent left open (a web server's sockets, a log file) reaches the
/// programs we run. Call once at start-up.
pub fn cloexec_inherited_fds() -> io::Result<()> {
    // SAFETY: close_range(2) (Linux 5.11+) with CLOSE_RANGE_CLOEXEC only
    // sets a flag on fds; it touches no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // An older kernel: one fcntl per open fd.
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= 3)
        .collect();
    for fd in fds {
        // The directory's own fd is closed by now: EBADF is expected.
        let _ = set_cloexec(fd);
    }
    Ok(())
}

/// Starts `program` (an absolute path) with `argv` and `envp` in a new
/// process group of its own, its stdin, stdout and stderr on `stdio`, in
/// directory `dir` if given; returns its pid.
///
/// posix_spawn(3): glibc runs the child on our memory until it execs
/// (`CLONE_VM | CLONE_VFORK`), so a spawn costs no copy of our page tables
/// whatever our size, and an exec failure (ENOENT, EACCES, ENOEXEC) comes
/// back as this call's error. The child gets an empty signal mask, the
/// default action for every signal (SIGPIPE, which we ignore, and any
/// our parent left ignored, included; glibc leaves its two internal ones,
/// 32 and 33, ignored), and none of our fds but `stdio` (all of ours are
/// close-on-exec).
pub fn spawn(
    program: &CStr,
    argv: &[CString],
    envp: &[CString],
    dir: Option<&CStr>,
    stdio: [RawFd; 3],
) -> io::Result<u32> {
    // An fd of `stdio` that is itself 0, 1 or 2 could be overwritten by
    // an earlier dup2 of the child: give those copies above 2 first.
    let mut moved: Vec<OwnedFd> = Vec::new();
    let mut from = stdio;
    for fd in from.iter_mut().filter(|fd| **fd < 3) {
        let copy = syscall!(
            // SAFETY: F_DUPFD_CLOEXEC duplicates `fd` onto a new fd >= 3.
            unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) }
        )?;
        // SAFETY: the fd was just created and is owned by nobody else.
        moved.push(unsafe { OwnedFd::from_raw_fd(copy) });
        *fd = copy;
    }
    let argv: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut actions = SpawnActions::new()?;
    for (target, fd) in from.into_iter().enumerate() {
        // SAFETY: `actions` was initialised; the fds are plain integers.
        spawn_call(unsafe {
            libc::posix_spawn_file_actions_adddup2(
                &mut actions.0,
                fd,
                target as libc::c_int,
            )
        })?;
    }
    if let Some(dir) = dir {
        // SAFETY: `actions` was initialised; glibc copies `dir`.
        spawn_call(unsafe {
            libc::posix_spawn_file_actions_addchdir_np(
                &mut actions.0,
                dir.as_ptr(),
            )
        })?;
    }
    let mut attr = SpawnAttr::new()?;
    // SAFETY: the sets are zeroed, then filled by sigemptyset/sigaddset;
    // `attr` was initialised and copies what it is given.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        spawn_call(libc::posix_spawnattr_setsigmask(&mut attr.0, &none))?;
        spawn_call(libc::posix_spawnattr_setsigdefault(&mut attr.0, &all))?;
        spawn_call(libc::posix_spawnattr_setpgroup(&mut attr.0, 0))?;
        let flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        spawn_call(libc::posix_spawnattr_setflags(&mut attr.0, flags as _))?;
    }
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `program`, the
    // NUL-terminated arrays `argv` and `envp` (whose strings outlive
    // them), and the initialised `actions` and `attr`.
    spawn_call(unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr() as *const *mut libc::c_char,
            envp.as_ptr() as *const *mut libc::c_char,
        )
    })?;
    drop(moved);
    Ok(pid as u32)
}

/// posix_spawn's functions return an error number instead of setting errno.
fn spawn_call(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// posix_spawn file actions, destroyed on drop.
struct SpawnActions(libc::posix_spawn_file_actions_t);

impl SpawnActions {
    fn new() -> io::Result<SpawnActions> {
        // SAFETY: a zeroed struct is initialised by the call before use.
        let mut a = SpawnActions(unsafe { std::mem::zeroed() });
        // SAFETY: `a.0` is ours to initialise.
        spawn_call(unsafe { libc::posix_spawn_file_actions_init(&mut a.0) })?;
        Ok(a)
    }
}

impl Drop for SpawnActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` and destroyed only here.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// posix_spawn attributes, destroyed on drop.
struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    fn new() -> io::Result<SpawnAttr> {
        // SAFETY: a zeroed struct is initialised by the call before use.
        let mut a = SpawnAttr(unsafe { std::mem::zeroed() });
        // SAFETY: `a.0` is ours to initialise.
        spawn_call(unsafe { libc::posix_spawnattr_init(&mut a.0) })?;
        Ok(a)
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` and destroyed only here.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Reaps child `pid` if it has exited (`block`: waits until it does);
/// None if it is still running.
pub fn wait_child(pid: u32, block: bool) -> io::Result<Option<ExitStatus>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes the status into our local.
        let r =
            unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        match r {
            0 => return Ok(None),
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            _ => return Ok(Some(ExitStatus::from_raw(status))),
        }
    }
}
