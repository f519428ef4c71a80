//! When to log a failure that repeats (`accept` failing on a listener at
//! the fd limit, or on a socket shut down under us): at its start, when
//! the error changes, once a minute while it lasts, and at its end, not
//! once per failed try. Times are passed in, so the rules are tested
//! without waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A success this long after the last failure ends the episode; a
/// success sooner (one fd freed at the fd limit, say) does not, so
/// traffic that keeps brushing the limit is one episode, not one per
/// collision.
pub const QUIET: Duration = Duration::from_secs(10);

/// While failures go on, a reminder this often.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What to log after a try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The first failure, or one with another error than the last.
    Failing(String),
    /// Failures go on (failed tries since the episode began).
    StillFailing {
        error: String,
        tries: u64,
        lasted: Duration,
    },
    /// It works again after `lasted`, `tries` failed tries.
    Over { tries: u64, lasted: Duration },
}

#[derive(Debug)]
struct State {
    since: Instant,
    last_failure: Instant,
    last_report: Instant,
    tries: u64,
    error: String,
}

/// One source of repeated failures (one listener).
#[derive(Debug, Default)]
pub struct Episode {
    /// Set while an episode lasts: a success checks only this.
    active: AtomicBool,
    state: Mutex<Option<State>>,
}

impl Episode {
    /// A try failed with `error` at `now`.
    pub fn failed(&self, now: Instant, error: &str) -> Option<Report> {
        let mut state = self.lock();
        self.active.store(true, Ordering::Relaxed);
        let Some(s) = state.as_mut() else {
            *state = Some(State {
                since: now,
                last_failure: now,
                last_report: now,
                tries: 1,
                error: error.to_string(),
            });
            return Some(Report::Failing(error.to_string()));
        };
        s.tries += 1;
        s.last_failure = now;
        if s.error != error {
            s.error = error.to_string();
            s.last_report = now;
            return Some(Report::Failing(error.to_string()));
        }
        if now.saturating_duration_since(s.last_report) >= REMIND_EVERY {
            s.last_report = now;
            return Some(Report::StillFailing {
                error: s.error.clone(),
                tries: s.tries,
                lasted: now.saturating_duration_since(s.since),
            });
        }
        None
    }

    /// A try succeeded at `now`.
    pub fn succeeded(&self, now: Instant) -> Option<Report> {
        if !self.active.load(Ordering::Relaxed) {
            return None;
        }
        let mut state = self.lock();
        let s = state.as_ref()?;
        if now.saturating_duration_since(s.last_failure) < QUIET {
            return None;
        }
        let report = Report::Over {
            tries: s.tries,
            lasted: s.last_failure.saturating_duration_since(s.since),
        };
        *state = None;
        self.active.store(false, Ordering::Relaxed);
        Some(report)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<State>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step of a table: at `ms`, a failure with that error (None: a
    /// success), and the report wanted.
    type Step = (u64, Option<&'static str>, Option<Report>);

    fn run(steps: &[Step]) {
        let e = Episode::default();
        let t0 = Instant::now();
        for (i, (ms, error, want)) in steps.iter().enumerate() {
            let now = t0 + Duration::from_millis(*ms);
            let got = match error {
                Some(error) => e.failed(now, error),
                None => e.succeeded(now),
            };
            assert_eq!(&got, want, "step {i} at {ms} ms");
        }
    }

    fn failing(e: &str) -> Option<Report> {
        Some(Report::Failing(e.to_string()))
    }

    #[test]
    fn logs_the_start_not_each_try_and_the_end_after_quiet_seconds() {
        run(&[
            (0, None, None),
            (1000, Some("EMFILE"), failing("EMFILE")),
            (1100, Some("EMFILE"), None),
            (1200, Some("EMFILE"), None),
            // One fd freed: a success amid failures is not the end, nor
            // is one after each collision at the limit, every 1.25 s.
            (1300, None, None),
            (1400, Some("EMFILE"), None),
            (2650, None, None),
            (2700, Some("EMFILE"), None),
            (12_000, None, None),
            (
                12_800,
                None,
                Some(Report::Over {
                    tries: 5,
                    lasted: Duration::from_millis(1700),
                }),
            ),
            (12_900, None, None),
            (13_000, Some("EMFILE"), failing("EMFILE")),
        ]);
    }

    #[test]
    fn another_error_and_a_long_episode_are_reported() {
        run(&[
            (0, Some("EMFILE"), failing("EMFILE")),
            (100, Some("EINVAL"), failing("EINVAL")),
            (59000, Some("EINVAL"), None),
            (
                60100,
                Some("EINVAL"),
                Some(Report::StillFailing {
                    error: "EINVAL".to_string(),
                    tries: 4,
                    lasted: Duration::from_millis(60_100),
                }),
            ),
            (61000, Some("EINVAL"), None),
            (
                120100,
                Some("EINVAL"),
                Some(Report::StillFailing {
                    error: "EINVAL".to_string(),
                    tries: 6,
                    lasted: Duration::from_millis(120_100),
                }),
            ),
        ]);
    }
}
