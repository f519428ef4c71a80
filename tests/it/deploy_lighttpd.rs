//! lighttpd starting fcgi-launch itself through mod_fastcgi's `bin-path`,
//! with the listening socket on fd 0 (DESIGN §2 rule 4, §4, §8), using
//! the very files of `packaging/examples/lighttpd/`: the app mounted at
//! a prefix, and at the root the way Flask's FastCGI guide does it
//! (`url.rewrite-once` to `/yourapplication.fcgi$1`, static files kept
//! apart by `alias.url`), where `--script-name=` replaces werkzeug's
//! LighttpdCGIRootFix.
//!
//! Each test writes a minimal lighttpd.conf in a temp dir that includes
//! the rendered example, runs `lighttpd -D` on a free loopback port,
//! runs the checks of `realserver::Site` (the app's stderr must reach
//! lighttpd's `server.errorlog`), then stops lighttpd with SIGTERM and
//! checks that the fcgi-launch it spawned is gone.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::realserver::{
    example, free_port, http, render, require_tool, tail_of, wait_answering,
    Leftovers, Proc, Site,
};
use crate::util::{bin, describe_status, Server, TempDir, EXIT_TIMEOUT};

/// Where the examples install the sample app.
const APP_PATH: &str = "/var/www/yourapplication/app.cgi";
/// The socket the examples give lighttpd (it appends "-0").
const SOCKET: &str = "/run/lighttpd/yourapplication.sock";
/// Time for the spawned fcgi-launch to be gone once lighttpd stopped.
const GONE_TIMEOUT: Duration = Duration::from_secs(15);

/// lighttpd running one example, and what the checks need of it.
struct Lighttpd {
    server: Server,
    port: u16,
    error_log: PathBuf,
    static_dir: PathBuf,
    conf: String,
}

impl Lighttpd {
    /// Starts lighttpd with `example_rel` included (its documented
    /// paths substituted); `None` if lighttpd is not installed.
    fn start(example_rel: &str) -> Option<Lighttpd> {
        let lighttpd = require_tool("lighttpd")?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = TempDir::new();
            let d = dir.path().display().to_string();
            let port = free_port();
            let error_log = dir.join("error.log");
            let static_dir = dir.join("static");
            fs::create_dir(&static_dir).expect("mkdir static");
            fs::create_dir(dir.join("docroot")).expect("mkdir docroot");
            let (bin_s, app_s) = (
                bin().display().to_string(),
                example("app.cgi").display().to_string(),
            );
            let sock = format!("{d}/fcgi.sock");
            let static_s = format!("{d}/static/");
            let mut subs = vec![
                ("/usr/bin/fcgi-launch", bin_s.as_str()),
                (APP_PATH, app_s.as_str()),
                (SOCKET, sock.as_str()),
            ];
            if example_rel.ends_with("root.conf") {
                subs.push(("/var/www/yourapplication/static/", &static_s));
            }
            let included = render(example_rel, &subs);
            fs::write(dir.join("fcgi-launch.conf"), &included)
                .expect("write the example");
            // The rest of a lighttpd.conf; the example loads the modules
            // it needs itself (mod_fastcgi, mod_alias, mod_rewrite).
            let conf = format!(
                "server.port = {port}
server.bind = \"127.0.0.1\"
server.document-root = \"{d}/docroot\"
server.errorlog = \"{d}/error.log\"
server.pid-file = \"{d}/lighttpd.pid\"
server.upload-dirs = ( \"{d}\" )
server.max-request-size = 65536
server.modules = ( \"mod_access\" )
mimetype.assign = ( \".txt\" => \"text/plain\" )
include \"{d}/fcgi-launch.conf\"
"
            );
            let conf_path = dir.join("lighttpd.conf");
            fs::write(&conf_path, &conf).expect("write lighttpd.conf");
            let server = Server::spawn(dir, &lighttpd, |c| {
                c.arg("-D").arg("-f").arg(&conf_path);
            });
            let l = Lighttpd {
                server,
                port,
                error_log,
                static_dir,
                conf: format!("{conf}----- {example_rel} -----\n{included}"),
            };
            match wait_answering(&l.server, port) {
                Ok(()) => return Some(l),
                Err(_) if attempt < 4 && l.server.try_status().is_some() => {
                    continue
                }
                Err(e) => panic!("lighttpd: {e}\n{}", l.dump()),
            }
        }
    }

    fn dump(&self) -> String {
        format!(
            "{}\n----- lighttpd.conf -----\n{}\n----- error log -----\n{}",
            self.server.dump(),
            self.conf,
            tail_of(&self.error_log)
        )
    }

    /// The fcgi-launch processes lighttpd spawned.
    fn backends(&self) -> Vec<Proc> {
        let bin_s = bin().display().to_string();
        Proc::children(self.server.pid())
            .into_iter()
            .filter(|p| p.cmdline.contains(&bin_s))
            .collect()
    }

    /// Stops lighttpd with SIGTERM; it must exit 0 and its fcgi-launch
    /// must end with it.
    fn stop(&self, leftovers: &Leftovers) {
        leftovers.add(&self.backends());
        self.server.signal("TERM");
        match self.server.wait_exit(EXIT_TIMEOUT) {
            Some(s) if s.code() == Some(0) => {}
            Some(s) => panic!(
                "lighttpd: after SIGTERM {}, want status 0\n{}",
                describe_status(s),
                self.dump()
            ),
            None => panic!("lighttpd did not stop\n{}", self.dump()),
        }
        if let Err(e) = leftovers.wait_gone(GONE_TIMEOUT) {
            panic!("lighttpd's fcgi-launch: {e}\n{}", self.dump());
        }
    }

    /// `Site` at `app` with SCRIPT_NAME `script_name`.
    fn site<'a>(
        &'a self,
        what: &'a str,
        app: &'a str,
        script_name: &'a str,
        dump: &'a dyn Fn() -> String,
    ) -> Site<'a> {
        Site {
            what,
            port: self.port,
            app,
            script_name,
            error_log: &self.error_log,
            dump,
        }
    }

    /// Fails unless lighttpd spawned exactly one fcgi-launch ("max-procs"
    /// => 1), which it started from the example's bin-path.
    fn check_one_backend(&self, what: &str, bin_path_args: &str) {
        let b = self.backends();
        if b.len() != 1 || !b[0].cmdline.contains(bin_path_args) {
            panic!(
                "{what}: lighttpd's fcgi-launch processes are {b:?}, want one \
                 running {bin_path_args:?}\n{}",
                self.dump()
            );
        }
    }
}

#[test]
fn lighttpd_example_serves_the_app_at_a_prefix() {
    let what = "lighttpd example at /yourapplication";
    let leftovers = Leftovers::default();
    let Some(l) = Lighttpd::start("lighttpd/fcgi-launch-prefix.conf") else {
        return;
    };
    let dump = || l.dump();
    l.site(what, "/yourapplication", "/yourapplication", &dump)
        .check_all();
    l.check_one_backend(what, "--script-name /yourapplication -- ");
    l.stop(&leftovers);
}

#[test]
fn lighttpd_example_serves_the_app_at_the_root() {
    let what = "lighttpd example at /";
    let leftovers = Leftovers::default();
    let Some(l) = Lighttpd::start("lighttpd/fcgi-launch-root.conf") else {
        return;
    };
    let dump = || l.dump();
    // Site builds "{app}/hello/world" and "{app}?echo": app "" gives the
    // paths under the root, app "/" the query URLs ("/?echo").
    let root = l.site(what, "", "", &dump);
    root.check_page();
    root.check_concurrency();
    let slash = l.site(what, "/", "", &dump);
    slash.check_upload();
    slash.check_download();
    slash.check_stderr();
    check_static(&l, what);
    l.check_one_backend(what, "--script-name= -- ");
    l.stop(&leftovers);
}

/// /static/ is lighttpd's, not the app's: the rewrite leaves it alone.
fn check_static(l: &Lighttpd, what: &str) {
    let body = "a static file\n";
    fs::write(l.static_dir.join("hello.txt"), body).expect("write");
    match http(l.port, "GET", "/static/hello.txt", b"") {
        Ok(r) if r.status == 200 && r.text() == body => {}
        Ok(r) => panic!(
            "{what}: GET /static/hello.txt: status {}, body {:?}\n{}",
            r.status,
            r.text(),
            l.dump()
        ),
        Err(e) => panic!("{what}: GET /static/hello.txt: {e}\n{}", l.dump()),
    }
}
