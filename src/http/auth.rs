//! HTTP basic authentication against the bcrypt hashes of the web
//! configuration's `basic_auth_users`.
//!
//! bcrypt is slow on purpose, so a successful check is remembered (as a
//! SHA-256 digest of user, hash and password, never the password itself):
//! a scraper sending the same credentials every few seconds costs one bcrypt
//! run, not one per scrape, and many connections opening at once with the
//! same credentials wait for the first check instead of each running bcrypt.
//! bcrypt runs off the async workers, at most [`PARALLEL_CHECKS`] at a time,
//! so wrong passwords cannot starve serving.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::http::HeaderValue;
use base64::Engine;
use tokio::sync::Semaphore;

/// At most this many bcrypt verifications run at once.
pub const PARALLEL_CHECKS: usize = 2;
/// At most this many successful checks are remembered; the cache is
/// emptied when full.
const CACHE_SIZE: usize = 1024;

/// The users and their bcrypt hashes, with a cache of successful checks.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    cache: Mutex<HashSet<[u8; 32]>>,
    checks: Semaphore,
}

/// A user and password from an `Authorization: Basic` header.
#[derive(Debug, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: String,
}

impl BasicAuth {
    /// None if there are no users (authentication off).
    pub fn new(users: BTreeMap<String, String>) -> Option<Arc<BasicAuth>> {
        if users.is_empty() {
            return None;
        }
        Some(Arc::new(BasicAuth {
            users,
            cache: Mutex::new(HashSet::new()),
            checks: Semaphore::new(PARALLEL_CHECKS),
        }))
    }

    /// Whether the `Authorization` header carries a known user's password.
    pub async fn check(&self, header: Option<&HeaderValue>) -> bool {
        let Some(creds) = header.and_then(parse) else {
            return false;
        };
        // An unknown user costs a bcrypt run too, so response times do not
        // tell which users exist.
        let (known, hash) = match self.users.get(&creds.user) {
            Some(hash) => (true, hash.clone()),
            None => match self.users.values().next() {
                Some(hash) => (false, hash.clone()),
                None => return false,
            },
        };
        let key = digest(&creds.user, &hash, &creds.password);
        if known && self.cached(&key) {
            return true;
        }
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        // Many connections opening at once with the same credentials wait
        // here for the first check rather than each running bcrypt.
        if known && self.cached(&key) {
            return true;
        }
        let password = creds.password;
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        tracing::debug!(user = %creds.user, known, verified, "checked a password with bcrypt");
        if known && verified {
            self.remember(key);
        }
        known && verified
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        self.cache.lock().map(|c| c.contains(key)).unwrap_or(false)
    }

    fn remember(&self, key: [u8; 32]) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_SIZE {
                cache.clear();
            }
            cache.insert(key);
        }
    }
}

fn digest(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The credentials of `Basic BASE64(user:password)`; the scheme is
/// case-insensitive.
fn parse(header: &HeaderValue) -> Option<Credentials> {
    let text = header.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
    }

    fn auth() -> Arc<BasicAuth> {
        let mut users = BTreeMap::new();
        users.insert(
            "alice".to_owned(),
            bcrypt::hash("s3cret:x", 4).expect("hash"),
        );
        BasicAuth::new(users).expect("users")
    }

    #[test]
    fn parses_basic_credentials() {
        assert_eq!(
            parse(&basic("alice:pa:ss")),
            Some(Credentials {
                user: "alice".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(parse(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(parse(&HeaderValue::from_static("Basic !!!")), None);
        assert_eq!(parse(&basic("no-colon")), None);
    }

    #[test]
    fn no_users_means_no_auth() {
        assert!(BasicAuth::new(BTreeMap::new()).is_none());
    }

    #[tokio::test]
    async fn right_wrong_missing_and_unknown() {
        let auth = auth();
        assert!(auth.check(Some(&basic("alice:s3cret:x"))).await);
        // Cached now, and still right.
        assert!(auth.cached(&digest("alice", &auth.users["alice"], "s3cret:x")));
        assert!(auth.check(Some(&basic("alice:s3cret:x"))).await);
        assert!(!auth.check(Some(&basic("alice:wrong"))).await);
        assert!(!auth.check(Some(&basic("mallory:s3cret:x"))).await);
        assert!(!auth.check(None).await);
    }
}
