//! The man page matches the binary (STYLE rule 14): every option that
//! `--help` lists is documented in `man/fcgi-launch.1`, the page documents
//! no option the binary lacks, and the page passes `mandoc -Tlint`.
//!
//! Self-contained on purpose (std only, no `util`): it reads the page and
//! runs the binary and mandoc, nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

const MAN_PAGE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/man/fcgi-launch.1");

/// An option as `--help` lists it: `-b, --bind ADDR` is
/// `(Some('b'), "bind")`.
type Opt = (Option<char>, String);

fn man_page() -> String {
    std::fs::read_to_string(MAN_PAGE)
        .unwrap_or_else(|e| panic!("reading {MAN_PAGE}: {e}"))
}

fn help_text() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fcgi-launch"))
        .arg("--help")
        .output()
        .expect("running fcgi-launch --help");
    assert!(
        out.status.success(),
        "fcgi-launch --help: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("--help is UTF-8")
}

/// The options of the getopts table, from the option column of `--help`
/// (lines that start with `-` once indented; the description column is
/// not looked at, so an option merely mentioned there is not counted).
fn help_options(help: &str) -> Vec<Opt> {
    let mut opts = Vec::new();
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let (short, long) = match first.strip_suffix(',') {
            Some(s) => (s, words.next().unwrap_or_default()),
            None => ("", first),
        };
        let short = short.strip_prefix('-').and_then(|s| {
            let mut c = s.chars();
            match (c.next(), c.next()) {
                (Some(ch), None) if ch.is_ascii_alphanumeric() => Some(ch),
                _ => None,
            }
        });
        let long = long.strip_prefix("--").unwrap_or_else(|| {
            panic!("--help line without a long option: {line:?}")
        });
        assert!(
            !long.is_empty()
                && long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "unexpected long option {long:?} in --help line {line:?}"
        );
        opts.push((short, long.to_string()));
    }
    opts
}

/// The `.It` lines of the OPTIONS section, with mdoc's `\-` turned into
/// `-`.
fn option_items(page: &str) -> Vec<String> {
    let mut in_options = false;
    let mut items = Vec::new();
    for line in page.lines() {
        if let Some(name) = line.strip_prefix(".Sh ") {
            in_options = name.trim() == "OPTIONS";
            continue;
        }
        if in_options {
            if let Some(rest) = line.strip_prefix(".It ") {
                items.push(rest.replace("\\-", "-"));
            }
        }
    }
    items
}

/// The option names an `.It` line gives with `Fl`: `Fl b , Fl -bind Ar
/// ADDR` gives `["b", "-bind"]`.
fn fl_args(item: &str) -> Vec<String> {
    let words: Vec<&str> = item.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "Fl")
        .map(|w| w[1].to_string())
        .collect()
}

#[test]
fn every_option_of_help_is_in_the_man_page() {
    let help = help_text();
    let opts = help_options(&help);
    assert!(
        opts.len() >= 20 && opts.iter().any(|(_, l)| l == "bind"),
        "found too few options in --help ({opts:?}); has its layout \
         changed?\n{help}"
    );
    let page = man_page();
    let items = option_items(&page);
    assert!(
        !items.is_empty(),
        "{MAN_PAGE}: no .It lines under .Sh OPTIONS"
    );
    let mut missing = Vec::new();
    for (short, long) in &opts {
        let long_fl = format!("-{long}");
        let documented = items.iter().any(|item| {
            let fl = fl_args(item);
            fl.contains(&long_fl)
                && short.map_or(true, |s| fl.contains(&s.to_string()))
        });
        if !documented {
            missing.push(match short {
                Some(s) => format!("-{s}, --{long}"),
                None => format!("--{long}"),
            });
        }
        // The plain text of the page names it too (what a reader greps).
        assert!(
            page.contains(&format!("\\-{}", long.replace('-', "\\-")))
                || page.contains(&format!("-{long}")),
            "{MAN_PAGE} never mentions --{long}"
        );
    }
    assert!(
        missing.is_empty(),
        "{MAN_PAGE}: these options of --help have no `.It Fl ...` entry \
         (with both their short and long forms) under OPTIONS: {missing:?}"
    );
}

#[test]
fn man_page_documents_no_option_the_binary_lacks() {
    let opts = help_options(&help_text());
    let known = |name: &str| match name.strip_prefix('-') {
        Some(long) => opts.iter().any(|(_, l)| l == long),
        None => {
            let mut c = name.chars();
            match (c.next(), c.next()) {
                (Some(ch), None) => opts.iter().any(|(s, _)| *s == Some(ch)),
                _ => false,
            }
        }
    };
    let unknown: Vec<String> = option_items(&man_page())
        .iter()
        .flat_map(|item| fl_args(item))
        .filter(|name| !known(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "{MAN_PAGE} documents options that --help does not list: {unknown:?}"
    );
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// mandoc's `-Tlint` also checks every `.Xr` against the manuals
/// installed on this machine; whether `nginx(8)` is installed or
/// `makewhatis` was run says nothing about the page.
fn host_dependent(line: &str) -> bool {
    line.contains("referenced manual not found")
        || line.contains("outdated mandoc.db")
}

#[test]
fn man_page_passes_mandoc_lint() {
    let Some(mandoc) = on_path("mandoc") else {
        if std::env::var_os("FCGI_LAUNCH_REQUIRE_PEERS").is_some() {
            panic!(
                "mandoc is required (FCGI_LAUNCH_REQUIRE_PEERS is set) but \
                 is not on PATH; install it (apt-get install mandoc)"
            );
        }
        eprintln!(
            "skipping man_page_passes_mandoc_lint: mandoc is not on PATH"
        );
        return;
    };
    let out = Command::new(&mandoc)
        .arg("-Tlint")
        .arg(Path::new(MAN_PAGE))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", mandoc.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (ignored, problems): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| host_dependent(l));
    assert!(
        problems.is_empty(),
        "mandoc -Tlint {MAN_PAGE}:\n{}",
        problems.join("\n")
    );
    for line in &ignored {
        eprintln!("ignored (depends on the installed manuals): {line}");
    }
    // Status 1 is mandoc's "style messages only"; allowed only when the
    // messages were the host-dependent ones above.
    assert!(
        out.status.success()
            || (out.status.code() == Some(1) && !ignored.is_empty()),
        "mandoc -Tlint {MAN_PAGE}: {}\n{text}",
        out.status
    );
}
