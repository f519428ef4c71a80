//! fcgi-launch behind a real Apache httpd 2.4, configured with the very
//! files of `packaging/examples/apache/` (DESIGN §1, §8): a shared-host
//! `.htaccess` under mod_fcgid (an `.fcgi` wrapper, and `FcgidWrapper`
//! running `.cgi` scripts), the same `.htaccess` under plain CGI (mod_cgi
//! with prefork, mod_cgid with event), and mod_proxy_fcgi in front of
//! `fcgi-launch --bind` (`proxy-fcgi.conf`).
//!
//! Each test writes a minimal `httpd.conf` in a temp dir (its own
//! ServerRoot, runtime dir, logs and a high port on 127.0.0.1) that
//! includes the example's host configuration, fills a document root with
//! the user's files, starts `apache2 -DFOREGROUND`, runs the checks of
//! [`Site::check_all`], then stops Apache and checks that no process it
//! started survives.  As root, Apache's children run as www-data (as on
//! a real host), so the paths involved must be readable by that user.
//! Without apache2 or a module a test says so and skips (or fails when
//! `FCGI_LAUNCH_REQUIRE_PEERS` is set).

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::realserver::{
    example, free_port, peers_required, render, require_tool, wait_http, Site,
};
use crate::util::{bin, describe_status, Server, TempDir};

/// How long Apache may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server and its children may take to be gone.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Paths as the example files spell them, replaced by each test.
const EX_LAUNCHER: &str = "/home/me/bin/fcgi-launch";
const EX_APP: &str = "/home/me/app/app.cgi";
const EX_WEBROOT: &str = "/home/*/public_html";
const EX_MODULES: &str = "/usr/lib/apache2/modules";
const EX_SOCKET: &str = "/run/fcgi-launch/app.sock";
const EX_PROXY_APP: &str = "/srv/app/app.cgi";

// ---------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------

/// Shared host, mod_fcgid: the user's `.htaccess` makes `app.fcgi` a
/// FastCGI application; it execs fcgi-launch, which finds the listening
/// socket on fd 0 and runs the sample app for each request.
#[test]
fn apache_mod_fcgid_htaccess_fcgi_app() {
    let Some(mut site) = SharedHost::start(Gateway::Fcgid) else {
        return;
    };
    site.check("Apache mod_fcgid, .htaccess, /app.fcgi", "/app.fcgi");
    site.expect_resident_launcher(true);
    site.stop();
}

/// Shared host, mod_fcgid: the same `.htaccess` makes fcgi-launch the
/// `FcgidWrapper` of `.cgi` scripts; without a PROGRAM it runs the
/// script of each request (`SCRIPT_FILENAME`), as fcgiwrap would.
#[test]
fn apache_mod_fcgid_wrapper_runs_cgi_scripts() {
    let Some(mut site) = SharedHost::start(Gateway::Fcgid) else {
        return;
    };
    site.check("Apache mod_fcgid, FcgidWrapper, /app.cgi", "/app.cgi");
    site.expect_resident_launcher(true);
    site.stop();
}

/// Shared host with plain mod_cgi (prefork MPM): the same `.htaccess` and
/// `app.fcgi`; fcgi-launch sees `GATEWAY_INTERFACE` and serves the one
/// request.
#[test]
fn apache_mod_cgi_plain_cgi() {
    let Some(mut site) = SharedHost::start(Gateway::Cgi) else {
        return;
    };
    site.check("Apache mod_cgi, .htaccess, /app.fcgi", "/app.fcgi");
    site.expect_resident_launcher(false);
    site.stop();
}

/// Shared host with mod_cgid (event MPM, Debian's default): CGI scripts
/// get a connected socket on fd 0, which must not pass for FastCGI
/// (DESIGN §2 rule 4).
#[test]
fn apache_mod_cgid_plain_cgi() {
    let Some(mut site) = SharedHost::start(Gateway::Cgid) else {
        return;
    };
    site.check("Apache mod_cgid, .htaccess, /app.fcgi", "/app.fcgi");
    site.expect_resident_launcher(false);
    site.stop();
}

/// mod_proxy_fcgi (`proxy-fcgi.conf`) to fcgi-launch started with the
/// command line documented in that file: `--bind unix:…` and
/// `--script-name /app`, as another user than Apache's, sharing its
/// group.
#[test]
fn apache_mod_proxy_fcgi_to_bind() {
    let Some(apache) = require_tool("apache2") else {
        return;
    };
    let Some(modules) = module_dir(&["mod_proxy.so", "mod_proxy_fcgi.so"])
    else {
        return;
    };
    let dir = TempDir::new();
    let ids = Ids::get();
    let sock_dir = dir.join("sock");
    fs::create_dir(&sock_dir).expect("mkdir sock");
    let socket = sock_dir.join("app.sock");
    let app = example("app.cgi");
    let conf = render(
        "apache/proxy-fcgi.conf",
        &[
            (EX_SOCKET, path_str(&socket)),
            (EX_MODULES, path_str(&modules)),
            (EX_PROXY_APP, path_str(&app)),
        ],
    );
    // The documented fcgi-launch command line, with this test's paths.
    let args = documented_command(&conf, "fcgi-launch --bind");
    if let Some(ids) = &ids {
        // As documented: the socket's directory belongs to the app user
        // and Apache's group; fcgi-launch runs as that user and group.
        fs::set_permissions(&sock_dir, fs::Permissions::from_mode(0o750))
            .expect("chmod sock");
        std::os::unix::fs::chown(&sock_dir, Some(ids.app_uid), Some(ids.gid))
            .expect("chown sock");
        check_reachable(&[&app, &bin()]);
    }
    let launcher = Server::start(TempDir::new(), |c| {
        c.args(&args);
        if let Some(ids) = &ids {
            c.uid(ids.app_uid).gid(ids.gid);
        }
    });
    wait_socket(&launcher, &socket);
    let mode = fs::metadata(&socket).map_or(0, |m| m.mode() & 0o777);
    if mode != 0o660 {
        launcher.fail(&format!("socket {socket:?} has mode {mode:o}"));
    }

    let mut site =
        Apache::start(&apache, &modules, dir, Mpm::Event, "", &conf);
    let error_log = site.error_log();
    let dump = || format!("{}{}", site.dump(), launcher.dump());
    Site {
        what: "Apache mod_proxy_fcgi to fcgi-launch --bind",
        port: site.port,
        app: "/app",
        script_name: "/app",
        error_log: &error_log,
        dump: &dump,
    }
    .check_all();
    site.stop();

    // fcgi-launch stops cleanly on SIGTERM, removes its socket, and
    // leaves nothing behind.
    let tree = process_tree(launcher.pid());
    launcher.signal("TERM");
    let status = launcher.expect_exit(STOP_TIMEOUT);
    if status.code() != Some(0) {
        launcher.fail(&format!("SIGTERM: {}", describe_status(status)));
    }
    if socket.exists() {
        launcher.fail(&format!("{socket:?} is still there after exit"));
    }
    if let Err(e) = wait_gone(&tree, None) {
        launcher.fail(&e);
    }
}

/// The README quotes lines of the example files and the fcgi-launch
/// command line of `proxy-fcgi.conf`: what people copy from it must be
/// what the tests above run.
#[test]
fn apache_readme_quotes_the_tested_files() {
    let read = |rel: &str| {
        let p = example(rel);
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let readme = read("apache/README");
    let files: Vec<String> = [".htaccess", "app.fcgi", "proxy-fcgi.conf"]
        .iter()
        .map(|f| read(&format!("apache/{f}")))
        .collect();
    let quoted: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("    "))
        .map(str::trim)
        .filter(|l| {
            ["exec ", "FcgidWrapper ", "AddHandler ", "ProxyPass "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    assert!(quoted.len() >= 4, "README quotes too little: {quoted:?}");
    for q in quoted {
        assert!(
            files.iter().any(|f| f.lines().any(|l| l.trim() == q)),
            "the README quotes {q:?}, which no example file has"
        );
    }
    assert_eq!(
        documented_command(&readme, "fcgi-launch --bind"),
        documented_command(&files[2], "fcgi-launch --bind"),
        "the README and proxy-fcgi.conf document different command lines"
    );
}

// ---------------------------------------------------------------------
// The shared host: .htaccess + app.fcgi under the host's configuration
// ---------------------------------------------------------------------

/// Which CGI gateway module the shared host runs.
#[derive(Clone, Copy)]
enum Gateway {
    /// mod_fcgid (event MPM), host-fcgid.conf.
    Fcgid,
    /// mod_cgi (prefork MPM), host-cgi.conf.
    Cgi,
    /// mod_cgid (event MPM), host-cgi.conf.
    Cgid,
}

/// A running Apache serving a user's web root built from the examples.
struct SharedHost {
    apache: Apache,
}

impl SharedHost {
    /// The user's upload in `<tmp>/www`: `.htaccess` and `app.fcgi` from
    /// the examples with this checkout's paths, and `app.cgi` (the sample
    /// app itself, linked) for the `FcgidWrapper` rule; the host's
    /// configuration from `host-fcgid.conf` or `host-cgi.conf`.
    fn start(gateway: Gateway) -> Option<SharedHost> {
        let apache = require_tool("apache2")?;
        let (module, mpm) = match gateway {
            Gateway::Fcgid => ("mod_fcgid.so", Mpm::Event),
            Gateway::Cgi => ("mod_cgi.so", Mpm::Prefork),
            Gateway::Cgid => ("mod_cgid.so", Mpm::Event),
        };
        let modules = module_dir(&[module])?;
        let dir = TempDir::new();
        let www = dir.join("www");
        fs::create_dir(&www).expect("mkdir www");
        let launcher = bin();
        let app = example("app.cgi");
        let subs =
            [(EX_LAUNCHER, path_str(&launcher)), (EX_APP, path_str(&app))];
        fs::write(
            www.join(".htaccess"),
            render("apache/.htaccess", &subs[..1]),
        )
        .expect("write .htaccess");
        let wrapper = www.join("app.fcgi");
        fs::write(&wrapper, render("apache/app.fcgi", &subs))
            .expect("write app.fcgi");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
            .expect("chmod app.fcgi");
        symlink(&app, www.join("app.cgi")).expect("symlink app.cgi");
        if Ids::get().is_some() {
            check_reachable(&[&app, &launcher, &wrapper]);
        }

        let webroot = path_str(&www).to_string();
        let modules_s = path_str(&modules).to_string();
        let host_subs =
            [(EX_WEBROOT, webroot.as_str()), (EX_MODULES, &modules_s)];
        let (host_conf, extra) = match gateway {
            Gateway::Fcgid => {
                // Where mod_fcgid keeps its sockets and process table:
                // the instance's own runtime directory.
                let extra = format!(
                    "FcgidIPCDir \"{run}/fcgid\"\n\
                     FcgidProcessTableFile \"{run}/fcgid_shm\"\n",
                    run = path_str(&dir.join("run"))
                );
                (render("apache/host-fcgid.conf", &host_subs), extra)
            }
            Gateway::Cgi | Gateway::Cgid => {
                (render("apache/host-cgi.conf", &host_subs), String::new())
            }
        };
        let apache =
            Apache::start(&apache, &modules, dir, mpm, &extra, &host_conf);
        Some(SharedHost { apache })
    }

    /// Every check of [`Site`] against the app at URL path `app`, which
    /// sees itself as `SCRIPT_NAME=app` (Apache's own split).
    fn check(&self, what: &str, app: &str) {
        let error_log = self.apache.error_log();
        let dump = || self.apache.dump();
        Site {
            what,
            port: self.apache.port,
            app,
            script_name: app,
            error_log: &error_log,
            dump: &dump,
        }
        .check_all();
    }

    /// Under mod_fcgid fcgi-launch stays up between requests as Apache's
    /// FastCGI process; under plain CGI it exits after each request (the
    /// last ones may take a moment after their answer is out).
    fn expect_resident_launcher(&self, want: bool) {
        let launcher = fs::canonicalize(bin()).expect("canonicalize bin");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tree = process_tree(self.apache.server.pid());
            let resident: Vec<_> = tree
                .iter()
                .filter(|p| p.exe.as_deref() == Some(&launcher))
                .collect();
            if want && resident.is_empty() {
                self.apache.fail(&format!(
                    "no fcgi-launch among Apache's processes: {tree:#?}"
                ));
            }
            if want || resident.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                self.apache.fail(&format!(
                    "fcgi-launch outlived its CGI requests: {resident:#?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        self.apache.stop();
    }
}

// ---------------------------------------------------------------------
// Apache
// ---------------------------------------------------------------------

/// The multi-processing module.
#[derive(Clone, Copy)]
enum Mpm {
    /// One process per connection (what mod_cgi wants).
    Prefork,
    /// Threads (Debian's default).
    Event,
}

/// A running `apache2 -DFOREGROUND` with its own configuration in a temp
/// dir; killed with its process group on drop, stopped gracefully and
/// checked by [`Apache::stop`].
struct Apache {
    // Dropped first: killed before its directory goes.
    server: Server,
    dir: TempDir,
    port: u16,
}

impl Apache {
    /// Writes `<tmp>/httpd.conf` (instance paths, the base modules, the
    /// web user, `extra`) including `<tmp>/host.conf` (`host_conf`),
    /// starts Apache on a free port, and waits until it answers.
    fn start(
        apache: &Path,
        modules: &Path,
        dir: TempDir,
        mpm: Mpm,
        extra: &str,
        host_conf: &str,
    ) -> Apache {
        for sub in ["run", "logs", "www"] {
            let p = dir.join(sub);
            if !p.exists() {
                fs::create_dir(&p).expect("mkdir");
            }
        }
        fs::write(dir.join("host.conf"), host_conf).expect("write host.conf");
        let conf = dir.join("httpd.conf");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            fs::write(
                &conf,
                httpd_conf(dir.path(), modules, port, mpm, extra),
            )
            .expect("write httpd.conf");
            let server = Server::spawn(TempDir::new(), apache, |c| {
                c.arg("-DFOREGROUND").arg("-f").arg(&conf);
            });
            match wait_up(&server, port) {
                // Port taken meanwhile: Apache exits at once; retry.
                Err(_) if attempt < 4 && server.try_status().is_some() => {
                    continue
                }
                Ok(()) if server.try_status().is_none() => {
                    return Apache { server, dir, port }
                }
                r => {
                    let e = r.err().unwrap_or_else(|| "Apache exited".into());
                    Apache { server, dir, port }.fail(&e)
                }
            }
        }
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("logs/error.log")
    }

    /// The server dump (stdout/stderr of apache2) and the error log.
    fn dump(&self) -> String {
        let log = fs::read(self.error_log()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let start = log.len().saturating_sub(20_000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!(
            "{}\n----- Apache error log {} -----\n{}\n----- httpd.conf \
             -----\n{}\n----- host.conf -----\n{}",
            self.server.dump(),
            self.error_log().display(),
            &log[start..],
            fs::read_to_string(self.dir.join("httpd.conf"))
                .unwrap_or_default(),
            fs::read_to_string(self.dir.join("host.conf")).unwrap_or_default(),
        )
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.dump())
    }

    /// Graceful stop (SIGTERM: Apache stops its children and mod_fcgid
    /// its FastCGI processes), then checks that every process Apache had
    /// started is gone and that nothing still runs in its directory.
    fn stop(&mut self) {
        let tree = process_tree(self.server.pid());
        self.server.signal("TERM");
        if self.server.wait_exit(STOP_TIMEOUT).is_none() {
            self.fail(&format!(
                "Apache did not exit within {STOP_TIMEOUT:?} of SIGTERM"
            ));
        }
        if let Err(e) = wait_gone(&tree, Some(self.dir.path())) {
            self.fail(&e);
        }
        // Nothing that went wrong unnoticed: a panic, a crashed Apache
        // child, a module giving up.
        let log = fs::read(self.error_log()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let bad = ["panicked", "exit signal", ":emerg]", ":crit]", ":alert]"];
        if let Some(line) =
            log.lines().find(|l| bad.iter().any(|b| l.contains(b)))
        {
            self.fail(&format!("in the error log: {line}"));
        }
    }
}

/// The instance's `httpd.conf`: everything in `dir`, listening on
/// 127.0.0.1:`port`; as root, children run as the web server user.
/// No `Mutex` line: the default mechanism (pthread) needs no file, while
/// `Mutex file:` makes mod_fcgid lock its process table with `fcntl`,
/// which threads of one process trip over under the event MPM
/// ("can't lock process table": EDEADLK, and the child exits).
fn httpd_conf(
    dir: &Path,
    modules: &Path,
    port: u16,
    mpm: Mpm,
    extra: &str,
) -> String {
    let d = path_str(dir);
    let m = path_str(modules);
    let mpm = match mpm {
        Mpm::Prefork => "prefork",
        Mpm::Event => "event",
    };
    let user = match Ids::get() {
        Some(ids) => format!("User #{}\nGroup #{}\n", ids.web_uid, ids.gid),
        None => String::new(),
    };
    format!(
        "# Written by tests/it/deploy_apache.rs for one test run.\n\
         ServerRoot \"{d}\"\n\
         ServerName 127.0.0.1\n\
         Listen 127.0.0.1:{port}\n\
         PidFile \"{d}/run/httpd.pid\"\n\
         DefaultRuntimeDir \"{d}/run\"\n\
         ErrorLog \"{d}/logs/error.log\"\n\
         LogLevel warn\n\
         LoadModule mpm_{mpm}_module \"{m}/mod_mpm_{mpm}.so\"\n\
         LoadModule authz_core_module \"{m}/mod_authz_core.so\"\n\
         LoadModule mime_module \"{m}/mod_mime.so\"\n\
         TypesConfig /dev/null\n\
         {user}\
         DocumentRoot \"{d}/www\"\n\
         <Directory />\n\
         \x20   AllowOverride None\n\
         \x20   Require all denied\n\
         </Directory>\n\
         Include \"{d}/host.conf\"\n\
         {extra}"
    )
}

/// The directory holding every module in `names` (Debian's, or the Red
/// Hat layout); `None` after saying so if one is missing.
fn module_dir(names: &[&str]) -> Option<PathBuf> {
    let dirs = [
        "/usr/lib/apache2/modules",
        "/usr/lib64/httpd/modules",
        "/usr/lib/httpd/modules",
    ];
    let base = [
        "mod_mpm_event.so",
        "mod_mpm_prefork.so",
        "mod_authz_core.so",
        "mod_mime.so",
    ];
    for d in dirs {
        let d = Path::new(d);
        if base.iter().chain(names).all(|n| d.join(n).is_file()) {
            return Some(d.to_path_buf());
        }
    }
    if peers_required() {
        panic!(
            "Apache modules {names:?} are required \
             (FCGI_LAUNCH_REQUIRE_PEERS is set) but not installed"
        );
    }
    eprintln!("SKIP: Apache modules {names:?} are not installed");
    None
}

// ---------------------------------------------------------------------
// Users, paths, the documented command line
// ---------------------------------------------------------------------

/// Who runs what, when the tests run as root: Apache's children as the
/// web server user, the proxied application as another user in the web
/// server's group.  `None` when not root (everything runs as us).
struct Ids {
    web_uid: u32,
    gid: u32,
    app_uid: u32,
}

impl Ids {
    fn get() -> Option<Ids> {
        // Our effective uid, without unsafe code.
        let euid = fs::metadata("/proc/self").ok()?.uid();
        if euid != 0 {
            return None;
        }
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let find = |name: &str| {
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[0] == name)
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                    .flatten()
            })
        };
        let (web_uid, gid): (u32, u32) = ["www-data", "apache", "http"]
            .iter()
            .find_map(|n| find(n))
            .expect(
                "no web server user (www-data, apache, http) in /etc/passwd",
            );
        let app_uid = find("nobody").map_or(65534, |(u, _)| u);
        Some(Ids {
            web_uid,
            gid,
            app_uid,
        })
    }
}

/// Fails unless other users may reach and read each path (the web server
/// and application users must; a checkout under a private home cannot
/// be tested as root).
fn check_reachable(paths: &[&Path]) {
    for p in paths {
        let mut cur = Some(*p);
        while let Some(c) = cur {
            let need = if c == *p { 0o005 } else { 0o001 };
            let mode = fs::metadata(c).map(|m| m.mode()).unwrap_or(0);
            assert!(
                mode & need == need,
                "{} is not readable by other users (mode {mode:o}), so \
                 Apache's user cannot reach {}: run the tests from a \
                 checkout and CARGO_TARGET_DIR that others may read",
                c.display(),
                p.display()
            );
            cur = c.parent();
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The arguments of the command line documented in `text` that starts
/// with `start` (comment lines, `\` continuations joined), with
/// `fcgi-launch` itself left out.
fn documented_command(text: &str, start: &str) -> Vec<String> {
    let mut lines = text.lines().map(|l| l.trim_start_matches('#').trim());
    let first = lines
        .by_ref()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no {start:?} command line documented"));
    let mut cmd = String::new();
    let mut line = first;
    loop {
        match line.strip_suffix('\\') {
            Some(l) => cmd.push_str(l),
            None => {
                cmd.push_str(line);
                break;
            }
        }
        cmd.push(' ');
        line = lines.next().expect("continued command line");
    }
    cmd.split_whitespace().skip(1).map(str::to_string).collect()
}

/// Waits until Apache (`srv`) answers HTTP on `port`; `Err` at once if
/// it exits.
fn wait_up(srv: &Server, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let r = wait_http(port, Duration::from_millis(100));
        if let Some(s) = srv.try_status() {
            return Err(format!("Apache {}", describe_status(s)));
        }
        if r.is_ok() || Instant::now() >= deadline {
            return r;
        }
    }
}

/// Waits until `srv` accepts connections on the unix socket `path`.
fn wait_socket(srv: &Server, path: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    while UnixStream::connect(path).is_err() {
        if let Some(s) = srv.try_status() {
            srv.fail(&format!(
                "exited ({}) before listening",
                describe_status(s)
            ));
        }
        if Instant::now() >= deadline {
            srv.fail(&format!("not listening on {path:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------

/// A process, as /proc shows it.
#[derive(Debug)]
struct Proc {
    pid: u32,
    /// Start time in clock ticks since boot: with the pid, identifies
    /// the process even if the pid is reused.
    start: u64,
    exe: Option<PathBuf>,
    cmdline: String,
}

/// (parent pid, start time, state) of process `pid`.
fn stat(pid: u32) -> Option<(u32, u64, char)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((ppid, start, state))
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn describe(pid: u32) -> Option<Proc> {
    let (_, start, _) = stat(pid)?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    Some(Proc {
        pid,
        start,
        exe: fs::read_link(format!("/proc/{pid}/exe")).ok(),
        cmdline: cmdline.trim_end().to_string(),
    })
}

/// Process `root` and all its descendants.
fn process_tree(root: u32) -> Vec<Proc> {
    let parents: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, stat(p)?.0)))
        .collect();
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        pids.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    pids.into_iter().filter_map(describe).collect()
}

/// Still alive (a zombie is as good as gone: it runs nothing).
fn alive(p: &Proc) -> bool {
    stat(p.pid)
        .is_some_and(|(_, start, state)| start == p.start && state != 'Z')
}

/// Waits until every process of `tree` is gone and, if `dir` is given,
/// no process runs in it or names it on its command line; if some
/// survive, kills them (they are ours) and says which.
fn wait_gone(tree: &[Proc], dir: Option<&Path>) -> Result<(), String> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    let me = std::process::id();
    loop {
        let mut left: Vec<Proc> = tree
            .iter()
            .filter(|p| alive(p))
            .filter_map(|p| describe(p.pid))
            .collect();
        if let Some(dir) = dir {
            let d = path_str(dir);
            let inside = |s: &str| {
                s == d
                    || s.starts_with(&format!("{d}/"))
                    || s.starts_with(&format!("{d} "))
            };
            for pid in all_pids() {
                if pid == me || left.iter().any(|p| p.pid == pid) {
                    continue;
                }
                let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
                let cwd_in =
                    cwd.as_deref().and_then(Path::to_str).is_some_and(inside);
                let Some(p) = describe(pid) else { continue };
                if (cwd_in || p.cmdline.split(' ').any(inside)) && alive(&p) {
                    left.push(p);
                }
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            for p in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "KILL", &p.pid.to_string()])
                    .status();
            }
            return Err(format!(
                "{} processes survived the server's stop (now killed): \
                 {left:#?}",
                left.len()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}
