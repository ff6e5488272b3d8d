//! The web configuration file (`--web.config.file`), in the format of the
//! Prometheus exporter-toolkit: TLS (`tls_server_config`), basic auth users
//! with bcrypt-hashed passwords (`basic_auth_users`) and extra response
//! headers (`http_server_config.headers`). It owns parsing and validating
//! that file and turning it into what the server needs.
//!
//! Every error names the file, the line and column, and the key it is about,
//! in one line: `FILE:LINE:COLUMN: KEY: what is wrong`. Relative paths in the
//! file are relative to the file's own directory, as in exporter-toolkit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use serde::Deserialize;

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

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .finish()
    }
}

/// Why a web configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// exporter-toolkit keys unitwatch knows but does not implement are
/// accepted by the parser and rejected with a message saying so.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cert: Option<serde_yaml_ng::Value>,
    key: Option<serde_yaml_ng::Value>,
    client_ca: Option<serde_yaml_ng::Value>,
    cipher_suites: Option<serde_yaml_ng::Value>,
    curve_preferences: Option<serde_yaml_ng::Value>,
    prefer_server_cipher_suites: Option<serde_yaml_ng::Value>,
    client_allowed_sans: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; unitwatch speaks HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// An error about the key at `keys` (a path from the top of the file).
struct Bad {
    keys: Vec<String>,
    message: String,
}

fn bad(keys: &[&str], message: impl Into<String>) -> Bad {
    Bad {
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        message: message.into(),
    }
}

impl WebConfig {
    /// Reads and validates the file at `path`, loading the certificate and
    /// key it names.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        WebConfig::parse(path, &text)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<WebConfig, WebConfigError> {
        let raw: Option<Raw> = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, &e))?;
        let raw = raw.unwrap_or_default();
        let base = path.parent().unwrap_or(Path::new("."));
        build(raw, base, path).map_err(|b| {
            let keys: Vec<&str> = b.keys.iter().map(String::as_str).collect();
            let (line, column) = locate(text, &keys);
            WebConfigError::Invalid {
                path: path.display().to_string(),
                line,
                column,
                key: b.keys.join("."),
                message: b.message,
            }
        })
    }

    /// Whether anything beyond plain, open HTTP is configured.
    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && self.users.is_empty() && self.headers.is_empty()
    }
}

fn build(raw: Raw, base: &Path, path: &Path) -> Result<WebConfig, Bad> {
    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        if user.contains(':') {
            return Err(bad(
                &["basic_auth_users", &user],
                "a user name cannot contain `:`",
            ));
        }
        if hash.len() != 60 || bcrypt::HashParts::from_str(&hash).is_err() {
            return Err(bad(
                &["basic_auth_users", &user],
                "not a bcrypt hash (expected `$2y$...`, e.g. from `htpasswd -nbBC 10 USER PASSWORD`)",
            ));
        }
        users.insert(user, hash);
    }

    let mut headers = Vec::new();
    if let Some(http) = raw.http_server_config {
        for (name, value) in http.headers.unwrap_or_default() {
            let keys = ["http_server_config", "headers", name.as_str()];
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(&keys, "not a valid header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(bad(&keys, "this header is set by unitwatch itself"));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| bad(&keys, "not a valid header value"))?;
            headers.push((header, value));
        }
    }

    let tls = match raw.tls_server_config {
        Some(t) => tls(t, base)?,
        None => None,
    };
    Ok(WebConfig {
        path: Some(path.to_owned()),
        tls,
        users,
        headers,
    })
}

/// Headers a web config may not override, as in exporter-toolkit.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-length",
    "www-authenticate",
    "connection",
    "transfer-encoding",
];

fn tls(t: RawTls, base: &Path) -> Result<Option<Arc<ServerConfig>>, Bad> {
    let unsupported = [
        ("cert", t.cert.is_some()),
        ("key", t.key.is_some()),
        ("client_ca", t.client_ca.is_some()),
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        (
            "prefer_server_cipher_suites",
            t.prefer_server_cipher_suites.is_some(),
        ),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(bad(
            &["tls_server_config", key],
            "not supported by unitwatch (use cert_file, key_file, client_ca_file, client_auth_type, min_version, max_version)",
        ));
    }
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

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = versions(t.min_version.as_deref(), t.max_version.as_deref())?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| bad(&["tls_server_config", "min_version"], e.to_string()))?;

    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "NoClientCert" => {
            if t.client_ca_file.is_some() {
                return Err(bad(
                    &["tls_server_config", "client_ca_file"],
                    "set, but client_auth_type is NoClientCert",
                ));
            }
            builder.with_no_client_auth()
        }
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let keys = ["tls_server_config", "client_ca_file"];
            let Some(ca_file) = t.client_ca_file else {
                return Err(bad(
                    &["tls_server_config", "client_auth_type"],
                    format!("{auth_type} needs client_ca_file"),
                ));
            };
            let ca_file = base.join(ca_file);
            let mut roots = RootCertStore::empty();
            for cert in read_certs(&ca_file).map_err(|m| bad(&keys, m))? {
                roots
                    .add(cert)
                    .map_err(|e| bad(&keys, format!("{}: {e}", ca_file.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| bad(&keys, format!("{}: {e}", ca_file.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(bad(
                &["tls_server_config", "client_auth_type"],
                format!("{auth_type} is not supported by unitwatch (unverified client certificates); use RequireAndVerifyClientCert or VerifyClientCertIfGiven"),
            ))
        }
        other => {
            return Err(bad(
                &["tls_server_config", "client_auth_type"],
                format!("unknown client_auth_type `{other}`, expected one of NoClientCert, RequireAndVerifyClientCert, VerifyClientCertIfGiven"),
            ))
        }
    };

    let certs = read_certs(&cert_file).map_err(|m| bad(&["tls_server_config", "cert_file"], m))?;
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
        bad(
            &["tls_server_config", "key_file"],
            format!("{}: no usable private key: {e}", key_file.display()),
        )
    })?;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        bad(
            &["tls_server_config", "key_file"],
            format!(
                "{} does not go with {}: {e}",
                key_file.display(),
                cert_file.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The certificates in the PEM file at `path`; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
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

fn version(key: &str, name: &str) -> Result<&'static SupportedProtocolVersion, Bad> {
    match name {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(bad(
            &["tls_server_config", key],
            format!("{name} is not supported (it is insecure); use TLS12 or TLS13"),
        )),
        other => Err(bad(
            &["tls_server_config", key],
            format!("unknown TLS version `{other}`, expected TLS12 or TLS13"),
        )),
    }
}

/// The protocol versions between `min` (default TLS 1.2) and `max`
/// (default TLS 1.3).
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>, Bad> {
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    let lo = match min {
        Some(v) => version("min_version", v)?,
        None => all[0],
    };
    let hi = match max {
        Some(v) => version("max_version", v)?,
        None => all[1],
    };
    let rank = |v: &SupportedProtocolVersion| all.iter().position(|a| a.version == v.version);
    let (Some(lo), Some(hi)) = (rank(lo), rank(hi)) else {
        return Err(bad(&["tls_server_config"], "unknown TLS version"));
    };
    if lo > hi {
        return Err(bad(
            &["tls_server_config", "max_version"],
            "lower than min_version",
        ));
    }
    Ok(all[lo..=hi].to_vec())
}

/// One line from a YAML parse error: `FILE:LINE:COLUMN: KEY: message`.
fn yaml_error(path: &Path, e: &serde_yaml_ng::Error) -> WebConfigError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let mut text = e.to_string();
    if let Some(at) = text.rfind(" at line ") {
        text.truncate(at);
    }
    // serde_yaml_ng prefixes the key path ("a.b: message") unless at the top.
    let (mut key, message) = match text.split_once(": ") {
        Some((k, m)) if !k.is_empty() && !k.contains(' ') => (k.to_owned(), m.to_owned()),
        _ => (String::new(), text.clone()),
    };
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(f, _)| f)
    {
        key = if key.is_empty() {
            field.to_owned()
        } else {
            format!("{key}.{field}")
        };
    }
    if key.is_empty() {
        key = "YAML syntax".to_owned();
    }
    WebConfigError::Invalid {
        path: path.display().to_string(),
        line,
        column,
        key,
        message,
    }
}

/// Where the key at `keys` is written in block-style YAML `text`: the line
/// and column of the deepest key found (1, 1 if not even the first is).
fn locate(text: &str, keys: &[&str]) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = (1, 1);
    let mut start = 0;
    let mut parent_indent: Option<usize> = None;
    for key in keys {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if parent_indent.is_some_and(|p| indent <= p) {
                break; // left the parent's block
            }
            let is_key = [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ]
            .iter()
            .any(|k| trimmed.starts_with(k.as_str()));
            if is_key {
                hit = Some((i, indent));
                break;
            }
        }
        match hit {
            Some((i, indent)) => {
                found = (i + 1, indent + 1);
                start = i + 1;
                parent_indent = Some(indent);
            }
            None => break,
        }
    }
    found
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
        let e = err("basic_auth_users:\n  alice: x\n   bob: y\n");
        assert!(e.starts_with("/etc/web.yml:3:7: "), "{e}");
    }

    #[test]
    fn bad_hash_names_the_user() {
        let e = err("# users\nbasic_auth_users:\n  bob: '$2y$04$abc'\n");
        assert!(
            e.starts_with("/etc/web.yml:3:3: basic_auth_users.bob: not a bcrypt hash"),
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
                "/etc/web.yml:4:3: tls_server_config.min_version: TLS10 is not supported"
            ),
            "{e}"
        );
        let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n");
        assert!(
            e.starts_with("/etc/web.yml:4:3: tls_server_config.cipher_suites: not supported"),
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
    fn locate_stays_inside_the_parent() {
        let text = "a:\n  x: 1\nb:\n  x: 2\n";
        assert_eq!(locate(text, &["b", "x"]), (4, 3));
        assert_eq!(locate(text, &["a", "y"]), (1, 1));
    }
}
