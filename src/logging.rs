//! The log format: every line names the program and pid, so it can be
//! found in a web server's shared error log
//! (`fcgi-launch[1234]: warn: ...`). Warnings by default; `-v` adds a
//! line per request, `-vv` debugging; `RUST_LOG` overrides both.

use std::io::Write;

/// The level for a verbosity (-v count minus -q count).
fn level(verbosity: i32) -> log::LevelFilter {
    match verbosity {
        i32::MIN..=-1 => log::LevelFilter::Error,
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Installs the logger; does nothing if the program installed its own.
pub fn init(verbosity: i32) {
    let pid = std::process::id();
    let _ = env_logger::Builder::new()
        .filter_level(level(verbosity))
        .parse_default_env()
        .format(move |buf, rec| {
            let level = rec.level().as_str().to_ascii_lowercase();
            writeln!(buf, "fcgi-launch[{pid}]: {level}: {}", rec.args())
        })
        .try_init();
}
