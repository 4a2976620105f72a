//! How slotgate reaches a Redis server: the transport it opens and the credentials it presents
//! (`AUTH [user] password`). Data connections (`backend::connection`) and control connections
//! (`topology::control`: discovery, `ROLE`, `INFO` polls, Sentinels) all open through a
//! [`Connector`], so they never disagree on how to reach or log in to a node.
//!
//! A password lives in a [`Secret`]: this module must never let it reach a log line, a `Debug`
//! print, INFO or `/topology`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::stream::{self, BackendStream};
use crate::protocol::encode;

/// A password. Its `Debug` is `"***"`; only [`Secret::expose`] gives the text, to write it
/// into an `AUTH` frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(text: &str) -> Secret {
        Secret(Arc::from(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// What slotgate logs in to a server with: Redis' `AUTH [username] password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// An ACL user; `None` authenticates the `default` user (`requirepass`).
    pub user: Option<String>,
    pub password: Secret,
}

impl Credentials {
    /// `AUTH [user] password` as one RESP frame.
    pub fn auth_frame(&self) -> Bytes {
        let mut b = BytesMut::new();
        encode::array_header(&mut b, if self.user.is_some() { 3 } else { 2 });
        encode::bulk(&mut b, b"AUTH");
        if let Some(u) = &self.user {
            encode::bulk(&mut b, u.as_bytes());
        }
        encode::bulk(&mut b, self.password.expose().as_bytes());
        b.freeze()
    }
}

/// Opens connections to servers of one kind (the data nodes, or the Sentinels).
#[derive(Debug, Clone)]
pub struct Connector {
    credentials: Option<Credentials>,
    connect_timeout: Duration,
}

impl Connector {
    pub fn new(credentials: Option<Credentials>, connect_timeout: Duration) -> Connector {
        Connector {
            credentials,
            connect_timeout,
        }
    }

    /// Opens the transport to `addr` (`host:port`) within the connect timeout. The caller
    /// sends [`Self::auth_frame`] before anything else.
    pub async fn connect(&self, addr: &str) -> io::Result<BackendStream> {
        stream::connect(addr, self.connect_timeout).await
    }

    /// The `AUTH` to send first on every connection, when credentials are set.
    pub fn auth_frame(&self) -> Option<Bytes> {
        self.credentials.as_ref().map(Credentials::auth_frame)
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new(None, Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let c = Credentials {
            user: Some("app".into()),
            password: Secret::new("hunter2"),
        };
        let printed = format!(
            "{:?} {:?}",
            c,
            Connector::new(Some(c.clone()), Duration::ZERO)
        );
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("app"), "{printed}");
    }

    #[test]
    fn auth_names_the_user_only_when_there_is_one() {
        let with_user = Credentials {
            user: Some("app".into()),
            password: Secret::new("pw"),
        };
        assert_eq!(
            &with_user.auth_frame()[..],
            b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n"
        );
        let default_user = Credentials {
            user: None,
            password: Secret::new("pw"),
        };
        assert_eq!(
            &default_user.auth_frame()[..],
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"
        );
    }
}
