//! `POST /pause` and `POST /resume`: an operator's hold on every master, for a migration's last
//! step (`deploy/migrate.py`). A pause stops slotgate sending to the masters of the topology in
//! force ([`crate::backend::Node::pause`]): requests wait in the sessions' failover hold, and once
//! every request sent before the pause has been answered ([`crate::backend::Node::barrier`]) the
//! masters receive nothing more from slotgate. The operator then copies what was written last
//! and reloads slotgate onto the new backends, which releases what waits; or resumes.
//!
//! This module decides how long a pause may last, a pure function; it never pauses anything
//! itself, and a pause never outlasts the sessions' failover hold (a request held longer
//! would fail anyway).

use std::time::Duration;

/// Why a pause was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseRefused {
    /// Without a failover hold a paused master's requests would fail at once.
    #[error("a pause needs clients.failover_hold_ms: without it requests to a paused master fail")]
    NoHold,
    /// `ms` was not a number of milliseconds above 0.
    #[error("ms must be a number of milliseconds above 0")]
    BadDuration,
}

/// How long the pause lasts at most: `ms` from the query (`?ms=N`), by default and at most the
/// sessions' failover hold.
pub fn limit(query: Option<&str>, hold: Option<Duration>) -> Result<Duration, PauseRefused> {
    let hold = hold.filter(|h| !h.is_zero()).ok_or(PauseRefused::NoHold)?;
    let asked = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="));
    match asked {
        None => Ok(hold),
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms).min(hold)),
            _ => Err(PauseRefused::BadDuration),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Option<Duration> = Some(Duration::from_secs(20));

    #[test]
    fn should_last_the_failover_hold_by_default() {
        assert_eq!(limit(None, HOLD), Ok(Duration::from_secs(20)));
        assert_eq!(limit(Some("x=1"), HOLD), Ok(Duration::from_secs(20)));
    }

    #[test]
    fn should_last_what_was_asked_within_the_hold() {
        assert_eq!(
            limit(Some("ms=1500"), HOLD),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            limit(Some("a=b&ms=900"), HOLD),
            Ok(Duration::from_millis(900))
        );
        assert_eq!(limit(Some("ms=60000"), HOLD), Ok(Duration::from_secs(20)));
    }

    #[test]
    fn should_refuse_a_duration_that_is_not_one() {
        assert_eq!(limit(Some("ms=0"), HOLD), Err(PauseRefused::BadDuration));
        assert_eq!(limit(Some("ms=-5"), HOLD), Err(PauseRefused::BadDuration));
        assert_eq!(limit(Some("ms="), HOLD), Err(PauseRefused::BadDuration));
    }

    #[test]
    fn should_refuse_without_a_failover_hold() {
        assert_eq!(limit(None, None), Err(PauseRefused::NoHold));
        assert_eq!(
            limit(Some("ms=100"), Some(Duration::ZERO)),
            Err(PauseRefused::NoHold)
        );
    }
}
