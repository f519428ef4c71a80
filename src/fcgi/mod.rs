//! FastCGI 1.0 (the specification by Mark R. Brown, Open Market, 1996):
//! the pure record and name-value codecs (`record`, `params`, spec §3)
//! and the per-connection state machine (`conn`, spec §4-§6).
//!
//! Scope: the Responder role only. Other roles are refused with
//! `FCGI_UNKNOWN_ROLE`, concurrent requests on one connection with
//! `FCGI_CANT_MPX_CONN` (we report `FCGI_MPXS_CONNS=0`).

pub mod conn;
pub mod params;
pub mod record;
mod spares;

pub(crate) use spares::release as release_spares;
#[cfg(test)]
mod test_rng;
