//! TLS material for the tests, made by openssl — a CA, a server and a
//! client certificate it signed, and a self-signed certificate of another
//! name — the web configurations that use it, and curl as the client that
//! checks it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::unitwatch::temp_dir;
use super::{run, sh};

/// In `dir`: a CA (ca.crt, ca.key), a server certificate it signed for
/// localhost and 127.0.0.1 (server.crt, server.key), a client certificate
/// it signed (client.crt, client.key), and a self-signed certificate for
/// another name (other.crt, other.key).
pub fn make_certs(dir: &Path) {
    sh(
        dir,
        "set -e
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout ca.key -out ca.crt -days 2 -subj /CN=unitwatch-test-ca 2>/dev/null
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext
         printf 'extendedKeyUsage=clientAuth\\n' > client.ext
         for who in server client; do
           openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
           openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
             -out $who.crt -days 2 -extfile $who.ext 2>/dev/null
         done
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout other.key -out other.crt -days 2 -subj /CN=other 2>/dev/null",
    );
}

/// What [`make_certs`] makes.
const FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
    "other.crt",
    "other.key",
];

/// A fresh directory with [`make_certs`]'s files in it: made once per test
/// binary and copied (openssl takes a quarter of a second for a set).
pub fn cert_dir(tag: &str) -> PathBuf {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    let made = MADE.get_or_init(|| {
        let dir = temp_dir("certs");
        make_certs(&dir);
        dir
    });
    let dir = temp_dir(tag);
    for file in FILES {
        std::fs::copy(made.join(file), dir.join(file))
            .unwrap_or_else(|e| panic!("copy {file} from {}: {e}", made.display()));
    }
    dir
}

/// A web configuration for a server in `dir` (where [`make_certs`] made the
/// certificates): TLS (the certificate named relative to the file, the key
/// by absolute path), `extra` lines in tls_server_config, user alice with
/// password s3cret hashed at bcrypt `cost`, and the response header
/// `X-Content-Type-Options: nosniff`.
pub fn web_config(dir: &Path, extra: &str, cost: u32) -> String {
    let hash = bcrypt::hash("s3cret", cost).expect("bcrypt hash");
    format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: {}/server.key\n{extra}\
         basic_auth_users:\n  alice: '{hash}'\n\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
        dir.display()
    )
}

/// `curl` with `args`; returns (HTTP status, headers and body); status 0
/// if curl itself failed (TLS errors), with curl's exit code in the text.
pub fn curl(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-sS", "-i", "--max-time", "20"];
    all.extend_from_slice(args);
    let out = run("curl", &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return (
            0,
            format!(
                "curl exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ),
        );
    }
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}
