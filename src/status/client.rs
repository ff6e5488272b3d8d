//! The HTTP client of `unitwatch status`: hyper's HTTP/1.1 client, over
//! TLS (tokio-rustls) when the daemon serves TLS, with basic auth when given
//! credentials, and one clear line for each way asking can fail.
//!
//! Trust is either exactly the certificate the daemon is configured with
//! (its web configuration's `cert_file`: status runs on the same machine, so
//! this works for self-signed certificates and for names that are not the
//! address asked) or any certificate a given CA signed for the host asked.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::error::one_line;
use crate::http::web_config::{read_certs, WebConfigFile};

/// How long to wait for the daemon to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait, once connected, for the whole answer (TLS handshake,
/// a bcrypt check of the password, the unit list).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read: the unit list of the largest setups is a few MiB.
const MAX_BODY: usize = 64 << 20;

/// Why `unitwatch status` got no unit list; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "no unitwatch answers at {addr}: {reason} (is it running? `systemctl status unitwatch`)"
    )]
    Connect { addr: String, reason: String },
    #[error("unitwatch at {addr} did not answer within {seconds} s")]
    Timeout { addr: String, seconds: u64 },
    #[error("unitwatch at {addr}: untrusted certificate: {reason}")]
    Untrusted { addr: String, reason: String },
    #[error("unitwatch at {addr}: TLS failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error(
        "unitwatch at {addr} does not speak TLS (its web configuration has no tls_server_config?)"
    )]
    NotTls { addr: String },
    #[error("unitwatch at {addr} speaks only HTTPS: name its web configuration (--web.config.file, or server.web_config in --config) or the CA of its certificate (--ca FILE)")]
    NeedsTls { addr: String },
    #[error("unitwatch at {addr} refused the credentials of user `{user}` (401): wrong user name or password")]
    WrongCredentials { addr: String, user: String },
    #[error(
        "unitwatch at {addr} asks for credentials (401): give --user NAME --password-file FILE"
    )]
    NeedsCredentials { addr: String },
    #[error("unitwatch at {addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: String,
        body: String,
    },
    #[error("talking to unitwatch at {addr}")]
    Http {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("unitwatch at {addr} sent something that is not its unit list: {reason}")]
    Body { addr: String, reason: String },
    #[error("`{addr}` is not an address of the form HOST:PORT")]
    Address { addr: String },
    #[error("{path}: cannot read")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Certificates(String),
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
}

/// Which server certificates to accept.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly this one, read from `file` (the daemon's own `cert_file`),
    /// whatever names it holds and whoever signed it.
    Pinned {
        file: PathBuf,
        cert: CertificateDer<'static>,
    },
    /// Any signed by a CA in `file` for the host asked.
    Ca { file: PathBuf, roots: RootCertStore },
}

impl Trust {
    /// The first certificate of the PEM file `file`.
    pub fn pinned(file: &Path) -> Result<Trust, StatusError> {
        let cert = read_certs(file)
            .map_err(StatusError::Certificates)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                StatusError::Certificates(format!("{}: no PEM certificate in it", file.display()))
            })?;
        Ok(Trust::Pinned {
            file: file.to_owned(),
            cert,
        })
    }

    /// The CA certificates of the PEM file `file`.
    pub fn ca(file: &Path) -> Result<Trust, StatusError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(file).map_err(StatusError::Certificates)? {
            roots.add(cert).map_err(|e| {
                StatusError::Certificates(format!("{}: not a CA certificate: {e}", file.display()))
            })?;
        }
        Ok(Trust::Ca {
            file: file.to_owned(),
            roots,
        })
    }
}

/// A user name and password for basic auth.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `user` with the password in the file `file`: its first line, without
    /// the line break (as `echo secret > file` writes it).
    pub fn from_file(user: &str, file: &Path) -> Result<Credentials, StatusError> {
        let text = std::fs::read_to_string(file).map_err(|source| StatusError::File {
            path: file.display().to_string(),
            source,
        })?;
        let password = text.lines().next().unwrap_or_default().to_owned();
        Ok(Credentials {
            user: user.to_owned(),
            password,
        })
    }
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Target {
    /// `HOST:PORT`.
    pub addr: String,
    /// TLS, and which certificates to accept; None: plain HTTP.
    pub tls: Option<Trust>,
    pub credentials: Option<Credentials>,
}

impl Target {
    /// Asks `addr`: with TLS trusting `ca` if given, else the certificate of
    /// the web configuration `web` if it turns TLS on, else plain HTTP.
    pub fn new(
        addr: String,
        web: Option<&WebConfigFile>,
        ca: Option<&Path>,
        credentials: Option<Credentials>,
    ) -> Result<Target, StatusError> {
        let tls = match (ca, web.and_then(WebConfigFile::cert_file)) {
            (Some(ca), _) => Some(Trust::ca(ca)?),
            (None, Some(cert)) => Some(Trust::pinned(cert)?),
            (None, None) => None,
        };
        Ok(Target {
            addr,
            tls,
            credentials,
        })
    }

    /// The host part of `addr`, for TLS.
    fn server_name(&self) -> Result<ServerName<'static>, StatusError> {
        let bad = || StatusError::Address {
            addr: self.addr.clone(),
        };
        let host = match self.addr.strip_prefix('[') {
            Some(rest) => rest.split_once("]:").map(|(h, _)| h),
            None => self.addr.rsplit_once(':').map(|(h, _)| h),
        }
        .ok_or_else(bad)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ServerName::IpAddress(ip.into()));
        }
        ServerName::try_from(host.to_owned()).map_err(|_| bad())
    }
}

/// `GET path` from the daemon; the body of a 200.
pub fn get(target: &Target, path: &str) -> Result<String, StatusError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StatusError::Runtime)?;
    runtime.block_on(fetch(target, path))
}

async fn fetch(target: &Target, path: &str) -> Result<String, StatusError> {
    let addr = target.addr.as_str();
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(StatusError::Connect {
                addr: addr.to_owned(),
                reason: io_reason(&e),
            })
        }
        Err(_) => {
            return Err(StatusError::Connect {
                addr: addr.to_owned(),
                reason: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
            })
        }
    };
    let exchange = async {
        match &target.tls {
            None => exchange(target, path, tcp).await,
            Some(trust) => {
                let connector = TlsConnector::from(client_config(trust)?);
                let tls = connector
                    .connect(target.server_name()?, tcp)
                    .await
                    .map_err(|e| tls_error(target, trust, &e))?;
                exchange(target, path, tls).await
            }
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| StatusError::Timeout {
            addr: addr.to_owned(),
            seconds: ANSWER_TIMEOUT.as_secs(),
        })?
}

/// One request on a connected stream; the body of a 200.
async fn exchange<S>(target: &Target, path: &str, stream: S) -> Result<String, StatusError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let addr = target.addr.as_str();
    let http = |source: hyper::Error| match (&target.tls, rustls_error(&source)) {
        (Some(trust), Some(_)) => tls_error(target, trust, &source),
        _ => StatusError::Http {
            addr: addr.to_owned(),
            source,
        },
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // Drives the connection; ends with it, when the sender is dropped.
    tokio::spawn(connection);
    let mut request = Request::get(path)
        .header(HOST, addr)
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, concat!("unitwatch/", env!("CARGO_PKG_VERSION")));
    if let Some(c) = &target.credentials {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.password));
        request = request.header(AUTHORIZATION, format!("Basic {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|_| StatusError::Address {
            addr: addr.to_owned(),
        })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| StatusError::Body {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    match status {
        StatusCode::OK => Ok(body),
        StatusCode::UNAUTHORIZED => Err(match &target.credentials {
            Some(c) => StatusError::WrongCredentials {
                addr: addr.to_owned(),
                user: c.user.clone(),
            },
            None => StatusError::NeedsCredentials {
                addr: addr.to_owned(),
            },
        }),
        // What unitwatch answers plain HTTP on its TLS port.
        StatusCode::BAD_REQUEST
            if target.tls.is_none() && body.contains("HTTP request to an HTTPS server") =>
        {
            Err(StatusError::NeedsTls {
                addr: addr.to_owned(),
            })
        }
        _ => Err(StatusError::Status {
            addr: addr.to_owned(),
            status: status.to_string(),
            body: one_line(&body.trim().chars().take(200).collect::<String>()),
        }),
    }
}

fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, StatusError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StatusError::Certificates(e.to_string()))?;
    let mut config = match trust {
        Trust::Pinned { cert, .. } => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                cert: cert.clone(),
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Trust::Ca { roots, .. } => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts exactly one certificate. The handshake's signatures are still
/// verified against it, so only the holder of its private key gets through.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// What [`Pinned`] says of any other certificate.
#[derive(Debug, thiserror::Error)]
#[error("not the pinned certificate")]
struct NotPinned;

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NotPinned)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls error somewhere in `e`'s chain (io errors carry it inside).
fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
        }
        next = e.source();
    }
    None
}

/// One line for a failed TLS handshake (or a TLS alert after it).
fn tls_error(target: &Target, trust: &Trust, e: &(dyn StdError + 'static)) -> StatusError {
    let addr = target.addr.clone();
    let Some(r) = rustls_error(e) else {
        let reason = match e.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                "the connection was closed during the handshake".to_owned()
            }
            Some(io) => io_reason(io),
            None => e.to_string(),
        };
        return StatusError::Tls { addr, reason };
    };
    use rustls::{AlertDescription, Error as R};
    let untrusted = |reason: String| StatusError::Untrusted {
        addr: target.addr.clone(),
        reason,
    };
    match (r, trust) {
        (R::InvalidCertificate(_), Trust::Pinned { file, .. }) => untrusted(format!(
            "it is not the certificate in {} (its tls_server_config.cert_file; replaced without restarting unitwatch?)",
            file.display()
        )),
        (
            R::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature),
            Trust::Ca { file, .. },
        ) => untrusted(format!("not signed by a CA in {}", file.display())),
        (
            R::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ),
            Trust::Ca { .. },
        ) => untrusted(format!(
            "not valid for {} (ask with --address NAME:PORT, a name the certificate holds)",
            target.addr
        )),
        // webpki's errors come through as `Other`, written as their names.
        (R::InvalidCertificate(CertificateError::Other(o)), Trust::Ca { .. }) => {
            untrusted(match o.0.to_string().as_str() {
                "CaUsedAsEndEntity" => "it is a CA certificate itself (self-signed?), which no CA vouches for; without --ca, status trusts exactly the certificate of the web configuration".to_owned(),
                other => other.to_owned(),
            })
        }
        (R::InvalidCertificate(c), Trust::Ca { .. }) => untrusted(c.to_string()),
        (R::InvalidMessage(_), _) => StatusError::NotTls { addr },
        (R::AlertReceived(AlertDescription::CertificateRequired), _) => StatusError::Tls {
            addr,
            reason: "it requires a client certificate, which unitwatch status does not send"
                .to_owned(),
        },
        (other, _) => StatusError::Tls {
            addr,
            reason: other.to_string(),
        },
    }
}

/// An io error's text, as in "connection refused".
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    // "Connection refused (os error 111)": the number says nothing more.
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(addr: &str) -> Target {
        Target {
            addr: addr.to_owned(),
            tls: None,
            credentials: None,
        }
    }

    #[test]
    fn server_names_of_addresses() {
        let ip = |a: &str| match target(a).server_name() {
            Ok(ServerName::IpAddress(ip)) => Some(IpAddr::from(ip).to_string()),
            _ => None,
        };
        assert_eq!(ip("127.0.0.1:9567").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("[::1]:9567").as_deref(), Some("::1"));
        assert!(matches!(
            target("host.example:9567").server_name(),
            Ok(ServerName::DnsName(n)) if n.as_ref() == "host.example"
        ));
        assert!(target("no-port").server_name().is_err());
        assert!(target("bad name:1").server_name().is_err());
    }

    #[test]
    fn password_is_the_first_line_of_its_file() {
        let file = std::env::temp_dir().join(format!("unitwatch-pw-{}", std::process::id()));
        std::fs::write(&file, "s3 cret\r\nignored\n").expect("write");
        let c = Credentials::from_file("alice", &file).expect("read");
        let _ = std::fs::remove_file(&file);
        assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "s3 cret"));
        assert!(
            !format!("{c:?}").contains("s3 cret"),
            "Debug shows the password"
        );
    }

    #[test]
    fn io_reasons_read_as_a_clause() {
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_reason(&e), "connection refused");
    }
}
