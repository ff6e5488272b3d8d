//! The values of the web configuration that check themselves while they are
//! read (see [`crate::config::value`] for why): user names, bcrypt hashes,
//! response headers, TLS versions, client_auth_type, and the exporter-toolkit
//! keys unitwatch rejects.

use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderName, HeaderValue};
use rustls::SupportedProtocolVersion;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::config::value::from_str;

/// A `basic_auth_users` name: no `:`, which would end it in a basic auth header.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct UserName(pub(super) String);

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a user name", |s| {
            if s.contains(':') {
                Err("a user name cannot contain `:`".to_owned())
            } else {
                Ok(UserName(s.to_owned()))
            }
        })
    }
}

/// A bcrypt hash, as `htpasswd -B` makes.
pub(super) struct BcryptHash(pub(super) String);

impl<'de> Deserialize<'de> for BcryptHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a bcrypt hash", |s| {
            if s.len() == 60 && bcrypt::HashParts::from_str(s).is_ok() {
                Ok(BcryptHash(s.to_owned()))
            } else {
                Err("not a bcrypt hash (expected `$2y$...`, e.g. from `htpasswd -nbBC 10 USER PASSWORD`)".to_owned())
            }
        })
    }
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

/// `http_server_config.headers`: valid names that unitwatch does not set
/// itself, with valid values, in the order written.
pub(super) struct Headers(pub(super) Vec<(HeaderName, HeaderValue)>);

pub(super) struct HeaderKey(HeaderName);

impl<'de> Deserialize<'de> for HeaderKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a header name", |s| {
            let name = HeaderName::from_bytes(s.as_bytes())
                .map_err(|_| "not a valid header name".to_owned())?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err("this header is set by unitwatch itself".to_owned());
            }
            Ok(HeaderKey(name))
        })
    }
}

pub(super) struct HeaderText(HeaderValue);

impl<'de> Deserialize<'de> for HeaderText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a header value", |s| {
            HeaderValue::from_str(s)
                .map(HeaderText)
                .map_err(|_| "not a valid header value".to_owned())
        })
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> Visitor<'de> for Map {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut headers = Vec::new();
                while let Some((HeaderKey(name), HeaderText(value))) = map.next_entry()? {
                    headers.push((name, value));
                }
                Ok(Headers(headers))
            }
        }
        d.deserialize_map(Map)
    }
}

/// `min_version`, `max_version`: TLS 1.2 or 1.3.
#[derive(Clone, Copy)]
pub(super) struct TlsVersion(pub(super) &'static SupportedProtocolVersion);

impl TlsVersion {
    pub(super) const ALL: [&'static SupportedProtocolVersion; 2] =
        [&rustls::version::TLS12, &rustls::version::TLS13];

    pub(super) fn rank(self) -> usize {
        Self::ALL
            .iter()
            .position(|v| v.version == self.0.version)
            .unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "TLS12 or TLS13", |s| match s {
            "TLS12" => Ok(TlsVersion(&rustls::version::TLS12)),
            "TLS13" => Ok(TlsVersion(&rustls::version::TLS13)),
            "TLS10" | "TLS11" => Err(format!(
                "{s} is not supported (it is insecure); use TLS12 or TLS13"
            )),
            other => Err(format!(
                "unknown TLS version `{other}`, expected TLS12 or TLS13"
            )),
        })
    }
}

/// `client_auth_type`, of those unitwatch implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientAuth {
    NoClientCert,
    RequireAndVerifyClientCert,
    VerifyClientCertIfGiven,
}

impl<'de> Deserialize<'de> for ClientAuth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a client_auth_type", |s| {
            match s {
            "NoClientCert" => Ok(ClientAuth::NoClientCert),
            "RequireAndVerifyClientCert" => Ok(ClientAuth::RequireAndVerifyClientCert),
            "VerifyClientCertIfGiven" => Ok(ClientAuth::VerifyClientCertIfGiven),
            "RequestClientCert" | "RequireAnyClientCert" => Err(format!(
                "{s} is not supported by unitwatch (unverified client certificates); use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
            )),
            other => Err(format!(
                "unknown client_auth_type `{other}`, expected one of NoClientCert, RequireAndVerifyClientCert, VerifyClientCertIfGiven"
            )),
        }
        })
    }
}

/// An exporter-toolkit key unitwatch does not implement: any value is an
/// error, raised while the parser is at the value.
pub(super) struct Unsupported;

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Reject;
        fn no<E: de::Error>() -> Result<Unsupported, E> {
            Err(E::custom(
                "not supported by unitwatch (use cert_file, key_file, client_ca_file, client_auth_type, min_version, max_version)",
            ))
        }
        impl<'de> Visitor<'de> for Reject {
            type Value = Unsupported;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("nothing (not supported by unitwatch)")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Unsupported, E> {
                no()
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Unsupported, E> {
                no()
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Unsupported, E> {
                no()
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Unsupported, E> {
                no()
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Unsupported, E> {
                no()
            }
            fn visit_unit<E: de::Error>(self) -> Result<Unsupported, E> {
                no()
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Unsupported, A::Error> {
                no()
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Unsupported, A::Error> {
                no()
            }
        }
        d.deserialize_any(Reject)
    }
}
