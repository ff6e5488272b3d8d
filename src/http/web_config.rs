//! The web configuration file (`--web.config.file`), in the format of the
//! Prometheus exporter-toolkit: TLS (`tls_server_config`), basic auth users
//! with bcrypt-hashed passwords (`basic_auth_users`) and extra response
//! headers (`http_server_config.headers`). It owns parsing and validating
//! that file and turning it into what the server needs.
//!
//! Reading happens in two steps: [`WebConfigFile`] is the file parsed and
//! checked (values by the newtypes they are read into, so the YAML parser says
//! where a bad one is; then one key against another), without reading the
//! files it names, which is all `unitwatch status` needs and all that fuzzing
//! touches; [`WebConfigFile::load`] then reads the certificate and key.
//!
//! Every error is a [`config::Error`](crate::config::Error): the file, the
//! line and column, and the key it is about, in one line. Relative paths in
//! the file are relative to the file's own directory, as in exporter-toolkit.

mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use serde::Deserialize;

use self::value::{BcryptHash, ClientAuth, Headers, TlsVersion, Unsupported, UserName};
use crate::config::error::{parse_yaml, Error};

/// What the web configuration asks of the server. The default serves plain
/// HTTP to everyone.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    /// TLS, if `tls_server_config` names a certificate and key.
    pub tls: Option<Arc<ServerConfig>>,
    /// `basic_auth_users`: user name to bcrypt hash; empty means no auth.
    pub users: BTreeMap<String, String>,
    /// `http_server_config.headers`, set on every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .finish()
    }
}

impl WebConfig {
    /// Reads and validates the file at `path`, loading the certificate and
    /// key it names.
    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        WebConfigFile::read(path)?.load()
    }

    /// Validates `text` as if read from `path`, loading the certificate and
    /// key it names.
    pub fn parse(path: &Path, text: &str) -> Result<WebConfig, Error> {
        WebConfigFile::parse(path, text)?.load()
    }

    /// Whether anything beyond plain, open HTTP is configured.
    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && self.users.is_empty() && self.headers.is_empty()
    }
}

/// A web configuration file parsed and checked, the certificate, key and CA
/// files it names not read yet.
#[derive(Debug)]
pub struct WebConfigFile {
    path: PathBuf,
    /// The text, to place errors found while loading.
    text: String,
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: Option<TlsFiles>,
}

/// `tls_server_config` when it turns TLS on; paths resolved.
#[derive(Debug)]
struct TlsFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// With the CA file client certificates are verified against.
    client_auth: Option<(ClientAuth, PathBuf)>,
    versions: Vec<&'static SupportedProtocolVersion>,
}

impl WebConfigFile {
    /// Reads the file at `path` and checks it.
    pub fn read(path: &Path) -> Result<WebConfigFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        WebConfigFile::parse(path, &text)
    }

    /// Checks `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<WebConfigFile, Error> {
        let raw: Option<Raw> = parse_yaml(path, text)?;
        let raw = raw.unwrap_or_default();
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match raw.tls_server_config {
            Some(t) => tls_files(t, base).map_err(|b| b.at(path, text))?,
            None => None,
        };
        Ok(WebConfigFile {
            path: path.to_owned(),
            text: text.to_owned(),
            users: raw
                .basic_auth_users
                .unwrap_or_default()
                .into_iter()
                .map(|(user, hash)| (user.0, hash.0))
                .collect(),
            headers: raw
                .http_server_config
                .and_then(|h| h.headers)
                .map_or_else(Vec::new, |h| h.0),
            tls,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The server's certificate (PEM, the chain after it), if TLS is on.
    pub fn cert_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert_file.as_path())
    }

    /// Whether basic auth is on.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Reads the certificate, key and client CA the file names.
    pub fn load(self) -> Result<WebConfig, Error> {
        let tls = match &self.tls {
            Some(t) => Some(server_config(t).map_err(|b| b.at(&self.path, &self.text))?),
            None => None,
        };
        Ok(WebConfig {
            path: Some(self.path),
            tls,
            users: self.users,
            headers: self.headers,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<UserName, BcryptHash>>,
}

/// exporter-toolkit keys unitwatch knows but does not implement are
/// accepted by the parser as [`Unsupported`], which rejects them by name.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<ClientAuth>,
    client_ca_file: Option<String>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    #[allow(dead_code)] // read only to be rejected
    cert: Option<Unsupported>,
    #[allow(dead_code)] // read only to be rejected
    key: Option<Unsupported>,
    #[allow(dead_code)] // read only to be rejected
    client_ca: Option<Unsupported>,
    #[allow(dead_code)] // read only to be rejected
    cipher_suites: Option<Unsupported>,
    #[allow(dead_code)] // read only to be rejected
    curve_preferences: Option<Unsupported>,
    #[allow(dead_code)] // read only to be rejected
    prefer_server_cipher_suites: Option<Unsupported>,
    #[allow(dead_code)] // read only to be rejected
    client_allowed_sans: Option<Unsupported>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; unitwatch speaks HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<Headers>,
}

/// An error found after parsing, about the key at `keys`.
struct Bad {
    keys: &'static [&'static str],
    message: String,
}

fn bad(keys: &'static [&'static str], message: impl Into<String>) -> Bad {
    Bad {
        keys,
        message: message.into(),
    }
}

impl Bad {
    /// Placed where its key is written in `text`.
    fn at(self, path: &Path, text: &str) -> Error {
        Error::at_yaml_key(path, text, self.keys, &self.message)
    }
}

/// Whether `t` turns TLS on, and with what; checks one key against another.
fn tls_files(t: RawTls, base: &Path) -> Result<Option<TlsFiles>, Bad> {
    let cert_file = t.cert_file.filter(|f| !f.is_empty());
    let key_file = t.key_file.filter(|f| !f.is_empty());
    let (cert_file, key_file) = match (cert_file, key_file) {
        (None, None) => {
            if t.client_ca_file.is_some() || t.client_auth_type.is_some() {
                return Err(bad(
                    &["tls_server_config"],
                    "client certificates need cert_file and key_file",
                ));
            }
            return Ok(None);
        }
        (Some(_), None) => {
            return Err(bad(
                &["tls_server_config", "cert_file"],
                "key_file is missing",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                &["tls_server_config", "key_file"],
                "cert_file is missing",
            ))
        }
        (Some(c), Some(k)) => (base.join(c), base.join(k)),
    };
    let client_auth = match (
        t.client_auth_type.unwrap_or(ClientAuth::NoClientCert),
        t.client_ca_file,
    ) {
        (ClientAuth::NoClientCert, None) => None,
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err(bad(
                &["tls_server_config", "client_ca_file"],
                "set, but client_auth_type is NoClientCert",
            ))
        }
        (auth, None) => {
            return Err(bad(
                &["tls_server_config", "client_auth_type"],
                format!("{auth:?} needs client_ca_file"),
            ))
        }
        (auth, Some(ca)) => Some((auth, base.join(ca))),
    };
    let lo = t.min_version.unwrap_or(TlsVersion(TlsVersion::ALL[0]));
    let hi = t.max_version.unwrap_or(TlsVersion(TlsVersion::ALL[1]));
    if lo.rank() > hi.rank() {
        return Err(bad(
            &["tls_server_config", "max_version"],
            "lower than min_version",
        ));
    }
    Ok(Some(TlsFiles {
        cert_file,
        key_file,
        client_auth,
        versions: TlsVersion::ALL[lo.rank()..=hi.rank()].to_vec(),
    }))
}

/// The server's TLS configuration: reads the certificate, key and client CA.
fn server_config(t: &TlsFiles) -> Result<Arc<ServerConfig>, Bad> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&t.versions)
        .map_err(|e| bad(&["tls_server_config", "min_version"], e.to_string()))?;
    let builder = match &t.client_auth {
        None => builder.with_no_client_auth(),
        Some((auth, ca_file)) => {
            const KEYS: &[&str] = &["tls_server_config", "client_ca_file"];
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file).map_err(|m| bad(KEYS, m))? {
                roots
                    .add(cert)
                    .map_err(|e| bad(KEYS, format!("{}: {e}", ca_file.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if *auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| bad(KEYS, format!("{}: {e}", ca_file.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };

    let certs =
        read_certs(&t.cert_file).map_err(|m| bad(&["tls_server_config", "cert_file"], m))?;
    let key = PrivateKeyDer::from_pem_file(&t.key_file).map_err(|e| {
        bad(
            &["tls_server_config", "key_file"],
            format!("{}: no usable private key: {e}", t.key_file.display()),
        )
    })?;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        bad(
            &["tls_server_config", "key_file"],
            format!(
                "{} does not go with {}: {e}",
                t.key_file.display(),
                t.cert_file.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates in the PEM file at `path`; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let name = path.display();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| format!("{name}: {e}"))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{name}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{name}: no PEM certificate in it"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match WebConfig::parse(Path::new("/etc/web.yml"), text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_is_plain_http() {
        for text in ["", "# nothing\n", "{}\n"] {
            let c = WebConfig::parse(Path::new("/w.yml"), text).expect("valid");
            assert!(c.is_plain(), "{text:?}");
        }
    }

    #[test]
    fn users_and_headers() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let c = WebConfig::parse(
            Path::new("/w.yml"),
            &format!(
                "basic_auth_users:\n  alice: '{hash}'\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n"
            ),
        )
        .expect("valid");
        assert_eq!(
            c.users.get("alice").map(String::as_str),
            Some(hash.as_str())
        );
        assert_eq!(c.headers.len(), 1);
        assert_eq!(c.headers[0].0.as_str(), "x-frame-options");
        assert!(c.tls.is_none());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        assert_eq!(
            err("tls_server_config:\n  cert_file: a\n  key_fil: b\n")
                .split(": unknown field")
                .next(),
            Some("/etc/web.yml:3:3: tls_server_config.key_fil")
        );
        assert!(
            err("basic_auth:\n  a: b\n").starts_with("/etc/web.yml:1:1: basic_auth: unknown field")
        );
    }

    #[test]
    fn bad_yaml_names_the_line() {
        let e = err("tls_server_config:\n  cert_file: a\n   key_file: y\n");
        assert!(
            e.starts_with("/etc/web.yml:3:12: tls_server_config: mapping values are not allowed"),
            "{e}"
        );
    }

    #[test]
    fn bad_hash_names_the_user() {
        let e = err("# users\nbasic_auth_users:\n  bob: '$2y$04$abc'\n");
        assert!(
            e.starts_with("/etc/web.yml:3:8: basic_auth_users.bob: not a bcrypt hash"),
            "{e}"
        );
    }

    #[test]
    fn missing_cert_file_names_key_and_file() {
        let e = err("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n");
        assert!(
            e.starts_with("/etc/web.yml:2:3: tls_server_config.cert_file: /etc/nope.crt: "),
            "{e}"
        );
        let e = err("tls_server_config:\n  key_file: k\n");
        assert!(
            e.starts_with("/etc/web.yml:2:3: tls_server_config.key_file: cert_file is missing"),
            "{e}"
        );
    }

    #[test]
    fn versions_and_unsupported_keys() {
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n");
        assert!(
            e.starts_with(
                "/etc/web.yml:4:16: tls_server_config.min_version: TLS10 is not supported"
            ),
            "{e}"
        );
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n");
        assert!(
            e.starts_with("/etc/web.yml:4:18: tls_server_config.cipher_suites: not supported"),
            "{e}"
        );
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n");
        assert!(
            e.starts_with("/etc/web.yml:5:3: tls_server_config.max_version: lower"),
            "{e}"
        );
    }

    #[test]
    fn reserved_header_is_rejected() {
        let e = err("http_server_config:\n  headers:\n    Content-Type: x\n");
        assert!(
            e.starts_with("/etc/web.yml:3:5: http_server_config.headers.Content-Type: this header is set by unitwatch"),
            "{e}"
        );
    }

    #[test]
    fn user_names_cannot_hold_a_colon() {
        let hash = bcrypt::hash("x", 4).expect("hash");
        let e = err(&format!(
            "basic_auth_users:\n  alice: '{hash}'\n  'bob:x': '{hash}'\n"
        ));
        assert!(
            e.starts_with(
                "/etc/web.yml:3:3: basic_auth_users.bob:x: a user name cannot contain `:`"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_header_value_names_the_header() {
        let e = err("http_server_config:\n  headers:\n    X-A: \"a\\nb\"\n");
        assert!(
            e.starts_with(
                "/etc/web.yml:3:10: http_server_config.headers.X-A: not a valid header value"
            ),
            "{e}"
        );
    }

    #[test]
    fn client_auth_needs_a_ca_and_only_verified_kinds() {
        let tls = "tls_server_config:\n  cert_file: a\n  key_file: b\n";
        let e = err(&format!(
            "{tls}  client_auth_type: RequireAndVerifyClientCert\n"
        ));
        assert!(
            e.starts_with("/etc/web.yml:4:3: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file"),
            "{e}"
        );
        let e = err(&format!("{tls}  client_auth_type: RequestClientCert\n"));
        assert!(
            e.starts_with("/etc/web.yml:4:21: tls_server_config.client_auth_type: RequestClientCert is not supported"),
            "{e}"
        );
        let e = err(&format!("{tls}  client_ca_file: ca.crt\n"));
        assert!(
            e.starts_with("/etc/web.yml:4:3: tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert"),
            "{e}"
        );
    }

    #[test]
    fn flow_style_errors_are_placed_too() {
        let e = err("{tls_server_config: {cert_file: a}}\n");
        assert!(
            e.starts_with("/etc/web.yml:1:22: tls_server_config.cert_file: key_file is missing"),
            "{e}"
        );
    }

    #[test]
    fn checking_reads_no_files() {
        let text = "tls_server_config:\n  cert_file: nope.crt\n  key_file: /nope.key\n";
        let file = WebConfigFile::parse(Path::new("/etc/web.yml"), text).expect("checked");
        assert_eq!(file.cert_file(), Some(Path::new("/etc/nope.crt")));
        assert!(!file.has_users());
        let e = file.load().expect_err("no such certificate");
        assert!(
            e.to_string()
                .starts_with("/etc/web.yml:2:3: tls_server_config.cert_file: /etc/nope.crt: "),
            "{e}"
        );
    }
}
