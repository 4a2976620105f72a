//! Who may use slotgate: the `default` user and its password (`requirepass`), and the answers
//! Redis 7 gives to `AUTH` and `HELLO ... AUTH` for them. Proxy users with ACL rules extend
//! this module.
//!
//! Decisions are pure functions of the configuration and the credentials a client sent.
//! A password is compared in constant time (as SHA-256 digests, as Redis does) and must never
//! reach a log line, an error or a `Debug` print.

use ring::digest::{SHA256, digest};

use crate::backend::Secret;

/// `-NOAUTH` for a command sent before authenticating.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// `-NOAUTH` for a `HELLO` without `AUTH` before authenticating.
pub const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// `AUTH <password>` when the `default` user has no password.
pub const NO_PASSWORD_SET: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// The users clients log in as. Today: `default`, with or without a password.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// SHA-256 of the `default` user's password; `None`: `nopass`, every client is logged in.
    default_password: Option<[u8; 32]>,
}

/// Why a login was refused: the error Redis gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    WrongPass,
    /// `AUTH <password>` with no password set.
    NoPasswordSet,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::WrongPass => WRONGPASS,
            Refusal::NoPasswordSet => NO_PASSWORD_SET,
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Equal digests, in time that does not depend on where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Access {
    /// `requirepass`: the `default` user's password, if any.
    pub fn new(requirepass: Option<&Secret>) -> Access {
        Access {
            default_password: requirepass.map(|p| sha256(p.expose().as_bytes())),
        }
    }

    /// Whether a new connection starts logged in (the `default` user has no password).
    pub fn open_by_default(&self) -> bool {
        self.default_password.is_none()
    }

    /// `AUTH <password>`: the `default` user's password.
    pub fn auth_default(&self, password: &[u8]) -> Result<(), Refusal> {
        match &self.default_password {
            None => Err(Refusal::NoPasswordSet),
            Some(want) if same_digest(want, &sha256(password)) => Ok(()),
            Some(_) => Err(Refusal::WrongPass),
        }
    }

    /// `AUTH <user> <password>` and `HELLO ... AUTH <user> <password>`.
    pub fn auth(&self, user: &[u8], password: &[u8]) -> Result<(), Refusal> {
        if user != b"default" {
            return Err(Refusal::WrongPass);
        }
        match &self.default_password {
            None => Ok(()),
            Some(want) if same_digest(want, &sha256(password)) => Ok(()),
            Some(_) => Err(Refusal::WrongPass),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_password_everyone_is_the_default_user() {
        let a = Access::new(None);
        assert!(a.open_by_default());
        assert_eq!(a.auth_default(b"x"), Err(Refusal::NoPasswordSet));
        assert_eq!(a.auth(b"default", b"anything"), Ok(()));
        assert_eq!(a.auth(b"app", b"x"), Err(Refusal::WrongPass));
    }

    #[test]
    fn with_requirepass_only_the_password_logs_in() {
        let a = Access::new(Some(&Secret::new("s3cret")));
        assert!(!a.open_by_default());
        assert_eq!(a.auth_default(b"s3cret"), Ok(()));
        assert_eq!(a.auth_default(b"s3cre"), Err(Refusal::WrongPass));
        assert_eq!(a.auth(b"default", b"s3cret"), Ok(()));
        assert_eq!(a.auth(b"default", b""), Err(Refusal::WrongPass));
        assert_eq!(a.auth(b"app", b"s3cret"), Err(Refusal::WrongPass));
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let printed = format!("{:?}", Access::new(Some(&Secret::new("hunter2"))));
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
