//! The packages of DESIGN §8: the .deb that `packaging/build-deb.sh`
//! makes, taken apart and installed into a throwaway root, and the static
//! build of `packaging/README.md`, which must be static and serve CGI and
//! FastCGI.
//!
//! Both need a release build, which takes a while the first time. Each is
//! made once per test run, in a target directory of its own next to the
//! one the tests were built in (`target/pkg-build`, `target/static`), so
//! that later runs reuse it and nobody else's build waits for its lock.
//! They run one at a time and one job each, so that the rest of the
//! suite, running meanwhile, keeps its CPU.
//!
//! A missing `dpkg-deb` skips the .deb tests, or fails them when
//! `FCGI_LAUNCH_REQUIRE_PEERS` is set (CI); `dpkg`, `lintian` and `man`
//! (or `mandoc`) are used when present and required likewise.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::realserver::require_tool;
use crate::util::{
    free_port, show, Addr, Conn, Server, Stream, TempDir, STARTUP_TIMEOUT,
};

/// The exact stdout of the `hello` builtin.
const HELLO: &[u8] =
    b"Content-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";

/// The static build's flags, as `packaging/README.md` gives them.
const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// Time limit for one release build (LTO, one codegen unit, busy CI).
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Time limit for any other command (lintian takes seconds).
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

fn top() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory the tests were built in (`target/` unless
/// CARGO_TARGET_DIR says otherwise): the test binary is
/// `<target>/debug/deps/tests-HASH`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("no target dir above {}", exe.display()))
        .to_path_buf()
}

/// The directory of the cargo running these tests, whose `rustc` and
/// `cargo` the nested builds use (rustup picks the same toolchain).
fn toolchain_bin() -> Option<PathBuf> {
    let cargo = PathBuf::from(std::env::var_os("CARGO")?);
    Some(cargo.parent()?.to_path_buf())
}

/// Held during each nested build (see the module documentation).
fn build_slot() -> MutexGuard<'static, ()> {
    static SLOT: Mutex<()> = Mutex::new(());
    SLOT.lock().unwrap_or_else(|e| e.into_inner())
}

/// `cmd` for a nested cargo build into `target`: the same toolchain
/// first on PATH, no network (the crates were fetched to build these
/// tests), and none of the caller's flag variables, which would change
/// what is built; CARGO_ENCODED_RUSTFLAGS would even win over RUSTFLAGS.
fn nested_cargo_env(cmd: &mut Command, target: &Path) {
    if let Some(dir) = toolchain_bin() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(dir).chain(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).expect("join PATH"));
    }
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.ends_with("RUSTFLAGS") || k == "CARGO_BUILD_TARGET" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(top())
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_NET_OFFLINE", "true")
        .env("CARGO_BUILD_JOBS", "1");
}

/// Runs `cmd` to completion with stdin from /dev/null, its output kept
/// in files of `scratch`; kills its process group and fails the test if
/// it takes longer than `limit`.
fn run(cmd: &mut Command, scratch: &TempDir, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let out_path = scratch.join("cmd.stdout");
    let err_path = scratch.join("cmd.stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create cmd.stdout"))
        .stderr(File::create(&err_path).expect("create cmd.stderr"))
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!(
                "{desc}: still running after {limit:?}; stderr:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: fs::read(&out_path).expect("read cmd.stdout"),
        stderr: fs::read(&err_path).expect("read cmd.stderr"),
    }
}

/// Like [`run`], and fails the test, with both outputs, unless `cmd`
/// exits 0. Returns its stdout as text.
fn run_ok(cmd: &mut Command, limit: Duration) -> String {
    let scratch = TempDir::new();
    let out = run(cmd, &scratch, limit);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds a .deb with `packaging/build-deb.sh` into `out_dir`, from
/// `binary` if given (otherwise the script runs cargo build --release
/// into `target/pkg-build`), and returns its path.
fn build_deb(out_dir: &Path, binary: Option<&Path>) -> PathBuf {
    let mut cmd = Command::new("sh");
    cmd.arg(top().join("packaging/build-deb.sh"))
        .arg("-o")
        .arg(out_dir);
    if let Some(b) = binary {
        cmd.arg("-b").arg(b);
    }
    nested_cargo_env(&mut cmd, &target_dir().join("pkg-build"));
    let stdout = {
        let _slot = build_slot();
        run_ok(&mut cmd, BUILD_TIMEOUT)
    };
    let deb = PathBuf::from(stdout.trim_end());
    assert!(
        deb.is_file() && deb.starts_with(out_dir),
        "build-deb.sh printed {stdout:?}, not a .deb in {}",
        out_dir.display()
    );
    deb
}

/// The host's target triple, which the static build names with
/// `--target` so that build scripts are not linked statically too.
fn host_triple() -> String {
    let rustc = toolchain_bin()
        .map(|d| d.join("rustc"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("rustc"));
    let out = run_ok(Command::new(rustc).arg("-vV"), TOOL_TIMEOUT);
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("no host line in rustc -vV:\n{out}"))
        .to_string()
}

/// The static binary, built once per run with the documented command
/// into `target/static`.
fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let triple = host_triple();
        let target = target_dir().join("static");
        let cargo = std::env::var_os("CARGO").unwrap_or("cargo".into());
        let mut cmd = Command::new(cargo);
        nested_cargo_env(&mut cmd, &target);
        cmd.env("RUSTFLAGS", STATIC_RUSTFLAGS).args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "fcgi-launch",
            "--target",
            &triple,
        ]);
        let _slot = build_slot();
        run_ok(&mut cmd, BUILD_TIMEOUT);
        target.join(&triple).join("release/fcgi-launch")
    })
}

/// `dpkg-deb -f DEB`: the control fields, continuation lines joined
/// to their field with "\n".
fn control_fields(deb: &Path) -> Vec<(String, String)> {
    let text =
        run_ok(Command::new("dpkg-deb").arg("-f").arg(deb), TOOL_TIMEOUT);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with(' ') {
            let (_, v) = fields.last_mut().expect("continuation first");
            v.push('\n');
            v.push_str(line);
        } else {
            let (k, v) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad control line {line:?}"));
            fields.push((k.to_string(), v.trim().to_string()));
        }
    }
    fields
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One line of `dpkg-deb -c`: mode string, owner/group, path (without
/// the leading "./").
struct Entry {
    mode: String,
    owner: String,
    path: String,
}

fn contents(deb: &Path) -> Vec<Entry> {
    let text =
        run_ok(Command::new("dpkg-deb").arg("-c").arg(deb), TOOL_TIMEOUT);
    text.lines()
        .map(|line| {
            let mut it = line.split_whitespace();
            let mode = it.next().unwrap_or_default().to_string();
            let owner = it.next().unwrap_or_default().to_string();
            // size, date, time, then the path (which has no spaces here).
            let path = it
                .nth(3)
                .unwrap_or_else(|| panic!("bad dpkg-deb -c line {line:?}"));
            let path = path.trim_start_matches("./").to_string();
            Entry { mode, owner, path }
        })
        .collect()
}

/// `gzip -dc FILE`, checking first that it is gzip without a name or a
/// timestamp in its header (gzip -n: reproducible, as lintian wants).
fn gunzip(path: &Path) -> Vec<u8> {
    let mut head = [0u8; 10];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(head[..2], [0x1f, 0x8b], "{} is not gzip", path.display());
    assert_eq!(head[3] & 0x08, 0, "{} has a file name", path.display());
    assert_eq!(head[4..8], [0; 4], "{} has a timestamp", path.display());
    let scratch = TempDir::new();
    let out = run(
        Command::new("gzip").arg("-dc").arg(path),
        &scratch,
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "gzip -dc {}", path.display());
    out.stdout
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let entries = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for e in entries {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Lintian's verdict on `deb`: fails on any error, prints the rest.
/// Nothing if lintian is not installed (and not required).
fn lintian(deb: &Path) {
    let Some(lintian) = require_tool("lintian") else {
        return;
    };
    let scratch = TempDir::new();
    let out = run(
        Command::new(lintian)
            .args(["--display-info", "--pedantic"])
            .arg(deb),
        &scratch,
        TOOL_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit status 2 is lintian failing to run, not a finding.
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "lintian {}: {}\n{text}{stderr}",
        deb.display(),
        out.status
    );
    for line in text.lines() {
        eprintln!("lintian: {line}");
    }
    let errors: Vec<&str> =
        text.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
}

#[test]
fn deb_installs_into_a_throwaway_root() {
    if require_tool("dpkg-deb").is_none() {
        return;
    }
    let out_dir = TempDir::new();
    let deb = build_deb(out_dir.path(), None);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        deb.file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| n.starts_with(&format!("fcgi-launch_{version}-"))),
        "{}: not named for version {version}",
        deb.display()
    );

    // Control fields.
    let fields = control_fields(&deb);
    let get = |name: &str| {
        field(&fields, name)
            .unwrap_or_else(|| panic!("no {name} field in {fields:?}"))
    };
    assert_eq!(get("Package"), "fcgi-launch");
    assert!(get("Version").starts_with(&format!("{version}-")));
    let arch = run_ok(
        Command::new("dpkg").arg("--print-architecture"),
        TOOL_TIMEOUT,
    );
    assert_eq!(get("Architecture"), arch.trim());
    assert!(get("Maintainer").contains('@'), "{}", get("Maintainer"));
    assert_eq!(get("Section"), "httpd");
    assert_eq!(get("Priority"), "optional");
    assert!(get("Installed-Size").parse::<u64>().is_ok_and(|n| n > 100));
    assert!(
        get("Depends").contains("libc6 (>= "),
        "Depends: {}",
        get("Depends")
    );
    let description = get("Description");
    let (synopsis, long) = description.split_once('\n').unwrap_or_default();
    assert!(
        !synopsis.is_empty() && synopsis.len() < 80,
        "synopsis {synopsis:?}"
    );
    assert!(long.lines().count() >= 3, "short description:\n{long}");
    assert!(field(&fields, "Built-Using").is_none());

    // Members: owners, modes, and the files that must be there.
    let entries = contents(&deb);
    for e in &entries {
        assert_eq!(e.owner, "root/root", "owner of {}", e.path);
        let ok = if e.mode.starts_with('d') {
            e.mode == "drwxr-xr-x"
        } else {
            e.mode == "-rw-r--r--" || e.mode == "-rwxr-xr-x"
        };
        assert!(ok, "mode {} of {}", e.mode, e.path);
    }
    let mode_of = |path: &str| {
        entries
            .iter()
            .find(|e| e.path == path)
            .map(|e| e.mode.as_str())
            .unwrap_or_else(|| panic!("{path} is not in {}", deb.display()))
    };
    let doc = "usr/share/doc/fcgi-launch";
    assert_eq!(mode_of("usr/bin/fcgi-launch"), "-rwxr-xr-x");
    for f in [
        "usr/share/man/man1/fcgi-launch.1.gz",
        "usr/lib/systemd/system/fcgi-launch@.socket",
        "usr/lib/systemd/system/fcgi-launch@.service",
        &format!("{doc}/copyright"),
        &format!("{doc}/changelog.Debian.gz"),
        &format!("{doc}/examples/example.conf"),
        "usr/share/lintian/overrides/fcgi-launch",
    ] {
        assert_eq!(mode_of(f), "-rw-r--r--", "{f}");
    }
    assert_eq!(mode_of(&format!("{doc}/examples/app.cgi")), "-rwxr-xr-x");
    assert_eq!(mode_of("etc/fcgi-launch/"), "drwxr-xr-x");

    // Unpacked: the files themselves.
    let root = TempDir::new();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(root.path()),
        TOOL_TIMEOUT,
    );
    let r = root.path();
    let ver = run_ok(
        Command::new(r.join("usr/bin/fcgi-launch")).arg("--version"),
        TOOL_TIMEOUT,
    );
    assert_eq!(ver.trim(), format!("fcgi-launch {version}"));
    if let Some(file) = which("file") {
        let what = run_ok(
            Command::new(file).arg(r.join("usr/bin/fcgi-launch")),
            TOOL_TIMEOUT,
        );
        assert!(what.contains(", stripped"), "not stripped: {what}");
    }
    let man = r.join("usr/share/man/man1/fcgi-launch.1.gz");
    assert_eq!(
        gunzip(&man),
        read(&top().join("man/fcgi-launch.1")),
        "the packaged man page is not man/fcgi-launch.1"
    );
    check_man_renders(&r.join("usr/share/man"));
    for unit in ["fcgi-launch@.socket", "fcgi-launch@.service"] {
        assert_eq!(
            read(&r.join("usr/lib/systemd/system").join(unit)),
            read(&top().join("packaging/systemd").join(unit)),
            "{unit}"
        );
    }
    let docdir = r.join(doc);
    let copyright = String::from_utf8(read(&docdir.join("copyright")))
        .expect("copyright is UTF-8");
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/\
         copyright-format/1.0/\n"
    ));
    assert!(copyright.contains("\nLicense: MIT\n"));
    // The license text is LICENSE's, word for word (" ." lines are the
    // paragraph breaks of the copyright format).
    let license = String::from_utf8(read(&top().join("LICENSE")))
        .expect("LICENSE is UTF-8");
    let grant = |text: &str| {
        let from = text
            .find("Permission is hereby granted")
            .unwrap_or_else(|| panic!("no MIT grant in:\n{text}"));
        text[from..]
            .lines()
            .filter(|l| l.trim() != ".")
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(grant(&copyright), grant(&license), "copyright vs LICENSE");
    let changelog = gunzip(&docdir.join("changelog.Debian.gz"));
    let changelog = String::from_utf8_lossy(&changelog);
    assert!(
        changelog.starts_with(&format!("fcgi-launch ({})", get("Version"))),
        "changelog.Debian does not start with this version:\n{changelog}"
    );
    let examples = top().join("packaging/examples");
    for rel in files_under(&examples) {
        assert_eq!(
            read(&docdir.join("examples").join(&rel)),
            read(&examples.join(&rel)),
            "example {}",
            rel.display()
        );
    }

    // The control archive: md5sums covers exactly the files, and holds.
    let control = TempDir::new();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(control.path()),
        TOOL_TIMEOUT,
    );
    let md5sums = String::from_utf8(read(&control.join("md5sums")))
        .expect("md5sums is UTF-8");
    let listed: BTreeSet<PathBuf> = md5sums
        .lines()
        .map(|l| PathBuf::from(l.split_once("  ").expect("md5sums line").1))
        .collect();
    assert_eq!(listed, files_under(r), "md5sums lists other files");
    run_ok(
        Command::new("md5sum")
            .args(["--quiet", "--strict", "-c"])
            .arg(control.join("md5sums"))
            .current_dir(r),
        TOOL_TIMEOUT,
    );
    for script in ["postinst", "postrm"] {
        let p = control.join(script);
        let mode = fs::metadata(&p).expect(script).permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{script} mode");
        run_ok(Command::new("sh").arg("-n").arg(&p), TOOL_TIMEOUT);
    }

    install_into_throwaway_root(&deb, version);
    lintian(&deb);
}

/// `man fcgi-launch` with the unpacked tree as the only manual path (or
/// mandoc, where man-db is not installed) gives the page, as text.
fn check_man_renders(manpath: &Path) {
    let scratch = TempDir::new();
    let out = if let Some(man) = which("man") {
        let mut cmd = Command::new(man);
        cmd.arg("-M").arg(manpath).arg("fcgi-launch");
        cmd.env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat");
        run(&mut cmd, &scratch, TOOL_TIMEOUT)
    } else if let Some(mandoc) = require_tool("mandoc") {
        let mut cmd = Command::new(mandoc);
        cmd.arg("-Tascii")
            .arg(manpath.join("man1/fcgi-launch.1.gz"));
        run(&mut cmd, &scratch, TOOL_TIMEOUT)
    } else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("NAME")
            && text.contains("SYNOPSIS")
            && text.contains("fcgi-launch"),
        "man page did not render: {}\n{}\n{}",
        out.status,
        show(&out.stdout, 600),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of `name` on PATH, without skipping or failing: for tools
/// that have a fallback.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// dpkg installs the package into an empty root and purges it again:
/// its own database under the root, maintainer scripts run from the host
/// with DPKG_ROOT set (they then leave systemd alone), the dependencies
/// (libc6, ...) absent from that database by construction.
fn install_into_throwaway_root(deb: &Path, version: &str) {
    if require_tool("dpkg").is_none() {
        return;
    }
    let root = TempDir::new();
    let r = root.path();
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        fs::create_dir_all(r.join(d)).expect("dpkg skeleton");
    }
    File::create(r.join("var/lib/dpkg/status")).expect("dpkg status");
    let dpkg = |args: &[&str]| {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", r.display()))
            .args([
                "--force-not-root",
                "--force-script-chrootless",
                "--log=/dev/null",
            ])
            .args(args)
            // dpkg looks for ldconfig and start-stop-daemon on PATH.
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        cmd
    };
    run_ok(dpkg(&["--force-depends", "-i"]).arg(deb), TOOL_TIMEOUT);
    let status = run_ok(&mut dpkg(&["-s", "fcgi-launch"]), TOOL_TIMEOUT);
    assert!(
        status.contains("Status: install ok installed"),
        "dpkg -s after install:\n{status}"
    );
    let ver = run_ok(
        Command::new(r.join("usr/bin/fcgi-launch")).arg("--version"),
        TOOL_TIMEOUT,
    );
    assert_eq!(ver.trim(), format!("fcgi-launch {version}"));
    run_ok(&mut dpkg(&["--purge", "fcgi-launch"]), TOOL_TIMEOUT);
    assert!(
        !r.join("usr/bin/fcgi-launch").exists(),
        "purge left the binary"
    );
    assert!(!r.join("etc/fcgi-launch").exists(), "purge left /etc");
}

#[test]
fn static_binary_is_static_and_serves_cgi_and_fastcgi() {
    // The command this test runs is the one packaging/README.md gives.
    let readme = String::from_utf8(read(&top().join("packaging/README.md")))
        .expect("README is UTF-8");
    let documented = format!(
        "RUSTFLAGS='{STATIC_RUSTFLAGS}' cargo build --release --target"
    );
    assert!(
        readme.contains(&documented),
        "packaging/README.md no longer says {documented:?}"
    );

    let bin = static_binary();
    let ldd = {
        let scratch = TempDir::new();
        let out = run(Command::new("ldd").arg(bin), &scratch, TOOL_TIMEOUT);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    eprintln!("ldd {}: {}", bin.display(), ldd.trim());
    assert!(
        ldd.contains("statically linked")
            || ldd.contains("not a dynamic executable"),
        "ldd says it is dynamic:\n{ldd}"
    );
    if let Some(file) = which("file") {
        let what = run_ok(Command::new(file).arg(bin), TOOL_TIMEOUT);
        eprintln!("{}", what.trim());
        assert!(what.contains("static"), "file says: {what}");
    }

    // CGI: one request from the environment.
    let scratch = TempDir::new();
    let out = run(
        Command::new(bin)
            .arg("--builtin")
            .arg("hello")
            .env_clear()
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", "GET")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("SCRIPT_NAME", "/hello"),
        &scratch,
        TOOL_TIMEOUT,
    );
    assert!(
        out.status.success() && out.stdout == HELLO,
        "as CGI: {}, stdout {}, stderr {}",
        out.status,
        show(&out.stdout, 300),
        String::from_utf8_lossy(&out.stderr)
    );

    // FastCGI on a unix socket: this suite's own client, then --connect.
    let dir = TempDir::new();
    let sock = dir.join("s");
    let bind = format!("unix:{}", sock.display());
    let srv = Server::spawn(dir, bin, |c| {
        c.arg("--bind").arg(&bind).args(["--builtin", "hello"]);
    });
    wait_for_socket(&srv, &sock);
    let stream = Stream::connect(&Addr::Unix(sock.clone()))
        .unwrap_or_else(|e| srv.fail(&format!("connect: {e}")));
    let mut conn = Conn::new(stream, Some(srv.info().clone()));
    let r = conn.request_ok(1, &[("REQUEST_METHOD", "GET")], b"");
    if r.stdout != HELLO {
        srv.fail(&format!("FastCGI stdout {}", show(&r.stdout, 300)));
    }
    check_connect(bin, &bind);

    // FastCGI on TCP, by IP address (see packaging/README.md on names).
    let srv = tcp_server(bin);
    let (_, addr) = &srv;
    check_connect(bin, addr);
}

/// Waits until `srv` accepts on `sock`; fails if it exits first.
fn wait_for_socket(srv: &Server, sock: &Path) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if UnixStream::connect(sock).is_ok() {
            return;
        }
        if srv.try_status().is_some() || Instant::now() > deadline {
            srv.fail(&format!("no server on {}", sock.display()));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `bin --bind tcp:127.0.0.1:PORT --builtin hello` on a free port, and
/// its address; retries if the port was taken meanwhile.
fn tcp_server(bin: &Path) -> (Server, String) {
    for _ in 0..4 {
        let addr = format!("tcp:127.0.0.1:{}", free_port());
        let srv = Server::spawn(TempDir::new(), bin, |c| {
            c.arg("--bind").arg(&addr).args(["--builtin", "hello"]);
        });
        let port = addr.rsplit(':').next().unwrap().to_string();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline && srv.try_status().is_none() {
            let target = format!("127.0.0.1:{port}");
            if std::net::TcpStream::connect(&target).is_ok() {
                return (srv, addr);
            }
            thread::sleep(Duration::from_millis(20));
        }
        if srv.try_status().is_none() {
            srv.fail("not accepting on TCP");
        }
    }
    panic!("no free TCP port in four tries");
}

/// `bin --connect ADDR --request 'GET /'` prints the hello response and
/// exits 0.
fn check_connect(bin: &Path, addr: &str) {
    let scratch = TempDir::new();
    let out = run(
        Command::new(bin).args(["--connect", addr, "--request", "GET /"]),
        &scratch,
        TOOL_TIMEOUT,
    );
    assert!(
        out.status.success() && out.stdout == HELLO,
        "--connect {addr}: {}, stdout {}, stderr {}",
        out.status,
        show(&out.stdout, 300),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn static_deb_names_its_glibc_and_passes_lintian() {
    if require_tool("dpkg-deb").is_none() {
        return;
    }
    if require_tool("dpkg-query").is_none() {
        return;
    }
    let out_dir = TempDir::new();
    let deb = build_deb(out_dir.path(), Some(static_binary()));
    let fields = control_fields(&deb);
    assert!(
        field(&fields, "Depends").is_none(),
        "a static binary depends on nothing: {fields:?}"
    );
    let built_using = field(&fields, "Built-Using").unwrap_or_default();
    assert!(
        built_using.starts_with("glibc (= "),
        "Built-Using: {built_using:?}"
    );
    let root = TempDir::new();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(root.path()),
        TOOL_TIMEOUT,
    );
    let overrides = String::from_utf8(read(
        &root.join("usr/share/lintian/overrides/fcgi-launch"),
    ))
    .expect("overrides are UTF-8");
    assert!(
        overrides.contains("shared-library-lacks-prerequisites"),
        "no static overrides:\n{overrides}"
    );
    lintian(&deb);
}
