//! `POST /pause` and `POST /resume`: an operator's pause of every client, for a migration's
//! switch (`deploy/migrate.py`). A pause stops every session taking requests
//! ([`crate::frontend::client_pause`]); once each has answered that what it sent is on its
//! way, and every master of the topology in force has answered what it was sent
//! ([`crate::backend::Node::barrier`]), nothing more reaches the masters. The operator then
//! copies what was written last and reloads slotgate onto the new backends; the requests that
//! waited in the clients' sockets are read after the pause ends, under the configuration then in
//! force. Or the operator resumes, and nothing changed.
//!
//! This module decides how long a pause may last, a pure function; it never pauses anything
//! itself.

use std::time::Duration;

/// A pause's limit when the operator names none.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(10);

/// The longest pause: clients wait meanwhile, and their own timeouts run.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Why a pause was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseRefused {
    /// `ms` was not a number of milliseconds above 0.
    #[error("ms must be a number of milliseconds above 0")]
    BadDuration,
}

/// How long the pause lasts at most: `ms` from the query (`?ms=N`), [`DEFAULT_PAUSE`] without
/// one, never more than [`MAX_PAUSE`].
pub fn limit(query: Option<&str>) -> Result<Duration, PauseRefused> {
    let asked = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="));
    match asked {
        None => Ok(DEFAULT_PAUSE),
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms).min(MAX_PAUSE)),
            _ => Err(PauseRefused::BadDuration),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_last_the_default_without_a_duration() {
        assert_eq!(limit(None), Ok(DEFAULT_PAUSE));
        assert_eq!(limit(Some("x=1")), Ok(DEFAULT_PAUSE));
    }

    #[test]
    fn should_last_what_was_asked_up_to_the_most() {
        assert_eq!(limit(Some("ms=1500")), Ok(Duration::from_millis(1500)));
        assert_eq!(limit(Some("a=b&ms=900")), Ok(Duration::from_millis(900)));
        assert_eq!(limit(Some("ms=600000")), Ok(MAX_PAUSE));
    }

    #[test]
    fn should_refuse_a_duration_that_is_not_one() {
        assert_eq!(limit(Some("ms=0")), Err(PauseRefused::BadDuration));
        assert_eq!(limit(Some("ms=-5")), Err(PauseRefused::BadDuration));
        assert_eq!(limit(Some("ms=")), Err(PauseRefused::BadDuration));
    }
}
