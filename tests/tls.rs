//! TLS and basic auth from the web configuration, checked with real
//! clients (curl, openssl s_client) against the in-process server, as any
//! user: credentials, the order of auth and routing, certificate trust,
//! protocol versions, client certificates, plain HTTP on a TLS port. Under
//! load: tests/limits.rs.

mod common;

use std::path::{Path, PathBuf};

use common::inproc::Server;
use common::run;
use common::tls::{cert_dir, curl, web_config};
use common::unitwatch::http_get;

/// A server with TLS and basic auth (see [`web_config`]), `extra` lines in
/// tls_server_config, in a fresh directory with certificates; and that
/// directory.
fn tls_server(tag: &str, extra: &str) -> (Server, PathBuf) {
    let dir = cert_dir(tag);
    let server = Server::setup(&dir).web(&web_config(&dir, extra, 4)).start();
    (server, dir)
}

fn ca(dir: &Path) -> String {
    dir.join("ca.crt").display().to_string()
}

/// The right password: the metrics, with the configured header; the same
/// again (answered from the cache of checked credentials).
#[test]
fn the_right_password_gets_the_metrics_with_the_configured_header() {
    let (server, dir) = tls_server("tls-ok", "");
    let metrics = server.url("https", "/metrics");
    for _ in 0..3 {
        let (status, text) = curl(&["--cacert", &ca(&dir), "-u", "alice:s3cret", &metrics]);
        assert_eq!(status, 200, "{text}\nlog:\n{}", server.log());
        assert!(text.contains("unitwatch_build_info"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("x-content-type-options: nosniff"),
            "{text}"
        );
    }
}

/// Wrong password, unknown user, no credentials: 401 with a challenge.
#[test]
fn wrong_unknown_or_no_credentials_are_challenged() {
    let (server, dir) = tls_server("tls-401", "");
    let ca = ca(&dir);
    let metrics = server.url("https", "/metrics");
    for creds in [
        &["-u", "alice:wrong"][..],
        &["-u", "mallory:s3cret"][..],
        &[][..],
    ] {
        let mut args = vec!["--cacert", ca.as_str()];
        args.extend_from_slice(creds);
        args.push(&metrics);
        let (status, text) = curl(&args);
        assert_eq!(status, 401, "{creds:?}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"unitwatch\""),
            "{creds:?}: {text}"
        );
    }
}

/// An unknown path is 401 without credentials, 404 only with them.
#[test]
fn auth_comes_before_routing() {
    let (server, dir) = tls_server("tls-route", "");
    let ca = ca(&dir);
    let nope = server.url("https", "/nope");
    let (status, text) = curl(&["--cacert", &ca, &nope]);
    assert_eq!(status, 401, "{text}");
    let (status, text) = curl(&["--cacert", &ca, "-u", "alice:s3cret", &nope]);
    assert_eq!(status, 404, "{text}");
}

/// Past auth, GET and HEAD only.
#[test]
fn past_auth_only_get_and_head_are_served() {
    let (server, dir) = tls_server("tls-methods", "");
    let auth = ["--cacert", &ca(&dir), "-u", "alice:s3cret"];
    let metrics = server.url("https", "/metrics");
    let (status, text) = curl(&[&auth[..], &["-X", "POST", &metrics]].concat());
    assert_eq!(status, 405, "{text}");
    let (status, text) = curl(&[&auth[..], &["-I", &metrics]].concat());
    assert_eq!(status, 200, "{text}");
}

/// A client that does not trust the certificate refuses it (curl: 60).
#[test]
fn a_client_without_the_ca_refuses_the_certificate() {
    let (server, _dir) = tls_server("tls-untrusted", "");
    let (status, text) = curl(&["-u", "alice:s3cret", &server.url("https", "/metrics")]);
    assert_eq!(status, 0, "{text}");
    assert!(text.contains("curl exit Some(60)"), "{text}");
}

/// openssl s_client: the certificate verifies, TLS 1.3 is spoken, and a
/// request goes through auth (no systemd here: /healthz says so, 503).
#[test]
fn openssl_verifies_the_server_and_passes_a_request() {
    let (server, dir) = tls_server("tls-openssl", "  min_version: TLS13\n");
    let request = format!(
        "printf 'GET /healthz HTTP/1.0\\r\\nAuthorization: Basic %s\\r\\n\\r\\n' \"$(printf alice:s3cret | base64)\" \
         | openssl s_client -connect {} -servername localhost -CAfile {} -verify_return_error -ign_eof 2>&1",
        server.addr,
        ca(&dir)
    );
    let out = run("sh", &["-c", &request]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("HTTP/1.0 503"), "{text}");
}

/// min_version TLS13: a TLS 1.2 client gets no session.
#[test]
fn tls12_is_refused_below_min_version() {
    let (server, dir) = tls_server("tls-min", "  min_version: TLS13\n");
    let out = run(
        "sh",
        &[
            "-c",
            &format!(
                "openssl s_client -connect {} -CAfile {} -tls1_2 </dev/null 2>&1",
                server.addr,
                ca(&dir)
            ),
        ],
    );
    assert!(
        !out.status.success(),
        "TLS 1.2 accepted despite min_version TLS13: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Plain HTTP on the TLS port: a clear 400, then the connection ends.
#[test]
fn plain_http_on_the_tls_port_is_a_clear_400() {
    let (server, _dir) = tls_server("tls-plain", "");
    let (status, body) = http_get(&server.addr, "/metrics").expect("plain GET");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");
}

const REQUIRE_CLIENT_CERT: &str =
    "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n";

/// client_auth_type RequireAndVerifyClientCert: a client with a
/// certificate from client_ca_file gets through the handshake.
#[test]
fn a_client_certificate_from_the_client_ca_gets_through() {
    let (server, dir) = tls_server("tls-mtls", REQUIRE_CLIENT_CERT);
    let path = |name: &str| dir.join(name).display().to_string();
    let (status, text) = curl(&[
        "--cacert",
        &ca(&dir),
        "--cert",
        &path("client.crt"),
        "--key",
        &path("client.key"),
        "-u",
        "alice:s3cret",
        &server.url("https", "/metrics"),
    ]);
    assert_eq!(status, 200, "{text}\nlog:\n{}", server.log());
}

/// With a client certificate required, none, or one not from
/// client_ca_file, fails the handshake.
#[test]
fn no_client_certificate_or_a_foreign_one_is_refused() {
    let (server, dir) = tls_server("tls-mtls-no", REQUIRE_CLIENT_CERT);
    let path = |name: &str| dir.join(name).display().to_string();
    let metrics = server.url("https", "/metrics");
    let (status, text) = curl(&["--cacert", &ca(&dir), "-u", "alice:s3cret", &metrics]);
    assert_eq!(status, 0, "no client certificate, yet: {text}");
    let (status, text) = curl(&[
        "--cacert",
        &ca(&dir),
        "--cert",
        &path("other.crt"),
        "--key",
        &path("other.key"),
        "-u",
        "alice:s3cret",
        &metrics,
    ]);
    assert_eq!(status, 0, "a certificate not from client_ca_file: {text}");
}
