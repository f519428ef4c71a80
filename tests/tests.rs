//! Integration tests for the `fcgi-launch` binary.
//!
//! One test crate: every module lives in `tests/it/` and is listed here
//! with a `#[path]` line (cargo would build a top-level `tests/*.rs` file
//! as a crate of its own).  To add a module, put `tests/it/NAME.rs` next
//! to the others and add two lines below.

#[path = "it/util.rs"]
mod util;

#[path = "it/fastcgi_mode.rs"]
mod fastcgi_mode;

#[path = "it/activation.rs"]
mod activation;

#[path = "it/cgi_program.rs"]
mod cgi_program;

#[path = "it/cgi_mode.rs"]
mod cgi_mode;

#[path = "it/manpage.rs"]
mod manpage;

#[path = "it/realserver.rs"]
mod realserver;

#[path = "it/deploy_nginx.rs"]
mod deploy_nginx;

#[path = "it/deploy_apache.rs"]
mod deploy_apache;

#[path = "it/deploy_lighttpd.rs"]
mod deploy_lighttpd;

#[path = "it/deploy_daemons.rs"]
mod deploy_daemons;

#[path = "it/packages.rs"]
mod packages;
