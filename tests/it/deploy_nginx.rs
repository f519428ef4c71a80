//! nginx in front of fcgi-launch, deployed with the very files of
//! `packaging/examples/nginx/` (DESIGN §8, §9).  Each test renders one
//! site file of that folder (only its `listen`, socket path and ports
//! changed), includes it in a minimal `nginx.conf` of its own in a temp
//! dir, starts fcgi-launch with the command line the folder's README.md
//! gives for that site (paths and ports changed the same way), and runs
//! every check of `realserver::Site` through nginx.  The pool test also
//! shows that both instances serve, that nginx's connections to them are
//! kept and reused, and that `FCGI_WEB_SERVER_ADDRS` turns away a peer
//! it does not list.
//!
//! Run as root (as in CI), nginx's workers run as the distribution's
//! nginx user, so the unix socket is reached the way README.md tells
//! users to set it up: a set-group-ID directory of the workers' group
//! and `--socket-mode 0660`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::TcpStream;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::realserver::{
    example, free_port, http, render, require_tool, wait_http, Site,
};
use crate::util::{describe_status, Server, TempDir, STARTUP_TIMEOUT};

/// The tokens the example files use, which the tests substitute.
const APP: &str = "/srv/app/app.cgi";
const SOCKET: &str = "/run/fcgi-launch/app.sock";
const LISTEN: &str = "listen 80;";
const POOL_A: &str = "127.0.0.1:9001";
const POOL_B: &str = "127.0.0.1:9002";

/// Tries at binding a free port before giving up (another process may
/// take the port between `free_port` and the bind).
const PORT_TRIES: usize = 4;

#[test]
fn nginx_app_mounted_at_yourapplication() {
    unix_socket_site("yourapplication.conf", "/yourapplication");
}

#[test]
fn nginx_app_mounted_at_root() {
    unix_socket_site("root.conf", "");
}

#[test]
fn nginx_upstream_of_two_tcp_instances_with_keepalive() {
    let Some(nginx) = require_tool("nginx") else {
        return;
    };
    let account = worker_account();
    let app = example("app.cgi").display().to_string();
    let (a, b) = start_pool(&app);
    let (pa, pb) = (a.port, b.port);
    let (pool_a, pool_b) =
        (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let ng = start_nginx(&nginx, &account, 2, |ports| {
        let site = render(
            "nginx/upstream.conf",
            &[
                (LISTEN, &listen(ports[0])),
                (POOL_A, &pool_a),
                (POOL_B, &pool_b),
                (APP, &app),
            ],
        );
        check_conf_comment("upstream.conf", &site, &[&a.cmd, &b.cmd]);
        // Not part of the example: instance A reached from 127.0.0.2, an
        // address its FCGI_WEB_SERVER_ADDRS does not list.
        let stranger = format!(
            "server {{\n    listen 127.0.0.1:{};\n    location / {{\n        \
             include fastcgi_params;\n        fastcgi_pass {pool_a};\n        \
             fastcgi_bind 127.0.0.2;\n    }}\n}}\n",
            ports[1]
        );
        (site, stranger)
    });
    let dump = || {
        format!(
            "{}\n===== instance A =====\n{}\n===== instance B =====\n{}",
            ng.dump(),
            a.server.dump(),
            b.server.dump()
        )
    };
    let what = format!("{} with upstream.conf", ng.version);
    let site = Site {
        what: &what,
        port: ng.ports[0],
        app: "",
        script_name: "",
        error_log: &ng.error_log,
        dump: &dump,
    };
    site.check_all();

    // Both instances served: each of the 200 concurrent requests of
    // check_all is in the request log (-v) of exactly one of them.
    let served = |srv: &Server| -> BTreeSet<usize> {
        srv.stderr()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("GET /c/")? + "GET /c/".len()..];
                let (i, tail) = rest.split_once(' ')?;
                tail.starts_with("200 ").then(|| i.parse().ok())?
            })
            .collect()
    };
    let (by_a, by_b) = (served(&a.server), served(&b.server));
    if by_a.is_empty()
        || by_b.is_empty()
        || by_a.len() + by_b.len() != 200
        || by_a.union(&by_b).count() != 200
    {
        panic!(
            "the 200 concurrent requests were not spread over the pool: \
             instance A logged {}, instance B {} ({} distinct){}",
            by_a.len(),
            by_b.len(),
            by_a.union(&by_b).count(),
            dump()
        );
    }

    // Connections are kept and reused: 50 requests in a row open (almost)
    // no new connection to the pool.  The kernel's table counts them,
    // closed ones included (they linger in TIME_WAIT for a minute); the
    // instances log requests, not connections.
    let before = tcp_connections(&[pa, pb]);
    let rounds = 50;
    for i in 0..rounds {
        let url = format!("/keepalive/{i}");
        match http(ng.ports[0], "GET", &url, b"") {
            Ok(r) if r.status == 200 => {}
            Ok(r) => panic!("GET {url}: status {}{}", r.status, dump()),
            Err(e) => panic!("GET {url}: {e}{}", dump()),
        }
    }
    let after = tcp_connections(&[pa, pb]);
    let opened: Vec<_> =
        after.keys().filter(|k| !before.contains_key(*k)).collect();
    let open = after.values().filter(|s| *s == "01").count();
    eprintln!(
        "pool: instances served {} and {} of 200 concurrent requests; \
         {rounds} requests in a row opened {} connections, {open} open",
        by_a.len(),
        by_b.len(),
        opened.len()
    );
    if opened.len() > rounds / 10 || open == 0 {
        panic!(
            "keepalive: {rounds} requests in a row opened {} new \
             connections to the pool (first: {:?}); {open} are open now, \
             {} before{}",
            opened.len(),
            &opened[..opened.len().min(4)],
            before.values().filter(|s| *s == "01").count(),
            dump()
        );
    }

    // FCGI_WEB_SERVER_ADDRS=127.0.0.1: a connection from 127.0.0.2 is
    // turned away, and nginx answers 502.
    // (nginx's startup check already made one such request.)
    const REFUSED: &str = "refusing connection from 127.0.0.2: not in \
                           FCGI_WEB_SERVER_ADDRS";
    let refused_before = a.server.stderr().matches(REFUSED).count();
    match http(ng.ports[1], "GET", "/from-127.0.0.2", b"") {
        Ok(r) if r.status == 502 => {}
        Ok(r) => panic!(
            "a connection from 127.0.0.2 was served (status {}, body {:?}) \
             though FCGI_WEB_SERVER_ADDRS=127.0.0.1{}",
            r.status,
            r.text(),
            dump()
        ),
        Err(e) => panic!("GET via fastcgi_bind 127.0.0.2: {e}{}", dump()),
    }
    if !a.server.wait_for_stderr(Duration::from_secs(10), |log| {
        log.matches(REFUSED).count() > refused_before
    }) {
        panic!("instance A did not log {REFUSED:?}{}", dump());
    }
    a.server.assert_running();
    b.server.assert_running();
}

/// An fcgi-launch command line of the examples: its environment
/// assignments and its arguments (without the program name).
#[derive(Debug, PartialEq)]
struct Cmdline {
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// The site `conf` served over a unix socket, with the app mounted at
/// `mount` (its URL path and its `SCRIPT_NAME`).
fn unix_socket_site(conf: &str, mount: &str) {
    let Some(nginx) = require_tool("nginx") else {
        return;
    };
    let account = worker_account();
    let dir = TempDir::new();
    traversable(dir.path());
    let sock = socket_dir(dir.path(), &account).join("app.sock");
    let sock = sock.display().to_string();
    let app = example("app.cgi").display().to_string();
    let cmds = readme_cmdlines(conf, &[(SOCKET, &sock), (APP, &app)]);
    let [cmd] = &cmds[..] else {
        panic!(
            "README.md gives {} command lines for {conf}, not 1",
            cmds.len()
        )
    };
    let fl = start_fcgi_launch(dir, cmd, &[]);
    if let Err(e) =
        wait_accepting(&fl, || UnixStream::connect(&sock).map(drop))
    {
        fl.fail(&e);
    }
    let ng = start_nginx(&nginx, &account, 1, |ports| {
        let site = render(
            &format!("nginx/{conf}"),
            &[(LISTEN, &listen(ports[0])), (SOCKET, &sock), (APP, &app)],
        );
        check_conf_comment(conf, &site, &[cmd]);
        (site, String::new())
    });
    let dump =
        || format!("{}\n===== fcgi-launch =====\n{}", ng.dump(), fl.dump());
    let what = format!("{} with {conf}", ng.version);
    Site {
        what: &what,
        port: ng.ports[0],
        app: mount,
        script_name: mount,
        error_log: &ng.error_log,
        dump: &dump,
    }
    .check_all();
    fl.assert_running();
}

/// The `listen` line of a site, on loopback port `port`.
fn listen(port: u16) -> String {
    format!("listen 127.0.0.1:{port};")
}

// ---------------------------------------------------------------------
// Command lines of README.md
// ---------------------------------------------------------------------

/// The fcgi-launch command lines that README.md gives, in its section
/// on `conf`, with `subs` made (each token must occur in README.md).
fn readme_cmdlines(conf: &str, subs: &[(&str, &str)]) -> Vec<Cmdline> {
    let text = render("nginx/README.md", subs);
    let mut in_section = false;
    let mut in_code = false;
    let mut code = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code {
            if in_section {
                code.push_str(line);
                code.push('\n');
            }
        } else if let Some(heading) = line.strip_prefix("## ") {
            in_section =
                heading.split_whitespace().next() == Some(&format!("{conf}:"));
        }
    }
    let cmds: Vec<Cmdline> = logical_lines(code.lines())
        .iter()
        .map(|l| {
            parse_cmdline(l).unwrap_or_else(|| {
                panic!(
                    "README.md, section {conf}: not an fcgi-launch command: \
                     {l:?}"
                )
            })
        })
        .collect();
    assert!(!cmds.is_empty(), "README.md has no section on {conf}");
    cmds
}

/// Check that the command lines quoted in the comments of site `conf`
/// (rendered text `site`) are the ones of README.md.
fn check_conf_comment(conf: &str, site: &str, want: &[&Cmdline]) {
    // Indented comment lines are quoted code.
    let code = site
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .map(str::trim);
    let got: Vec<Cmdline> = logical_lines(code)
        .iter()
        .filter_map(|l| parse_cmdline(l))
        .collect();
    let got: Vec<&Cmdline> = got.iter().collect();
    assert_eq!(
        got, want,
        "the command lines in the comments of {conf} differ from README.md's"
    );
}

/// Lines with backslash-newline continuations joined.
fn logical_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in lines {
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
            }
        }
    }
    out
}

/// `NAME=VALUE… fcgi-launch ARGS…` as a [`Cmdline`]; None if the line
/// does not run fcgi-launch.
fn parse_cmdline(line: &str) -> Option<Cmdline> {
    let is_assignment = |w: &str| {
        w.split_once('=').is_some_and(|(n, _)| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
    };
    let first = line.split_whitespace().find(|w| !is_assignment(w));
    if first != Some("fcgi-launch") {
        return None;
    }
    let words = shell_words(line);
    let at = words.iter().position(|w| w == "fcgi-launch")?;
    let env = words[..at]
        .iter()
        .map(|w| {
            let (n, v) = w.split_once('=').unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    Some(Cmdline {
        env,
        args: words[at + 1..].to_vec(),
    })
}

/// The words of a simple shell command: blanks separate, '…' and "…"
/// quote.  Anything a shell would expand or redirect is refused, so
/// that README.md cannot say more than the tests run.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => words.extend(word.take()),
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('$' | '`' | '\\') if c == '"' => {
                            panic!("unsupported shell syntax in {line:?}")
                        }
                        Some(ch) => w.push(ch),
                        None => panic!("unterminated quote in {line:?}"),
                    }
                }
            }
            '$' | '`' | '\\' | ';' | '&' | '|' | '<' | '>' | '(' | ')'
            | '*' | '?' | '[' | '~' | '#' => {
                panic!("unsupported shell syntax {c:?} in {line:?}")
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

// ---------------------------------------------------------------------
// fcgi-launch
// ---------------------------------------------------------------------

/// fcgi-launch run as `cmd` says, in `dir`, with `extra` arguments first.
fn start_fcgi_launch(dir: TempDir, cmd: &Cmdline, extra: &[&str]) -> Server {
    Server::start(dir, |c| {
        c.env_remove("FCGI_WEB_SERVER_ADDRS");
        for (name, value) in &cmd.env {
            c.env(name, value);
        }
        c.args(extra).args(&cmd.args);
    })
}

/// Waits until `connect` succeeds; Err if the server exits first or the
/// startup time runs out.
fn wait_accepting(
    srv: &Server,
    connect: impl Fn() -> io::Result<()>,
) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let err = match connect() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let Some(s) = srv.try_status() {
            return Err(format!(
                "fcgi-launch {} before accepting ({err})",
                describe_status(s)
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!("fcgi-launch not accepting: {err}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One instance of the pool.
struct Instance {
    server: Server,
    port: u16,
    cmd: Cmdline,
}

/// The two instances of upstream.conf, started as README.md says (plus
/// `-v`, which logs each request) on free loopback ports.
fn start_pool(app: &str) -> (Instance, Instance) {
    for attempt in 1..=PORT_TRIES {
        let pa = free_port();
        let pb = loop {
            let p = free_port();
            if p != pa {
                break p;
            }
        };
        let (pool_a, pool_b) =
            (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
        let cmds = readme_cmdlines(
            "upstream.conf",
            &[(POOL_A, &pool_a), (POOL_B, &pool_b), (APP, app)],
        );
        let n = cmds.len();
        let Ok([cmd_a, cmd_b]) = <[Cmdline; 2]>::try_from(cmds) else {
            panic!(
                "README.md gives {n} command lines for upstream.conf, not 2"
            )
        };
        let a = start_fcgi_launch(TempDir::new(), &cmd_a, &["-v"]);
        let b = start_fcgi_launch(TempDir::new(), &cmd_b, &["-v"]);
        let mut instances = Vec::new();
        for (srv, port, cmd) in [(a, pa, cmd_a), (b, pb, cmd_b)] {
            match wait_accepting(&srv, || {
                TcpStream::connect(("127.0.0.1", port)).map(drop)
            }) {
                Ok(()) => instances.push(Instance {
                    server: srv,
                    port,
                    cmd,
                }),
                Err(_)
                    if attempt < PORT_TRIES && srv.try_status().is_some() =>
                {
                    break
                }
                Err(e) => srv.fail(&e),
            }
        }
        if let [_, _] = &instances[..] {
            let b = instances.pop().unwrap();
            let a = instances.pop().unwrap();
            return (a, b);
        }
    }
    unreachable!()
}

// ---------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------

/// A running nginx.
struct Nginx {
    server: Server,
    /// Its HTTP ports on 127.0.0.1.
    ports: Vec<u16>,
    error_log: PathBuf,
    /// "nginx/1.22.1".
    version: String,
}

impl Nginx {
    fn dump(&self) -> String {
        let log = fs::read(&self.error_log).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let cut = log.len().saturating_sub(20_000);
        let cut = (cut..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!(
            "\n===== nginx =====\n{}\n----- {} -----\n{}",
            self.server.dump(),
            self.error_log.display(),
            &log[cut..]
        )
    }
}

/// The account nginx's workers run as when nginx starts as root.
struct Account {
    user: String,
    group: String,
    gid: u32,
}

/// The distribution's nginx user (Debian's `www-data`, Fedora's `nginx`;
/// else `nobody`) and its primary group.
fn worker_account() -> Account {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    for user in ["www-data", "nginx", "nobody"] {
        let Some(gid) = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == user).then(|| f[3].parse().ok())?
        }) else {
            continue;
        };
        let Some(group) = group.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse() == Ok(gid)).then(|| f[0].to_string())
        }) else {
            continue;
        };
        return Account {
            user: user.to_string(),
            group,
            gid,
        };
    }
    panic!("no www-data, nginx or nobody account for nginx's workers")
}

/// True if and only if the tests run as root (nginx then switches its
/// workers to another user).
fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().any(|l| {
        l.strip_prefix("Uid:")
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Lets nginx's workers into `dir`.
fn traversable(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
}

/// The socket directory of README.md ("Who may connect"): `run/` in
/// `dir`, of the workers' group, mode 2750.
fn socket_dir(dir: &Path, account: &Account) -> PathBuf {
    let run = dir.join("run");
    fs::create_dir(&run)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", run.display()));
    if is_root() {
        chown(&run, None, Some(account.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", run.display()));
    }
    fs::set_permissions(&run, fs::Permissions::from_mode(0o2750))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", run.display()));
    run
}

/// `nginx -V`: the version ("nginx/1.22.1") and the directory of its
/// configuration (where its `fastcgi_params` is).
fn nginx_build(nginx: &Path) -> (String, PathBuf) {
    let out = Command::new(nginx)
        .arg("-V")
        .output()
        .unwrap_or_else(|e| panic!("{} -V: {e}", nginx.display()));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let version = text
        .split_whitespace()
        .find(|w| w.starts_with("nginx/"))
        .unwrap_or("nginx")
        .to_string();
    let conf = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--conf-path="))
        .unwrap_or("/etc/nginx/nginx.conf");
    let dir = Path::new(conf).parent().unwrap_or(Path::new("/etc/nginx"));
    (version, dir.to_path_buf())
}

/// nginx on `nports` free loopback ports, serving the http-level
/// configuration `http(ports)` gives: a site (written to `site.conf`
/// and included, as a distribution's nginx.conf includes conf.d/) and
/// more text for the http block.
fn start_nginx(
    nginx: &Path,
    account: &Account,
    nports: usize,
    http: impl Fn(&[u16]) -> (String, String),
) -> Nginx {
    let (version, conf_dir) = nginx_build(nginx);
    eprintln!("testing with {version}");
    let params = conf_dir.join("fastcgi_params");
    let user = if is_root() {
        format!("user {} {};", account.user, account.group)
    } else {
        "# not root: the workers run as the user running the tests".into()
    };
    for attempt in 1..=PORT_TRIES {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < nports {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let dir = TempDir::new();
        traversable(dir.path());
        let d = dir.path().display().to_string();
        let (site, more) = http(&ports);
        fs::write(dir.join("site.conf"), site).expect("write site.conf");
        fs::copy(&params, dir.join("fastcgi_params")).unwrap_or_else(|e| {
            panic!("copying nginx's {}: {e}", params.display())
        });
        let conf = format!(
            "# Written by tests/it/deploy_nginx.rs: the least an nginx.conf\n\
             # needs around a site of packaging/examples/nginx/, with every\n\
             # file nginx writes in {d}.\n\
             {user}\n\
             daemon off;\n\
             master_process on;\n\
             worker_processes 2;\n\
             pid {d}/nginx.pid;\n\
             lock_file {d}/nginx.lock;\n\
             error_log {d}/error.log info;\n\
             events {{\n    worker_connections 1024;\n}}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   include {d}/site.conf;\n\
             {more}}}\n"
        );
        fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let error_log = dir.join("error.log");
        let server = Server::spawn(dir, nginx, |c| {
            c.arg("-p")
                .arg(format!("{d}/"))
                .arg("-c")
                .arg(format!("{d}/nginx.conf"))
                .arg("-e")
                .arg(&error_log);
        });
        let ng = Nginx {
            server,
            ports,
            error_log,
            version: version.clone(),
        };
        let mut ready = Ok(());
        for &p in &ng.ports {
            ready = ready.and_then(|()| wait_http(p, STARTUP_TIMEOUT));
        }
        match ready {
            Ok(()) => return ng,
            Err(_)
                if attempt < PORT_TRIES
                    && ng.server.try_status().is_some()
                    && fs::read_to_string(&ng.error_log)
                        .unwrap_or_default()
                        .contains("Address already in use") =>
            {
                continue
            }
            Err(e) => panic!("nginx did not start: {e}\n{}", ng.dump()),
        }
    }
    unreachable!()
}

/// Every TCP connection with an end on 127.0.0.1 at one of `ports`
/// (listening sockets left out), keyed by its two ends, the other end
/// first; the value is its state in /proc/net/tcp ("01" established,
/// "06" TIME_WAIT, ...).
fn tcp_connections(ports: &[u16]) -> BTreeMap<(String, String), String> {
    let table = fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |end: &str| {
        end.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let mut out = BTreeMap::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, local, remote, state, ..] = f[..] else {
            continue;
        };
        if state == "0A" {
            continue;
        }
        let key = match (port_of(local), port_of(remote)) {
            (Some(p), _) if ports.contains(&p) => (remote, local),
            (_, Some(p)) if ports.contains(&p) => (local, remote),
            _ => continue,
        };
        out.insert((key.0.to_string(), key.1.to_string()), state.to_string());
    }
    out
}
