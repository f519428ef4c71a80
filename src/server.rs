//! The FastCGI server (DESIGN §5): a fixed pool of worker threads over one
//! readiness watcher.
//!
//! The watcher is a single epoll instance that owns every listener, every
//! parked connection and the shutdown pipe. All N workers wait on it;
//! listeners are registered one-shot and connections edge-triggered, so
//! each readiness is handed to exactly one worker. That worker reads and
//! serves requests on the connection until it would have to wait for
//! bytes, then parks it again and goes back to waiting. A worker is
//! therefore tied to a connection only while a request is in flight, or
//! while it lingers in a read for the next request when another worker is
//! idle (see `linger`), or waits a moment (`BRIEF_WAIT`) for a new
//! connection's first bytes: thousands of idle keep-alive connections cost a
//! parked [`Conn`] each (its buffers freed), never a thread, and the only
//! queue is the kernel's ready list. Letting the worker that is woken do
//! the work itself, rather than a watcher thread passing it on, saves a
//! thread hop per request.
//!
//! While no connection is parked, idle workers wait in `accept` itself
//! instead, with the listener out of the epoll set ("accept duty", see
//! `take_duty`): a web server that opens a connection per request then
//! costs `accept`, a read, a write and `close`, as with a
//! thread-per-connection server.
//!
//! This module decides; it parses no bytes (see `fcgi::conn`) and calls no
//! libc (see `sys`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::api::{self, Handler};
use crate::episode::{Episode, Report};
use crate::error::{Error, Result};
use crate::fcgi;
use crate::fcgi::conn::{Capacity, Conn, Fill, Limits, Progress};
use crate::listen::{Listener, Stream};
use crate::signals::{Signal, Signals};
use crate::sys::{self, Poller};
use std::os::fd::{AsRawFd, OwnedFd};

/// Settings of the FastCGI server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads: requests served at once.
    pub workers: usize,
    /// Connections kept open at once (in flight and parked).
    pub max_conns: usize,
    /// How long a peer may stall in the middle of a request.
    pub io_timeout: Duration,
    /// How long in-flight requests may run on after SIGTERM.
    pub grace: Duration,
    /// Bounds on each request's params.
    pub limits: Limits,
    /// If set, TCP peers must have one of these addresses
    /// (`FCGI_WEB_SERVER_ADDRS`, `--allow`).
    pub allow: Option<Vec<IpAddr>>,
}

/// How often the main thread looks for connections stalled mid-request
/// (see [`sweep`]); idle workers wake as often to choose again between
/// accept duty and the epoll set.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Pause after `accept` fails for a reason other than the connection
/// (EMFILE, a shut-down socket...), so such a failure does not spin a
/// worker.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest a worker lingers on a connection for its next request (only
/// while another worker is idle, and cut short by a kick when that one
/// gets work: see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);
/// How long a worker waits for a kept connection's next request when
/// there are more connections than workers (see [`worth_lingering`]),
/// and for a new connection's first bytes when no other worker takes new
/// work (see [`next_request`]).
const BRIEF_WAIT: Duration = Duration::from_millis(1);
/// Token of the shutdown pipe.
const STOP_TOKEN: u64 = u64::MAX;
/// Tokens from here up to STOP_TOKEN name listeners.
const LISTENER_TOKEN: u64 = u64::MAX - 4096;

/// A connection with what the server needs to park it.
struct Entry {
    stream: Arc<Stream>,
    conn: Conn,
    /// When the current, incomplete request head began arriving.
    since: Option<Instant>,
    /// Requests served on this connection, for the log.
    served: u64,
    /// In the epoll set (edge-triggered); not before it is first parked,
    /// nor while a worker lingers on it.
    watched: bool,
}

/// A worker's linger state, for kicks (see [`linger`]).
struct Lane {
    state: AtomicU8,
    thread: OnceLock<sys::ThreadHandle>,
}

/// Lane states: a worker busy or waiting for events ...
const FREE: u8 = 0;
/// ... lingering in a read on one connection ...
const LINGERING: u8 = 1;
/// ... being kicked out of it ...
const KICKING: u8 = 2;
/// ... kicked (the signal is sent).
const KICKED: u8 = 3;

/// A slot of the connection table; the generation tells an event for a
/// closed connection from one for its slot's next tenant.
struct Slot {
    generation: u32,
    entry: Option<Entry>,
    used: bool,
    /// An event came while the connection was in service.
    notified: bool,
}

struct Shared {
    poller: Poller,
    listeners: Vec<Listener>,
    slots: Mutex<Vec<Slot>>,
    free: Mutex<Vec<usize>>,
    handler: Arc<dyn Handler>,
    cfg: ServerConfig,
    capacity: Capacity,
    stopping: AtomicBool,
    conns: AtomicUsize,
    listening_paused: AtomicBool,
    busy: AtomicUsize,
    /// Workers waiting for an event.
    idle: AtomicUsize,
    /// Workers on accept duty (see [`take_duty`]).
    duty: AtomicUsize,
    /// Connections in the table, waiting for their next bytes.
    parked: AtomicUsize,
    lanes: Vec<Lane>,
    /// Per listener, parallel to `listeners`.
    listen: Vec<Mutex<Listening>>,
    /// Per listener: `accept` failing for a reason other than the
    /// connection (logged per episode, not per try).
    accept_failing: Vec<Episode>,
    stop_write: OwnedFd,
}

/// Who accepts on a listener: the epoll waiters, or the workers on accept
/// duty (see [`take_duty`]), never both. Changed under its lock together
/// with `Shared::duty`.
#[derive(Default)]
struct Listening {
    /// In the epoll set (armed, or fired and not yet rearmed).
    registered: bool,
    /// A worker that got its event is accepting (and will rearm it).
    taken: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves FastCGI on `listeners` until a stop signal, then drains.
pub fn serve(
    listeners: Vec<Listener>,
    handler: Arc<dyn Handler>,
    cfg: ServerConfig,
    signals: &Signals,
) -> Result<()> {
    let what = |e| Error::io("starting the server", e);
    // Dropped only once every worker has ended (a kick after the
    // previous action is back could end the process).
    let kicks = sys::KickHandler::install().map_err(what)?;
    let poller = Poller::new().map_err(what)?;
    let (stop_read, stop_write) = sys::pipe().map_err(what)?;
    poller
        .add_level(stop_read.as_raw_fd(), STOP_TOKEN)
        .map_err(what)?;
    for (i, l) in listeners.iter().enumerate() {
        poller
            .add_oneshot(l.as_raw_fd(), LISTENER_TOKEN + i as u64)
            .map_err(what)?;
        log::info!("listening on {l}");
    }
    let n_listeners = listeners.len();
    let capacity = Capacity {
        max_conns: cfg.max_conns,
        max_reqs: cfg.max_conns,
    };
    let sh = Arc::new(Shared {
        poller,
        listeners,
        slots: Mutex::new(Vec::new()),
        free: Mutex::new(Vec::new()),
        handler,
        capacity,
        stopping: AtomicBool::new(false),
        conns: AtomicUsize::new(0),
        listening_paused: AtomicBool::new(false),
        busy: AtomicUsize::new(0),
        idle: AtomicUsize::new(0),
        duty: AtomicUsize::new(0),
        parked: AtomicUsize::new(0),
        lanes: (0..cfg.workers)
            .map(|_| Lane {
                state: AtomicU8::new(FREE),
                thread: OnceLock::new(),
            })
            .collect(),
        listen: (0..n_listeners)
            .map(|_| {
                Mutex::new(Listening {
                    registered: true,
                    ..Listening::default()
                })
            })
            .collect(),
        accept_failing: (0..n_listeners).map(|_| Episode::default()).collect(),
        stop_write,
        cfg,
    });
    let alive = Arc::new(AtomicUsize::new(0));
    for i in 0..sh.cfg.workers {
        let sh = Arc::clone(&sh);
        let alive = Arc::clone(&alive);
        alive.fetch_add(1, Ordering::SeqCst);
        let started = thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                let _count = CountGuard(&alive);
                worker(&sh, i);
            });
        if let Err(e) = started {
            // Workers already started may still kick each other.
            std::mem::forget(kicks);
            return Err(Error::io("starting worker threads", e));
        }
    }
    log::info!(
        "serving with {} workers, at most {} connections",
        sh.cfg.workers,
        sh.cfg.max_conns
    );
    // Stop signals read in one go: two of them (a double Ctrl-C) mean
    // "at once". Meanwhile this thread sweeps out stalled connections,
    // busy workers or not.
    let mut last_sweep = Instant::now();
    let stops = loop {
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            sweep(&sh);
        }
        if alive.load(Ordering::SeqCst) == 0 {
            return Err(Error::io(
                "serving",
                std::io::Error::other("every worker thread stopped"),
            ));
        }
        // Until the next sweep is due, not a whole period: another
        // signal (SIGHUP) must not put it off.
        let n = signals
            .wait(SWEEP_EVERY.saturating_sub(last_sweep.elapsed()))
            .iter()
            .filter(|s| **s == Signal::Stop)
            .count();
        if n > 0 {
            break n;
        }
    };
    stop(&sh);
    let deadline = Instant::now() + sh.cfg.grace;
    while alive.load(Ordering::SeqCst) > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            std::mem::forget(kicks);
            sh.handler.stop();
            log::warn!(
                "{} requests still running after the {} s grace period; exiting",
                sh.busy.load(Ordering::SeqCst),
                sh.cfg.grace.as_secs()
            );
            return Ok(());
        }
        let wait = left.min(Duration::from_millis(50));
        if stops > 1 || signals.wait(wait).contains(&Signal::Stop) {
            std::mem::forget(kicks);
            sh.handler.stop();
            return Err(Error::io(
                "stopping",
                std::io::Error::other(format!(
                    "second signal: exiting at once with {} requests in flight",
                    sh.busy.load(Ordering::SeqCst)
                )),
            ));
        }
    }
    drop(kicks);
    log::info!("stopped");
    Ok(())
}

/// Stops accepting and wakes every idle worker so it exits.
fn stop(sh: &Shared) {
    log::info!(
        "stopping: no new connections; {} requests in flight (grace {} s)",
        sh.busy.load(Ordering::SeqCst),
        sh.cfg.grace.as_secs()
    );
    sh.stopping.store(true, Ordering::SeqCst);
    for (l, state) in sh.listeners.iter().zip(&sh.listen) {
        let mut state = lock(state);
        if std::mem::take(&mut state.registered) {
            let _ = sh.poller.remove(l.as_raw_fd());
        }
        drop(state);
        l.unlink();
    }
    sys::write_byte(sh.stop_write.as_raw_fd(), 0);
    for lane in &sh.lanes {
        kick(lane);
    }
    // Parked connections will get no more answers (workers serve no new
    // request once stopping), whether idle between requests or halfway
    // through a request head: close them now, so the web server opens a
    // new one elsewhere instead of waiting.
    let parked: Vec<usize> = lock(&sh.slots)
        .iter_mut()
        .enumerate()
        .filter(|(_, s)| s.entry.is_some())
        .map(|(i, s)| {
            s.entry = None;
            sh.parked.fetch_sub(1, Ordering::SeqCst);
            i
        })
        .collect();
    for i in parked {
        close(sh, Some(i));
    }
}

struct CountGuard<'a>(&'a AtomicUsize);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn worker(sh: &Shared, me: usize) {
    if let Err(e) = sys::unblock_kick() {
        log::warn!("worker {me}: unblocking the kick signal: {e}");
    }
    let _ = sh.lanes[me].thread.set(sys::this_thread());
    while !sh.stopping.load(Ordering::SeqCst) {
        if take_duty(sh) {
            on_duty(sh, me);
            continue;
        }
        // No duty: a parked connection (or more than one listener) needs
        // watching, or the server is stopping or at --max-conns.
        become_idle(sh);
        let waited = sh.poller.wait_one(Some(SWEEP_EVERY));
        let left = sh.idle.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && matches!(waited, Ok(Some(t)) if t != STOP_TOKEN) {
            // Nobody is left waiting for events: a worker lingering on a
            // quiet connection goes back to waiting instead.
            kick_one(sh);
        }
        let token = match waited {
            Ok(Some(t)) => t,
            Ok(None) => {
                // Nothing to do for SWEEP_EVERY: keep no buffers for
                // requests that may not come.
                fcgi::release_spares();
                continue;
            }
            Err(e) => {
                log::error!("waiting for connections: {e}");
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        match token {
            STOP_TOKEN => break,
            t if t >= LISTENER_TOKEN => {
                accept(sh, me, (t - LISTENER_TOKEN) as usize)
            }
            t => {
                if let Some((slot, entry)) = take(sh, t) {
                    serve_conn(sh, me, Some(slot), entry);
                }
            }
        }
    }
}

/// Accepts one connection on listener `i`, whose event this worker got,
/// and serves it at once (its request is most likely already there);
/// another worker meanwhile accepts the next.
fn accept(sh: &Shared, me: usize, i: usize) {
    let Some(listener) = sh.listeners.get(i) else {
        return;
    };
    {
        let mut state = lock(&sh.listen[i]);
        if sh.duty.load(Ordering::SeqCst) > 0
            || !state.registered
            || state.taken
        {
            // An event from before the listener left the epoll set (it
            // may be back in it since, and another worker accepting).
            return;
        }
        if sh.conns.load(Ordering::SeqCst) >= sh.cfg.max_conns {
            // Such a stale event, at --max-conns: pause instead.
            relisten(sh, i, &mut state);
            return;
        }
        state.taken = true;
    }
    let stream = admit(sh, i, listener.accept(sh.cfg.io_timeout));
    {
        let mut state = lock(&sh.listen[i]);
        state.taken = false;
        relisten(sh, i, &mut state);
    }
    if let Some(stream) = stream {
        serve_new(sh, me, stream);
    }
}

/// Whether to take accept duty: to wait for a connection in `accept`
/// itself, as a thread-per-connection server does, which wakes a worker
/// sooner than an event does (measured: `tests/bench/README.md`). Every
/// worker that would wait for events may, while no connection is parked
/// and there is one listener: then there is nothing to watch but the
/// listener, and the stop pipe (stopping kicks every worker out of its
/// wait). The listener leaves the epoll set while any worker is on duty.
///
/// A worker that parks a connection meanwhile goes to wait for events
/// itself (a parked connection keeps it from duty); a worker on duty is
/// kicked as a lingering one is ([`linger`]), so it comes back to the
/// epoll set when the last waiter there takes work, and it does what
/// such a waiter does when it takes work as the last one ([`on_duty`]).
fn take_duty(sh: &Shared) -> bool {
    if sh.listeners.len() != 1
        || sh.parked.load(Ordering::SeqCst) != 0
        || sh.stopping.load(Ordering::SeqCst)
        || sh.listening_paused.load(Ordering::SeqCst)
    {
        return false;
    }
    let mut state = lock(&sh.listen[0]);
    let duty = sh.duty.load(Ordering::SeqCst);
    // Each worker on duty takes at most one connection.
    let room = sh.conns.load(Ordering::SeqCst) + duty < sh.cfg.max_conns;
    if state.taken || !room || sh.stopping.load(Ordering::SeqCst) {
        return false;
    }
    if state.registered {
        if let Err(e) = sh.poller.remove(sh.listeners[0].as_raw_fd()) {
            log::error!("watching {}: {e}", sh.listeners[0]);
            return false;
        }
        state.registered = false;
    }
    sh.duty.fetch_add(1, Ordering::SeqCst);
    true
}

/// Accept duty (see [`take_duty`]): waits in `accept` for a connection
/// up to [`LINGER`], leaves duty, and serves the connection if one came.
fn on_duty(sh: &Shared, me: usize) {
    let listener = &sh.listeners[0];
    let (got, kicked) = linger(
        sh,
        me,
        || sh.parked.load(Ordering::SeqCst) == 0,
        |may| match may {
            true => listener.accept_within(sh.cfg.io_timeout, LINGER),
            false => Ok(None),
        },
    );
    // Counted before it leaves duty, so the --max-conns check in
    // `take_duty` never misses it.
    let stream = admit(sh, 0, got);
    let (left, idle) = {
        let mut state = lock(&sh.listen[0]);
        let left = sh.duty.fetch_sub(1, Ordering::SeqCst) - 1;
        let idle = sh.idle.load(Ordering::SeqCst);
        if left == 0 && idle > 0 {
            // A worker waits for events: it takes the next connection.
            // Otherwise the listener stays out of the epoll set until a
            // worker waits there ([`become_idle`]): the next worker done
            // with its request most likely takes duty again.
            relisten(sh, 0, &mut state);
        }
        (left, idle)
    };
    let Some(stream) = stream else {
        if !kicked {
            // A whole LINGER without a connection: as an idle waiter.
            fcgi::release_spares();
        }
        return;
    };
    if idle == 0 && (left == 0 || kicked) {
        // Nobody is left to take new work (or the kick was meant for a
        // worker that would wait for events): a worker lingering on a
        // quiet connection goes back to waiting instead.
        kick_one(sh);
    }
    serve_new(sh, me, stream);
}

/// Counts this worker in `idle` before it waits for events, and puts the
/// listener back in the epoll set if accept duty took it out, unless a
/// worker is still on duty: that one does it when it leaves and sees a
/// worker waiting for events ([`on_duty`]). Both are done under the
/// listener's lock, so neither misses the other. (Duty needs a single
/// listener, so only the first can be out of the set.)
fn become_idle(sh: &Shared) {
    let Some(state) = sh.listen.first() else {
        sh.idle.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let mut state = lock(state);
    if !state.registered && !state.taken {
        relisten(sh, 0, &mut state);
    }
    sh.idle.fetch_add(1, Ordering::SeqCst);
}

/// What `accept` on listener `i` gave: a connection, counted in `conns`,
/// or None (the reason logged), so that the caller lets the listener take
/// the next.
fn admit(
    sh: &Shared,
    i: usize,
    got: std::io::Result<Option<Stream>>,
) -> Option<Stream> {
    let listener = &sh.listeners[i];
    let failing = &sh.accept_failing[i];
    let stream = match got {
        Ok(s) => {
            if s.is_some() {
                if let Some(Report::Over { tries, lasted }) =
                    failing.succeeded(Instant::now())
                {
                    log::warn!(
                        "accepting on {listener} works again, after {tries} failed tries in {:.1} s",
                        lasted.as_secs_f64()
                    );
                }
            }
            s
        }
        // A client that reset its connection before we took it, say:
        // nothing to serve, nothing to wait for.
        Err(e) if sys::is_connection_error(&e) => {
            log::debug!("accepting on {listener}: {e}");
            None
        }
        // Out of file descriptors or memory, or the socket itself broken
        // (a process sharing it shut it down, say): the next call fails at
        // once too, so each worker pauses. Logged per episode (`episode`).
        Err(e) => {
            let every = ACCEPT_BACKOFF.as_millis();
            match failing.failed(Instant::now(), &e.to_string()) {
                Some(Report::Failing(e)) => log::error!(
                    "accepting on {listener}: {e}; trying again every {every} ms"
                ),
                Some(Report::StillFailing { error, tries, lasted }) => {
                    log::error!(
                        "accepting on {listener} still fails: {error} ({tries} tries in {:.0} s)",
                        lasted.as_secs_f64()
                    )
                }
                _ => {}
            }
            thread::sleep(ACCEPT_BACKOFF);
            None
        }
    };
    let stream = stream.filter(|s| match (&sh.cfg.allow, s.peer_ip()) {
        (Some(allow), Some(ip)) if !allowed(allow, ip) => {
            log::warn!("refusing connection from {ip}: not in FCGI_WEB_SERVER_ADDRS/--allow");
            false
        }
        _ => true,
    });
    if stream.is_some() {
        sh.conns.fetch_add(1, Ordering::SeqCst);
    }
    stream
}

/// Lets listener `i` (its state locked: `state`) take the next
/// connection through the epoll set, or pauses it at `--max-conns`.
fn relisten(sh: &Shared, i: usize, state: &mut Listening) {
    if sh.stopping.load(Ordering::SeqCst) {
        return;
    }
    if sh.conns.load(Ordering::SeqCst) < sh.cfg.max_conns {
        watch_listener(sh, i, state);
    } else if !sh.listening_paused.swap(true, Ordering::SeqCst) {
        log::warn!(
            "{} connections open (--max-conns): new ones wait in the backlog",
            sh.cfg.max_conns
        );
        // A connection may have closed since the count was read.
        if sh.conns.load(Ordering::SeqCst) < sh.cfg.max_conns
            && sh.listening_paused.swap(false, Ordering::SeqCst)
        {
            watch_listener(sh, i, state);
        }
    }
}

/// Serves a connection just accepted.
fn serve_new(sh: &Shared, me: usize, stream: Stream) {
    log::debug!("{}: connection accepted", stream.peer());
    let stream = Arc::new(stream);
    let conn = Conn::new(stream.clone(), sh.cfg.limits, sh.capacity);
    serve_conn(
        sh,
        me,
        None,
        Entry {
            stream,
            conn,
            // A new connection has --io-timeout to send its request.
            since: Some(Instant::now()),
            served: 0,
            watched: false,
        },
    );
}

/// True if and only if `ip` is in `allow` (IPv4-mapped IPv6 peers match
/// their IPv4 address).
pub fn allowed(allow: &[IpAddr], ip: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    allow.iter().any(|a| canon(*a) == canon(ip))
}

/// Arms listener `i` (its state locked: `state`) in the epoll set again,
/// or registers it if accept duty took it out; not while a worker is on
/// duty or the server is stopping.
fn watch_listener(sh: &Shared, i: usize, state: &mut Listening) {
    let Some(l) = sh.listeners.get(i) else {
        return;
    };
    if sh.stopping.load(Ordering::SeqCst) || sh.duty.load(Ordering::SeqCst) > 0
    {
        return;
    }
    let (fd, token) = (l.as_raw_fd(), LISTENER_TOKEN + i as u64);
    let done = match state.registered {
        true => sh.poller.rearm(fd, token),
        false => sh.poller.add_oneshot(fd, token),
    };
    match done {
        Ok(()) => state.registered = true,
        Err(e) => log::error!("watching {l}: {e}"),
    }
}

/// Serves requests on a connection until it must wait, then parks it.
fn serve_conn(
    sh: &Shared,
    me: usize,
    mut slot: Option<usize>,
    mut entry: Entry,
) {
    // The next read lingers (see `linger`) instead of taking what is
    // there now.
    let mut lingering = false;
    let why = loop {
        let lingered = lingering;
        let progress = if lingering {
            lingering = false;
            next_request(sh, me, slot, &mut entry)
        } else {
            entry.conn.advance(Fill::Now)
        };
        match progress {
            Ok(Progress::Request(head)) => {
                entry.since = None;
                entry.served += 1;
                sh.busy.fetch_add(1, Ordering::SeqCst);
                // The closing linger of a request reads with
                // `read_within`, which a stale kick mark would cut short.
                sys::forget_kick();
                let keep = entry.conn.run(head, |req, resp| {
                    api::dispatch(&*sh.handler, req, resp)
                });
                sh.busy.fetch_sub(1, Ordering::SeqCst);
                if !keep {
                    break "not to be kept";
                }
                if sh.stopping.load(Ordering::SeqCst) {
                    break "shutting down";
                }
                lingering = true;
            }
            Ok(Progress::NeedMore) => {
                let mid = entry.conn.mid_request();
                if !mid && !lingered {
                    lingering = true;
                    continue;
                }
                if mid || entry.served == 0 {
                    // Mid-request, or a new connection yet to send its
                    // first request: the time it may take is bounded.
                    entry.since.get_or_insert_with(Instant::now);
                } else {
                    entry.since = None;
                }
                if !mid {
                    entry.conn.shrink();
                }
                if sh.stopping.load(Ordering::SeqCst) {
                    break "shutting down";
                }
                match park(sh, slot, entry) {
                    Some((index, back)) => {
                        slot = Some(index);
                        entry = back;
                    }
                    None => return,
                }
            }
            Ok(Progress::Done) => break "closed by the peer",
            Err(e) => {
                log::warn!(
                    "{}: {e}; closing the connection",
                    entry.stream.peer()
                );
                break "protocol error";
            }
        }
    };
    log::debug!(
        "{}: connection closed ({why}) after {} requests",
        entry.stream.peer(),
        entry.served
    );
    drop(entry);
    close(sh, slot);
}

/// Reads a connection's next request after a response or a new
/// connection's first one, waiting for it as [`worth_lingering`] says.
fn next_request(
    sh: &Shared,
    me: usize,
    slot: Option<usize>,
    entry: &mut Entry,
) -> Result<Progress> {
    if !worth_lingering(sh, entry) {
        if sh.idle.load(Ordering::SeqCst) > 0 {
            let fd = entry.stream.as_raw_fd();
            let _ = sys::wait_fd(fd, sys::Interest::Read, BRIEF_WAIT);
        }
        return entry.conn.advance(Fill::Now);
    }
    let wait = LINGER.min(sh.cfg.io_timeout);
    let others_take_work = || {
        sh.idle.load(Ordering::SeqCst) > 0
            || sh.duty.load(Ordering::SeqCst) > 0
    };
    let (progress, kicked) = linger(sh, me, others_take_work, |may| {
        let fill = if may && quiet(sh, slot, entry) {
            Fill::Within(wait)
        } else if entry.served == 0
            && slot.is_none()
            && sh.conns.load(Ordering::SeqCst) <= sh.cfg.workers
        {
            // A new connection whose first bytes are a moment behind its
            // connect, no other worker to take new work, and no more
            // connections than workers: most often another worker is
            // just finishing its request. Waiting a moment is cheaper
            // than parking (measured: `tests/bench/README.md`) and holds
            // up the backlog at most BRIEF_WAIT. With more connections,
            // the next in the backlog is more likely ready: park.
            Fill::Within(BRIEF_WAIT)
        } else {
            Fill::Now
        };
        entry.conn.advance(fill)
    });
    if kicked
        && matches!(progress, Ok(Progress::Request(_)))
        && sh.idle.load(Ordering::SeqCst) == 0
    {
        // Kicked, but its own request came first: the kick goes on to
        // another lingering worker, if any.
        kick_one(sh);
    }
    progress
}

/// Whether to linger on a connection with no request in hand: a new
/// one's first bytes are usually a moment behind its connect; between
/// requests, lingering pays while there are no more connections than
/// workers (the thread-per-connection regime). With more, a lingering
/// worker would mostly be kicked; it rather waits [`BRIEF_WAIT`] (while
/// another worker is idle) with the connection still watched, or just
/// reads what is there, and then parks it, which costs nothing.
fn worth_lingering(sh: &Shared, entry: &Entry) -> bool {
    entry.served == 0 || sh.conns.load(Ordering::SeqCst) <= sh.cfg.workers
}

/// Runs `read` as a wait that another worker may cut short with a kick:
/// `read(true)` may wait (up to [`LINGER`]) in a read or an `accept`
/// itself, `read(false)` must not wait. It may wait if `may_wait`, asked
/// once the kick can reach it, says so, and the server is not stopping.
/// Also returns whether the worker was kicked.
///
/// This is a linger on a connection with no request in hand (see
/// [`next_request`]), or accept duty ([`on_duty`]). After a response the
/// next request on a kept connection is usually a moment away, and so are
/// a new connection's first bytes. Waiting for them in the read serves
/// them with no system call but the read, on the same warm thread, as a
/// thread-per-connection server does. Parking instead costs a wake-up
/// through epoll, often of a second thread.
///
/// A worker lingers on a connection only while another worker waits for
/// events or is on accept duty, so other work is still taken at once
/// (otherwise it waits at most [`BRIEF_WAIT`], and only for a new
/// connection's first bytes);
/// and the worker that takes it, if it was the last one waiting, kicks a
/// lingering one ([`kick_one`]), whose read then ends (EINTR) and which
/// parks its connection and goes back to waiting. The lane state is set
/// before `may_wait` reads the counts, and a kicker changes the counts
/// before it reads the lanes (all sequentially consistent), so one of
/// the two always sees the other.
fn linger<T>(
    sh: &Shared,
    me: usize,
    may_wait: impl FnOnce() -> bool,
    read: impl FnOnce(bool) -> T,
) -> (T, bool) {
    // No kick can target this worker before its lane says LINGERING: a
    // mark left from before is stale.
    sys::forget_kick();
    let lane = Lingering(&sh.lanes[me]);
    lane.0.state.store(LINGERING, Ordering::SeqCst);
    let may = !sh.stopping.load(Ordering::SeqCst) && may_wait();
    let out = read(may);
    (out, lane.end())
}

/// A lane in its linger; its end (or a panic) makes it FREE again.
struct Lingering<'a>(&'a Lane);

impl Lingering<'_> {
    /// Ends the linger; true if the worker was kicked.
    fn end(self) -> bool {
        let state = &self.0.state;
        let kicked = state
            .compare_exchange(
                LINGERING,
                FREE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err();
        if kicked {
            // The signal may still be on its way: let it land now, not
            // in a later system call of this thread.
            while state.load(Ordering::SeqCst) != KICKED {
                thread::yield_now();
            }
            sys::take_signals();
            state.store(FREE, Ordering::SeqCst);
        }
        kicked
    }
}

impl Drop for Lingering<'_> {
    fn drop(&mut self) {
        // Only reached with LINGERING still set if `read` panicked: no
        // kick may then target this thread.
        let _ = self.0.state.compare_exchange(
            LINGERING,
            FREE,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// Kicks one lingering worker, if there is one, back to waiting.
fn kick_one(sh: &Shared) {
    for lane in &sh.lanes {
        if kick(lane) {
            return;
        }
    }
}

/// Kicks `lane`'s worker out of its linger; false if it was not
/// lingering.
fn kick(lane: &Lane) -> bool {
    let Some(&thread) = lane.thread.get() else {
        return false;
    };
    if lane
        .state
        .compare_exchange(
            LINGERING,
            KICKING,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_err()
    {
        return false;
    }
    sys::kick(thread);
    lane.state.store(KICKED, Ordering::SeqCst);
    true
}

fn conn_token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

/// Takes a free slot of the connection table for a connection in
/// service (no entry yet).
fn new_slot(sh: &Shared) -> usize {
    let mut slots = lock(&sh.slots);
    let index = match lock(&sh.free).pop() {
        Some(i) => i,
        None => {
            slots.push(Slot {
                generation: 0,
                entry: None,
                used: false,
                notified: false,
            });
            slots.len() - 1
        }
    };
    let s = &mut slots[index];
    s.used = true;
    s.notified = false;
    index
}

/// Puts a connection in the table, watched for readability, and returns
/// None; or, if bytes came while it was in service, hands it back (with
/// its slot) to be served on.
///
/// Connections are registered edge-triggered, once, so parking costs no
/// system call: an event that finds its connection in service only marks
/// the slot `notified`, and the worker serving it sees the mark here and
/// goes on serving instead of parking. No wake-up is lost. A connection
/// is registered (again, after a linger) before its entry goes into
/// the table, so nothing can take it (an event, the sweep, a stop) while
/// its fd is passed to epoll.
fn park(
    sh: &Shared,
    slot: Option<usize>,
    mut entry: Entry,
) -> Option<(usize, Entry)> {
    let index = slot.unwrap_or_else(|| new_slot(sh));
    if !entry.watched {
        let token = conn_token(index, lock(&sh.slots)[index].generation);
        // Bytes that came before this call are reported too.
        if let Err(e) = sh.poller.add_edge(entry.stream.as_raw_fd(), token) {
            log::error!(
                "{}: watching the connection: {e}",
                entry.stream.peer()
            );
            drop(entry);
            close(sh, Some(index));
            return None;
        }
        entry.watched = true;
    }
    let mut slots = lock(&sh.slots);
    let s = &mut slots[index];
    if std::mem::take(&mut s.notified) {
        return Some((index, entry));
    }
    // Counted before it can be taken. The parking worker goes back to its
    // loop, where a parked connection keeps it from accept duty: the
    // epoll set is watched.
    sh.parked.fetch_add(1, Ordering::SeqCst);
    s.entry = Some(entry);
    None
}

/// Takes a connection about to be lingered on out of the epoll set: its
/// next request would otherwise wake another worker for nothing. (Out of
/// the set rather than disarmed: a hang-up is reported even for a watch
/// of no events.) False if that failed (then there is no linger).
fn quiet(sh: &Shared, slot: Option<usize>, entry: &mut Entry) -> bool {
    let Some(i) = slot.filter(|_| entry.watched) else {
        return true;
    };
    if let Err(e) = sh.poller.remove(entry.stream.as_raw_fd()) {
        log::error!("{}: watching the connection: {e}", entry.stream.peer());
        return false;
    }
    entry.watched = false;
    // An event taken before the removal is stale now: the read sees
    // what it announced.
    lock(&sh.slots)[i].notified = false;
    true
}

/// Takes the connection an event names out of the table. None if the
/// event is stale (the connection was closed meanwhile) or the connection
/// is in service (then it is marked, see [`park`]).
fn take(sh: &Shared, token: u64) -> Option<(usize, Entry)> {
    let index = (token & 0xffff_ffff) as usize;
    let generation = (token >> 32) as u32;
    let mut slots = lock(&sh.slots);
    let s = slots.get_mut(index)?;
    if !s.used || s.generation != generation {
        return None;
    }
    match s.entry.take() {
        Some(e) => {
            sh.parked.fetch_sub(1, Ordering::SeqCst);
            Some((index, e))
        }
        None => {
            s.notified = true;
            None
        }
    }
}

/// Forgets a connection (dropping it closes the socket, which also ends
/// its epoll registration) and resumes accepting if we had paused.
fn close(sh: &Shared, slot: Option<usize>) {
    if let Some(i) = slot {
        let mut slots = lock(&sh.slots);
        let s = &mut slots[i];
        s.entry = None;
        s.used = false;
        s.notified = false;
        s.generation = s.generation.wrapping_add(1);
        drop(slots);
        lock(&sh.free).push(i);
    }
    sh.conns.fetch_sub(1, Ordering::SeqCst);
    if sh.listening_paused.swap(false, Ordering::SeqCst)
        && !sh.stopping.load(Ordering::SeqCst)
    {
        for i in 0..sh.listeners.len() {
            // Paused again if the count is still at the limit.
            relisten(sh, i, &mut lock(&sh.listen[i]));
        }
    }
}

/// Closes parked connections whose request head has been arriving for
/// longer than the I/O timeout (a client that trickles bytes).
fn sweep(sh: &Shared) {
    let limit = sh.cfg.io_timeout;
    let mut expired = Vec::new();
    {
        let mut slots = lock(&sh.slots);
        for (i, s) in slots.iter_mut().enumerate() {
            let stale = s
                .entry
                .as_ref()
                .and_then(|e| e.since)
                .is_some_and(|t| t.elapsed() > limit);
            if stale {
                if let Some(e) = s.entry.take() {
                    sh.parked.fetch_sub(1, Ordering::SeqCst);
                    expired.push((i, e));
                }
            }
        }
    }
    for (i, e) in expired {
        log::warn!(
            "{}: no complete request head within {} s; closing the connection",
            e.stream.peer(),
            limit.as_secs_f32()
        );
        drop(e);
        close(sh, Some(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_mapped_addresses() {
        let allow: Vec<IpAddr> =
            vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert!(allowed(&allow, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&allow, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(allowed(&allow, "::1".parse().unwrap()));
        assert!(!allowed(&allow, "127.0.0.2".parse().unwrap()));
        assert!(!allowed(&allow, "10.0.0.1".parse().unwrap()));
    }
}
