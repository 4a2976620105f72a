//! How slotgate reaches a Redis server: the transport it opens for a [`NodeAddr`] (TCP, TLS over
//! TCP with a CA bundle, the server name checked, an optional client certificate, or a Unix
//! socket) and the credentials it presents
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
use rustls::pki_types::ServerName;

use super::address::{Endpoint, NodeAddr};
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

/// TLS towards servers: the rustls configuration and, when set, the name their certificate
/// must carry (`--backend-sni`) instead of the host slotgate connects to.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Opens connections to servers of one kind (the data nodes, or the Sentinels).
#[derive(Debug, Clone)]
pub struct Connector {
    credentials: Option<Credentials>,
    connect_timeout: Duration,
    tls: Option<ClientTls>,
}

impl Connector {
    pub fn new(credentials: Option<Credentials>, connect_timeout: Duration) -> Connector {
        Connector {
            credentials,
            connect_timeout,
            tls: None,
        }
    }

    /// The same, over TLS.
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Connector {
        self.tls = tls;
        self
    }

    /// The same transport with other credentials (the Sentinels' own password).
    pub fn with_credentials(&self, credentials: Option<Credentials>) -> Connector {
        Connector {
            credentials,
            ..self.clone()
        }
    }

    /// Whether connections are TLS: in a cluster with `tls-cluster yes`, nodes are then
    /// reached at the TLS ports they announce.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens the transport to `addr` within the connect timeout, the TLS handshake included.
    /// A Unix socket is never TLS (Redis serves TLS on TCP ports only). The caller sends
    /// [`Self::auth_frame`] before anything else.
    pub async fn connect(&self, addr: &NodeAddr) -> io::Result<BackendStream> {
        let open = async {
            let host = match addr.endpoint() {
                Endpoint::Unix(path) => {
                    return Ok(BackendStream::Unix(stream::connect_unix(path).await?));
                }
                Endpoint::Tcp { host, .. } => host,
            };
            let tcp = stream::connect_tcp(addr, self.connect_timeout).await?;
            let Some(tls) = &self.tls else {
                if crate::uring::enabled() {
                    return crate::uring::UringTcp::from_tokio(tcp).map(BackendStream::Uring);
                }
                return Ok(BackendStream::Tcp(tcp));
            };
            let host = match &tls.server_name {
                Some(name) => name.as_str(),
                None => host,
            };
            let name = ServerName::try_from(host.to_string()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("server name {host}: {e}"),
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(name, tcp)
                .await?;
            Ok(BackendStream::Tls(Box::new(stream)))
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
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
