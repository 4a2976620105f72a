//! TLS settings built from PEM files: the server side slotgate presents to its clients (a
//! certificate that can be replaced while running, optionally a CA that client certificates must
//! chain to), and the client side it uses towards Redis nodes (a CA bundle, an optional client
//! certificate). rustls with the ring provider (aws-lc-rs with the `aws-lc` feature, for
//! benchmarks), TLS 1.3 and, when allowed, 1.2.
//!
//! This module reads files and builds configurations; it must never touch a socket, and never
//! put key material in an error or a log line (errors name the file and what is wrong with it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

/// The oldest TLS version a side accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    Tls12,
    #[default]
    Tls13,
}

impl MinVersion {
    /// `"1.2"` or `"1.3"`, as the config file writes it.
    pub fn parse(s: &str) -> Option<MinVersion> {
        match s {
            "1.2" => Some(MinVersion::Tls12),
            "1.3" => Some(MinVersion::Tls13),
            _ => None,
        }
    }

    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY_13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => &BOTH,
            MinVersion::Tls13 => &ONLY_13,
        }
    }
}

/// What is wrong with a TLS setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        /// Part of the message, not a `source()`: the chain would print it twice.
        cause: String,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{what}: {cause}")]
    Rejected { what: &'static str, cause: String },
}

/// The certificates of a PEM file (a chain, or a CA bundle).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |cause: String| TlsError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        other => TlsError::Read {
            path: path.to_path_buf(),
            cause: other.to_string(),
        },
    })
}

/// The crypto provider of every TLS configuration: ring, or aws-lc-rs when built with the
/// `aws-lc` feature (for benches/tls.py's comparison only).
fn provider() -> Arc<CryptoProvider> {
    #[cfg(not(feature = "aws-lc"))]
    return Arc::new(rustls::crypto::ring::default_provider());
    #[cfg(feature = "aws-lc")]
    return Arc::new(rustls::crypto::aws_lc_rs::default_provider());
}

/// The files of a client side: whom to trust, and what to present when asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA bundle the server's certificate must chain to.
    pub ca: PathBuf,
    /// A client certificate chain and its key, for servers that ask for one
    /// (`tls-auth-clients yes`).
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    pub min_version: MinVersion,
}

/// The rustls client configuration for `files`, every file read and checked now.
pub fn client_config(files: &ClientFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(&files.ca)? {
        roots.add(cert).map_err(|e| TlsError::Rejected {
            what: "CA certificate",
            cause: e.to_string(),
        })?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(files.min_version.versions())
        .map_err(|e| TlsError::Rejected {
            what: "TLS versions",
            cause: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match &files.cert_and_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| TlsError::Rejected {
                what: "client certificate and key",
                cause: e.to_string(),
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The files of the server side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate that chains to this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    pub min_version: MinVersion,
}

/// The server certificate in use, replaced whole when its files change: handshakes already
/// done keep theirs, new ones get the new one, and nothing in between sees a half-read file.
#[derive(Debug)]
pub struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The files' modification times when `current` was loaded.
    loaded: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

/// What a reload check did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert)?;
    let key = private_key(key)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Rejected {
            what: "private key",
            cause: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Rejected {
        what: "certificate and key",
        cause: e.to_string(),
    })?;
    Ok(certified)
}

impl ServerCert {
    /// Loads the certificate chain and key now.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerCert, TlsError> {
        let stamps = (modified(cert), modified(key));
        Ok(ServerCert {
            current: ArcSwap::from_pointee(certified_key(cert, key)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            loaded: std::sync::Mutex::new(stamps),
        })
    }

    /// Loads the files again if either changed since the last load (`force`: whatever their
    /// times, as on SIGHUP). A broken file leaves the certificate in use as it is.
    pub fn reload(&self, force: bool) -> Result<Reload, TlsError> {
        let stamps = (modified(&self.cert), modified(&self.key));
        let mut loaded = match self.loaded.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !force && *loaded == stamps {
            return Ok(Reload::Unchanged);
        }
        let fresh = certified_key(&self.cert, &self.key);
        // Remember the attempt either way: a broken file is reported once, not every check.
        *loaded = stamps;
        self.current.store(Arc::new(fresh?));
        Ok(Reload::Reloaded)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server configuration: the certificate from `cert` (which can change under it),
/// and client certificates required when `files.client_ca` is set.
pub fn server_config(
    files: &ServerFiles,
    cert: Arc<ServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(files.min_version.versions())
        .map_err(|e| TlsError::Rejected {
            what: "TLS versions",
            cause: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(ca)? {
                roots.add(c).map_err(|e| TlsError::Rejected {
                    what: "client CA certificate",
                    cause: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Rejected {
                    what: "client CA",
                    cause: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_cert_resolver(cert)))
}

/// One DER element: its tag and contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: 1 to 4 length bytes are plenty for a certificate.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (
            bytes.iter().fold(0usize, |l, &b| (l << 8) | usize::from(b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

/// The subject's common name (CN) of a DER certificate, as text: the last CN when there are
/// several, as OpenSSL's `-subject` shows them. `None` when it has none, when the value is not
/// a text string, or when the DER does not parse (never a panic: the bytes come from a peer,
/// although rustls has checked them against the client CA by then).
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQUENCE, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    // version [0] (optional), serialNumber, signature, issuer, validity, subject.
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, mut subject, _) = der_element(rest)? else {
        return None;
    };
    let mut found = None;
    while !subject.is_empty() {
        let (tag, mut set, after) = der_element(subject)?;
        subject = after;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (tag, attribute, after) = der_element(set)?;
            set = after;
            if tag != SEQUENCE {
                return None;
            }
            let (0x06, oid, value) = der_element(attribute)? else {
                return None;
            };
            if oid != OID_CN {
                continue;
            }
            // UTF8String, PrintableString, IA5String; TeletexString read as Latin-1 is not
            // worth guessing at, nor BMPString.
            found = match der_element(value)? {
                (0x0c | 0x13 | 0x16, text, _) => std::str::from_utf8(text).ok().map(str::to_string),
                _ => None,
            };
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_the_config_writes_them() {
        assert_eq!(MinVersion::parse("1.2"), Some(MinVersion::Tls12));
        assert_eq!(MinVersion::parse("1.3"), Some(MinVersion::Tls13));
        assert_eq!(MinVersion::parse("1.1"), None);
        assert_eq!(MinVersion::default(), MinVersion::Tls13);
    }

    #[test]
    fn a_missing_or_empty_file_is_named_in_the_error() {
        let missing = Path::new("/nonexistent/ca.pem");
        let e = certificates(missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("slotgate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(
            certificates(&empty),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(private_key(&empty), Err(TlsError::NoKey { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A DER element of `tag` around `contents` (short or two-byte long form).
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.extend([0x82, (contents.len() >> 8) as u8, contents.len() as u8]);
        }
        out.extend_from_slice(contents);
        out
    }

    /// A certificate-shaped DER with `subject` as its subject name (attribute OID, tag, text).
    fn cert_with_subject(subject: &[(&[u8], u8, &str)], version: bool) -> Vec<u8> {
        let name: Vec<u8> = subject
            .iter()
            .flat_map(|(oid, tag, text)| {
                let attr = [tlv(0x06, oid), tlv(*tag, text.as_bytes())].concat();
                tlv(0x31, &tlv(0x30, &attr))
            })
            .collect();
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(0xa0, &tlv(0x02, &[2])));
        }
        tbs.extend(tlv(0x02, &[1, 2, 3]));
        tbs.extend(tlv(0x30, &tlv(0x06, &[0x2a, 0x86, 0x48])));
        tbs.extend(tlv(0x30, &tlv(0x31, &tlv(0x30, &[]))));
        tbs.extend(tlv(
            0x30,
            &[tlv(0x17, b"260101000000Z"), tlv(0x17, b"270101000000Z")].concat(),
        ));
        tbs.extend(tlv(0x30, &name));
        // A long public key, so that lengths take the long form.
        tbs.extend(tlv(0x30, &[0u8; 300]));
        tlv(
            0x30,
            &[tlv(0x30, &tbs), tlv(0x30, &[]), tlv(0x03, &[0])].concat(),
        )
    }

    #[test]
    fn the_subject_common_name_is_read_from_der() {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        const O: &[u8] = &[0x55, 0x04, 0x0a];
        let cert = cert_with_subject(&[(O, 0x0c, "acme"), (CN, 0x0c, "app")], true);
        assert_eq!(subject_common_name(&cert).as_deref(), Some("app"));
        let printable = cert_with_subject(&[(CN, 0x13, "worker-1")], false);
        assert_eq!(subject_common_name(&printable).as_deref(), Some("worker-1"));
        // The last of several, as OpenSSL prints them last.
        let two = cert_with_subject(&[(CN, 0x0c, "a"), (CN, 0x0c, "b")], true);
        assert_eq!(subject_common_name(&two).as_deref(), Some("b"));
        assert_eq!(
            subject_common_name(&cert_with_subject(&[(O, 0x0c, "x")], true)),
            None
        );
        assert_eq!(
            subject_common_name(&cert_with_subject(&[(CN, 0x1e, "x")], true)),
            None
        );
        // Truncated or garbled input is None at every length, never a panic.
        for n in 0..cert.len() {
            let _ = subject_common_name(&cert[..n]);
        }
        assert_eq!(subject_common_name(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(subject_common_name(&[]), None);
    }
}
