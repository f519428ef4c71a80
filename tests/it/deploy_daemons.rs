//! fcgi-launch started by the programs that run FastCGI applications for
//! web servers that start none (DESIGN §1, §2 rules 3 and 4, §8):
//! spawn-fcgi, supervisor's `[fcgi-program:x]` and systemd socket
//! activation, each with the very files of `packaging/examples/` and
//! `packaging/systemd/`, and nginx in front on a high loopback port, so
//! that the checks of `realserver::Site` run through a real web server
//! (the app's stderr must reach nginx's error log).
//!
//! There is no systemd to run the units here, so the systemd test does
//! what systemd would with them: it reads `ListenStream=` and the socket
//! ownership from `fcgi-launch@.socket`, `ExecStart=`, `EnvironmentFile=`,
//! `User=` and `NoNewPrivileges=` from `fcgi-launch@.service`, and passes
//! the socket exactly as systemd does with `systemd-socket-activate`.
//! The other hardening options are only checked by
//! `systemd-analyze verify` and `systemd-analyze security`.
//!
//! As root (with a `www-data` user) the tests keep the examples' users:
//! sockets owned by www-data, the app run as www-data, nginx's workers
//! as www-data.  Otherwise those settings are taken out, with a line on
//! stderr.  Each test stops what it started, by pid, and checks that the
//! daemons' children are gone.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::realserver::{
    example, free_port, proc_uid, render, require_tool, tail_of,
    wait_answering, Leftovers, Proc, Site,
};
use crate::util::{bin, describe_status, Server, TempDir, STARTUP_TIMEOUT};

/// Where the examples install the sample app.
const APP_PATH: &str = "/var/www/yourapplication/app.cgi";
/// Where the examples mount the app in nginx.
const MOUNT: &str = "/yourapplication";
/// The user the examples run the app as and give sockets to.
const WEB_USER: &str = "www-data";
/// Time for a daemon to stop (supervisor's stopwaitsecs is 15).
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Time for the children of a stopped daemon to be gone.
const GONE_TIMEOUT: Duration = Duration::from_secs(15);
/// Variables that would change how fcgi-launch detects its mode.
const MODE_VARS: &[&str] = &[
    "GATEWAY_INTERFACE",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "FCGI_WEB_SERVER_ADDRS",
];

// ---------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------

/// True if and only if the tests run as root.
fn is_root() -> bool {
    proc_uid(std::process::id()) == Some(0)
}

/// The uid of `name`, from /etc/passwd.
fn uid_of(name: &str) -> Option<u32> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
    })
}

/// The uid of www-data if the examples' users can be kept (root, and
/// www-data exists); `None`, after saying so, if they must be taken out.
fn web_user(what: &str) -> Option<u32> {
    if !is_root() {
        eprintln!(
            "{what}: not root, so the example's {WEB_USER} socket owner and \
             user are left out"
        );
        return None;
    }
    let uid = uid_of(WEB_USER);
    if uid.is_none() {
        eprintln!(
            "{what}: no {WEB_USER} user, so the example's socket owner and \
             user are left out"
        );
    }
    uid
}

/// Fails unless `proc` runs as `uid` (when the example names a user).
fn check_uid(what: &str, proc: &Proc, uid: Option<u32>, dump: &str) {
    let Some(uid) = uid else { return };
    if proc.uid() != Some(uid) {
        panic!(
            "{what}: {} runs as uid {:?}, want {WEB_USER} ({uid})\n{dump}",
            proc.cmdline,
            proc.uid()
        );
    }
}

fn clean_env(cmd: &mut Command) {
    for v in MODE_VARS {
        cmd.env_remove(v);
    }
}

// ---------------------------------------------------------------------
// nginx in front
// ---------------------------------------------------------------------

/// The parameters of nginx's own `fastcgi_params` file, which the
/// examples tell users to include.
const FASTCGI_PARAMS: &str = "\
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param DOCUMENT_ROOT $document_root;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param REQUEST_SCHEME $scheme;
            fastcgi_param HTTPS $https if_not_empty;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param SERVER_ADDR $server_addr;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param REDIRECT_STATUS 200;
";

/// nginx on 127.0.0.1:`port`, passing `MOUNT` to the FastCGI socket.
struct Nginx {
    server: Server,
    port: u16,
    error_log: PathBuf,
    conf: String,
}

impl Nginx {
    /// Starts nginx in front of the unix socket `sock`; its workers run
    /// as www-data if `web_uid` is set (as the examples assume), else as
    /// whoever runs the tests.
    fn start(nginx: &Path, sock: &Path, web_uid: Option<u32>) -> Nginx {
        let user = match (web_uid, is_root()) {
            (Some(_), _) => format!("user {WEB_USER} {WEB_USER};"),
            // Else nginx would make its workers nobody, who may not
            // connect to a socket that is not www-data's.
            (None, true) => "user root root;".to_string(),
            (None, false) => String::new(),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = TempDir::new();
            let d = dir.path().display().to_string();
            let port = free_port();
            let error_log = dir.join("error.log");
            let conf = format!(
                "daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
{user}
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    server {{
        listen 127.0.0.1:{port};
        location {MOUNT} {{
{FASTCGI_PARAMS}            fastcgi_pass unix:{sock};
        }}
    }}
}}
",
                sock = sock.display()
            );
            let conf_path = dir.join("nginx.conf");
            fs::write(&conf_path, &conf).expect("write nginx.conf");
            let prefix = format!("{d}/");
            let server = Server::spawn(dir, nginx, |c| {
                c.arg("-p")
                    .arg(&prefix)
                    .arg("-c")
                    .arg(&conf_path)
                    .arg("-e")
                    .arg(&error_log);
            });
            let n = Nginx {
                server,
                port,
                error_log,
                conf,
            };
            match wait_answering(&n.server, port) {
                Ok(()) => return n,
                Err(_) if attempt < 4 && n.server.try_status().is_some() => {
                    continue
                }
                Err(e) => panic!("nginx: {e}\n{}", n.dump()),
            }
        }
    }

    fn dump(&self) -> String {
        format!(
            "{}\n----- nginx.conf -----\n{}\n----- nginx error log -----\n\
             {}",
            self.server.dump(),
            self.conf,
            tail_of(&self.error_log)
        )
    }

    /// Stops nginx (SIGQUIT, its graceful stop) and waits for it.
    fn stop(&self) {
        self.server.signal("QUIT");
        let st = self.server.wait_exit(STOP_TIMEOUT);
        if st.is_none() {
            panic!("nginx did not stop\n{}", self.dump());
        }
    }
}

/// Waits until the unix socket `sock` accepts connections.
fn wait_socket(server: &Server, sock: &Path, what: &str) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(s) = server.try_status() {
            server.fail(&format!(
                "{what} {} before {} accepted connections",
                describe_status(s),
                sock.display()
            ));
        }
        match UnixStream::connect(sock) {
            Ok(_) => return,
            Err(e) if Instant::now() >= deadline => server.fail(&format!(
                "{what}: {} does not accept connections: {e}",
                sock.display()
            )),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs every check of `Site` through nginx at `MOUNT`.
fn check_site(what: &str, nginx: &Nginx, daemon_dump: &dyn Fn() -> String) {
    let dump = || format!("{}\n{}", daemon_dump(), nginx.dump());
    Site {
        what,
        port: nginx.port,
        app: MOUNT,
        script_name: MOUNT,
        error_log: &nginx.error_log,
        dump: &dump,
    }
    .check_all();
}

/// SIGTERM to `server`, which must then exit with status 0.
fn stop_cleanly(what: &str, server: &Server, dump: &dyn Fn() -> String) {
    server.signal("TERM");
    match server.wait_exit(STOP_TIMEOUT) {
        Some(s) if s.code() == Some(0) => {}
        Some(s) => panic!(
            "{what}: after SIGTERM {}, want status 0\n{}",
            describe_status(s),
            dump()
        ),
        None => panic!(
            "{what}: still running {STOP_TIMEOUT:?} after SIGTERM\n{}",
            dump()
        ),
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_string()
}

// ---------------------------------------------------------------------
// spawn-fcgi
// ---------------------------------------------------------------------

#[test]
fn spawn_fcgi_example_serves_the_app_behind_nginx() {
    let what = "spawn-fcgi example behind nginx";
    let (Some(spawn_fcgi), Some(nginx)) =
        (require_tool("spawn-fcgi"), require_tool("nginx"))
    else {
        return;
    };
    let web_uid = web_user(what);
    let dir = TempDir::new();
    let run = dir.join("run");
    let sock = run.join("app.sock");
    let spawn = format!("exec {}", spawn_fcgi.display());
    let (run_s, bin_s, app_s) = (
        path_str(&run),
        path_str(&bin()),
        path_str(&example("app.cgi")),
    );
    let mut subs = vec![
        ("exec spawn-fcgi", spawn.as_str()),
        ("/run/fcgi-launch", run_s.as_str()),
        ("/usr/bin/fcgi-launch", bin_s.as_str()),
        (APP_PATH, app_s.as_str()),
    ];
    if web_uid.is_none() {
        subs.push(("-U www-data -G www-data", ""));
        subs.push(("-u www-data -g www-data", ""));
    }
    let script = render("spawn-fcgi/fcgi-launch.sh", &subs);
    let script_path = dir.join("fcgi-launch.sh");
    fs::write(&script_path, &script).expect("write the script");

    // sh execs spawn-fcgi, which (with -n) execs fcgi-launch: one pid.
    let daemon = Server::spawn(dir, Path::new("/bin/sh"), |c| {
        clean_env(c);
        c.arg(&script_path);
    });
    let daemon_dump =
        || format!("{}\n----- script -----\n{script}", daemon.dump());
    wait_socket(&daemon, &sock, "spawn-fcgi");
    let me = Proc::children(std::process::id())
        .into_iter()
        .find(|p| p.pid == daemon.pid())
        .unwrap_or_else(|| daemon.fail("fcgi-launch is not running"));
    if !me.cmdline.contains(&bin_s) {
        daemon.fail(&format!(
            "pid {} is {:?}, not fcgi-launch",
            me.pid, me.cmdline
        ));
    }
    check_uid(what, &me, web_uid, &daemon_dump());
    let mode = fs::metadata(&sock)
        .ok()
        .map(|m| m.permissions().mode() & 0o777);
    if mode != Some(0o660) {
        daemon.fail(&format!("socket mode {mode:?}, want 0660 (-M)"));
    }

    let nginx = Nginx::start(&nginx, &sock, web_uid);
    check_site(what, &nginx, &daemon_dump);
    stop_cleanly(what, &daemon, &daemon_dump);
    nginx.stop();
}

// ---------------------------------------------------------------------
// supervisor
// ---------------------------------------------------------------------

/// `supervisorctl -c CONF status`, whatever its exit status.
fn supervisorctl_status(ctl: &Path, conf: &Path) -> String {
    match Command::new(ctl).arg("-c").arg(conf).arg("status").output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("<cannot run supervisorctl: {e}>"),
    }
}

#[test]
fn supervisor_example_serves_the_app_behind_nginx() {
    let what = "supervisor example behind nginx";
    let (Some(supervisord), Some(ctl), Some(nginx)) = (
        require_tool("supervisord"),
        require_tool("supervisorctl"),
        require_tool("nginx"),
    ) else {
        return;
    };
    let web_uid = web_user(what);
    // Dropped last: kills any fcgi-launch supervisord left behind.
    let leftovers = Leftovers::default();
    let dir = TempDir::new();
    let d = dir.path().display().to_string();
    let run = dir.join("run");
    fs::create_dir(&run).expect("mkdir run");
    let sock = run.join("app.sock");
    let (run_s, bin_s, app_s) = (
        path_str(&run),
        path_str(&bin()),
        path_str(&example("app.cgi")),
    );
    let mut subs = vec![
        ("/run/fcgi-launch", run_s.as_str()),
        ("/usr/bin/fcgi-launch", bin_s.as_str()),
        (APP_PATH, app_s.as_str()),
    ];
    if web_uid.is_none() {
        subs.push(("socket_owner=www-data:www-data\n", ""));
        subs.push(("user=www-data\n", ""));
    }
    let program = render("supervisor/fcgi-launch.conf", &subs);
    let numprocs: usize = program
        .lines()
        .find_map(|l| l.strip_prefix("numprocs="))
        .and_then(|n| n.trim().parse().ok())
        .expect("the example sets numprocs=N");
    fs::write(dir.join("fcgi-launch.conf"), &program).expect("write");
    let conf = format!(
        "[supervisord]
nodaemon=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
loglevel=info

[unix_http_server]
file={d}/supervisor.sock
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{d}/supervisor.sock

[include]
files = {d}/fcgi-launch.conf
"
    );
    let conf_path = dir.join("supervisord.conf");
    fs::write(&conf_path, &conf).expect("write supervisord.conf");
    let log = dir.join("supervisord.log");
    let child_logs = dir.path().to_path_buf();

    let daemon = Server::spawn(dir, &supervisord, |c| {
        clean_env(c);
        c.arg("-n").arg("-c").arg(&conf_path);
    });
    let daemon_dump = || {
        let mut s = format!(
            "{}\n----- supervisorctl status -----\n{}\n----- {} -----\n{}\n\
             ----- supervisord.log -----\n{}",
            daemon.dump(),
            supervisorctl_status(&ctl, &conf_path),
            "fcgi-launch.conf",
            program,
            tail_of(&log)
        );
        for e in fs::read_dir(&child_logs).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("app_") {
                s.push_str(&format!(
                    "\n----- {name} -----\n{}",
                    tail_of(&e.path())
                ));
            }
        }
        s
    };

    // Every copy RUNNING (supervisor's startsecs passed).
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let status = supervisorctl_status(&ctl, &conf_path);
        let running = status
            .lines()
            .filter(|l| l.starts_with("app:app_") && l.contains("RUNNING"))
            .count();
        if running == numprocs {
            break;
        }
        if daemon.try_status().is_some() || Instant::now() >= deadline {
            panic!(
                "{what}: {running} of {numprocs} copies RUNNING\n{}",
                daemon_dump()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    let copies = |leftovers: &Leftovers| {
        let procs: Vec<Proc> = Proc::children(daemon.pid())
            .into_iter()
            .filter(|p| p.cmdline.contains(&bin_s))
            .collect();
        leftovers.add(&procs);
        procs
    };
    let procs = copies(&leftovers);
    if procs.len() != numprocs {
        panic!(
            "{what}: {} fcgi-launch processes, want {numprocs}: {procs:?}\n{}",
            procs.len(),
            daemon_dump()
        );
    }
    for p in &procs {
        check_uid(what, p, web_uid, &daemon_dump());
    }
    wait_socket(&daemon, &sock, "supervisord");

    let nginx = Nginx::start(&nginx, &sock, web_uid);
    check_site(what, &nginx, &daemon_dump);
    // A copy restarted meanwhile must be gone at the end too.
    copies(&leftovers);
    stop_cleanly(what, &daemon, &daemon_dump);
    if let Err(e) = leftovers.wait_gone(GONE_TIMEOUT) {
        panic!("{what}: {e}\n{}", daemon_dump());
    }
    nginx.stop();
}

// ---------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------

/// The text of `packaging/systemd/NAME`.
fn unit_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/systemd")
        .join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The values of `key=` in `[section]` of a unit file, in order (no
/// line continuations: the test would have to learn them).
fn unit_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "continued unit line {line:?}");
        if let Some(name) = line.strip_prefix('[') {
            current = name.trim_end_matches(']').to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            if current == section && k.trim() == key {
                out.push(v.trim().to_string());
            }
        }
    }
    out
}

/// The single value of `key=` in `[section]`, if any.
fn unit_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut v = unit_values(text, section, key);
    assert!(v.len() <= 1, "{key}= set {} times in [{section}]", v.len());
    v.pop()
}

/// `s` with systemd's specifiers for instance `instance` expanded
/// (systemd.unit(5) "Specifiers"); any other specifier fails the test,
/// so that a unit using one is not tested wrongly.
fn expand_specifiers(s: &str, instance: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i') | Some('I') => out.push_str(instance),
            Some('%') => out.push('%'),
            other => panic!("specifier %{other:?} in {s:?} is not emulated"),
        }
    }
    out
}

/// The variables of an `EnvironmentFile=` (systemd.exec(5)): `NAME=VALUE`
/// lines, `#`/`;` comments, optional quotes around the value.
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "continued line {line:?}");
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not NAME=VALUE: {line:?}"));
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q)?.strip_suffix(*q))
            .unwrap_or(value);
        out.push((name.trim().to_string(), value.to_string()));
    }
    out
}

/// `ExecStart=` as systemd runs it (systemd.service(5) "Command lines"):
/// words split at spaces, `$NAME` replaced by the words of its value,
/// `${NAME}` by its value as part of one word.  Quotes, escapes and
/// prefixes such as `-` are not emulated and fail the test.
fn expand_exec(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    assert!(
        !line.contains(['"', '\'', '\\']),
        "quoting in ExecStart= is not emulated: {line:?}"
    );
    assert!(
        !line.starts_with(['-', '@', ':', '+', '!']),
        "ExecStart= prefixes are not emulated: {line:?}"
    );
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) =
            word.strip_prefix('$').filter(|n| !n.starts_with('{'))
        {
            if let Some(v) = env.get(name) {
                argv.extend(v.split_whitespace().map(String::from));
            }
            continue;
        }
        let mut w = word.to_string();
        while let Some(i) = w.find("${") {
            let end = w[i..].find('}').expect("unterminated ${") + i;
            let value = env.get(&w[i + 2..end]).cloned().unwrap_or_default();
            w.replace_range(i..=end, &value);
        }
        assert!(!w.contains('$'), "unexpected $ in ExecStart= word {word:?}");
        argv.push(w);
    }
    argv
}

/// True if and only if a unit boolean is on.
fn unit_bool(v: Option<&str>) -> bool {
    matches!(v, Some("yes" | "true" | "on" | "1"))
}

#[test]
fn systemd_units_serve_the_app_by_socket_activation_behind_nginx() {
    let what = "systemd units (socket activation) behind nginx";
    let (Some(activate), Some(nginx)) = (
        require_tool("systemd-socket-activate"),
        require_tool("nginx"),
    ) else {
        return;
    };
    let instance = "app";
    let web_uid = web_user(what);
    let socket_unit = unit_file("fcgi-launch@.socket");
    let service_unit = unit_file("fcgi-launch@.service");
    let dir = TempDir::new();

    // fcgi-launch@app.socket: where, and how it is owned.
    let listen = unit_value(&socket_unit, "Socket", "ListenStream")
        .map(|v| expand_specifiers(&v, instance))
        .expect("ListenStream= in fcgi-launch@.socket");
    let under_run = listen
        .strip_prefix("/run/")
        .unwrap_or_else(|| panic!("ListenStream={listen} is not under /run"));
    let sock = dir.join("run").join(under_run);
    fs::create_dir_all(sock.parent().expect("socket dir")).expect("mkdir");
    let accept = unit_value(&socket_unit, "Socket", "Accept");
    assert!(
        !unit_bool(accept.as_deref()),
        "fcgi-launch@.socket must not set Accept=yes (fcgi-launch wants \
         the listening socket)"
    );
    let socket_mode = unit_value(&socket_unit, "Socket", "SocketMode");
    let socket_user = unit_value(&socket_unit, "Socket", "SocketUser");
    let socket_group = unit_value(&socket_unit, "Socket", "SocketGroup");

    // fcgi-launch@app.service: environment, user, command line.
    let mut env = BTreeMap::new();
    for assignment in unit_values(&service_unit, "Service", "Environment") {
        for (n, v) in parse_env_file(&assignment) {
            env.insert(n, v);
        }
    }
    let app_s = path_str(&example("app.cgi"));
    let mut env_files = Vec::new();
    for file in unit_values(&service_unit, "Service", "EnvironmentFile") {
        let file = expand_specifiers(&file, instance);
        let file = file.trim_start_matches('-').to_string();
        // The instance's settings: the example, as the admin installs it.
        assert_eq!(
            file,
            format!("/etc/fcgi-launch/{instance}.conf"),
            "EnvironmentFile= moved: update example.conf's documentation \
             and this test"
        );
        let text = render("../systemd/example.conf", &[(APP_PATH, &app_s)]);
        for (n, v) in parse_env_file(&text) {
            env.insert(n, v);
        }
        env_files.push(text);
    }
    let exec = unit_value(&service_unit, "Service", "ExecStart")
        .map(|v| expand_specifiers(&v, instance))
        .expect("ExecStart= in fcgi-launch@.service");
    let mut argv = expand_exec(&exec, &env);
    assert_eq!(
        argv.first().map(String::as_str),
        Some("/usr/bin/fcgi-launch"),
        "ExecStart= runs {argv:?}"
    );
    argv[0] = path_str(&bin());
    let user = unit_value(&service_unit, "Service", "User");
    let group = unit_value(&service_unit, "Service", "Group");
    let no_new_privs = unit_bool(
        unit_value(&service_unit, "Service", "NoNewPrivileges").as_deref(),
    );

    // User=/Group= and NoNewPrivileges= by setpriv, which execs in
    // place: the pid systemd-socket-activate puts in LISTEN_PID stays.
    let mut run_as = Vec::new();
    if let (Some(uid), Some(user)) = (web_uid, &user) {
        assert_eq!(uid_of(user), Some(uid), "User={user} is not {WEB_USER}");
        let setpriv = require_tool("setpriv");
        let Some(setpriv) = setpriv else { return };
        run_as.push(path_str(&setpriv));
        run_as.push(format!("--reuid={user}"));
        run_as.push(format!("--regid={}", group.as_deref().unwrap_or(user)));
        run_as.push("--init-groups".to_string());
        if no_new_privs {
            run_as.push("--no-new-privs".to_string());
        }
        run_as.push("--".to_string());
    }
    let daemon = Server::spawn(dir, &activate, |c| {
        clean_env(c);
        c.arg("-l").arg(&sock);
        for (n, v) in &env {
            c.arg("-E").arg(format!("{n}={v}"));
        }
        c.arg("--").args(&run_as).args(&argv);
    });
    let daemon_dump = || {
        format!(
            "{}\n----- fcgi-launch@.socket -----\n{socket_unit}\n\
             ----- fcgi-launch@.service -----\n{service_unit}\n\
             ----- {instance}.conf -----\n{}",
            daemon.dump(),
            env_files.join("\n")
        )
    };

    // What systemd does to the socket before anyone connects.
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !sock.exists() {
        if daemon.try_status().is_some() || Instant::now() >= deadline {
            panic!("{what}: no socket {}\n{}", sock.display(), daemon_dump());
        }
        thread::sleep(Duration::from_millis(20));
    }
    if web_uid.is_some() {
        let owner = format!(
            "{}:{}",
            socket_user.as_deref().unwrap_or("root"),
            socket_group.as_deref().unwrap_or("root")
        );
        run_ok(Command::new("chown").arg(&owner).arg(&sock));
    }
    if let Some(mode) = &socket_mode {
        let mode = u32::from_str_radix(mode, 8).expect("octal SocketMode=");
        fs::set_permissions(&sock, fs::Permissions::from_mode(mode))
            .expect("chmod the socket");
    } else if web_uid.is_none() {
        eprintln!("{what}: no SocketMode=; systemd's default is 0666");
    }

    let nginx = Nginx::start(&nginx, &sock, web_uid);
    check_site(what, &nginx, &daemon_dump);
    // The first connection made systemd-socket-activate exec it.
    let me = Proc::children(std::process::id())
        .into_iter()
        .find(|p| p.pid == daemon.pid())
        .unwrap_or_else(|| daemon.fail("fcgi-launch is not running"));
    if !me.cmdline.contains(&argv[0]) {
        daemon.fail(&format!("pid {} is {:?}", me.pid, me.cmdline));
    }
    check_uid(what, &me, web_uid, &daemon_dump());
    stop_cleanly(what, &daemon, &daemon_dump);
    nginx.stop();
}

/// Runs `cmd`, failing the test unless it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?}: {}\n{}{}",
            describe_status(out.status),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

#[test]
fn systemd_units_pass_systemd_analyze() {
    let Some(analyze) = require_tool("systemd-analyze") else {
        return;
    };
    let dir = TempDir::new();
    // systemd-analyze verify runs without a systemd PID 1 in some
    // places only: find out with a unit that is surely right.
    let probe = dir.join("probe.service");
    fs::write(&probe, "[Service]\nExecStart=/bin/true\n").expect("write");
    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&probe)
        .output()
        .expect("run systemd-analyze");
    if !out.status.success() || !out.stderr.is_empty() {
        eprintln!(
            "SKIP: systemd-analyze verify does not work here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    // Copies with the binary's real path: verify checks it exists.
    let bin_s = path_str(&bin());
    for name in ["fcgi-launch@.socket", "fcgi-launch@.service"] {
        let text = unit_file(name).replace("/usr/bin/fcgi-launch", &bin_s);
        fs::write(dir.join(name), text).expect("write unit copy");
    }
    // Documentation=man:fcgi-launch(1) must name our man page: point
    // man(1) at it if man is installed, else skip that check.
    let mut verify = Command::new(&analyze);
    verify.arg("verify");
    if require_tool("man").is_some() {
        let man1 = dir.join("man/man1");
        fs::create_dir_all(&man1).expect("mkdir man/man1");
        let page =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("man/fcgi-launch.1");
        symlink(page, man1.join("fcgi-launch.1")).expect("symlink");
        verify.env("MANPATH", dir.join("man"));
    } else {
        verify.arg("--man=no");
    }
    let out = verify
        .arg(dir.join("fcgi-launch@app.socket"))
        .arg(dir.join("fcgi-launch@app.service"))
        .output()
        .expect("run systemd-analyze verify");
    if !out.status.success()
        || !out.stderr.is_empty()
        || !out.stdout.is_empty()
    {
        panic!(
            "systemd-analyze verify: {}\n{}{}",
            describe_status(out.status),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The hardening is on: systemd's own score of the service stays at
    // or below 2.5 ("OK"; --threshold counts tenths).
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--threshold=25"])
        .arg(dir.join("fcgi-launch@app.service"))
        .output()
        .expect("run systemd-analyze security");
    if !out.status.success() {
        panic!(
            "systemd-analyze security: {} (exposure above 2.5?)\n{}{}",
            describe_status(out.status),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
