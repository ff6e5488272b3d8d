//! The HTTP server's limits, as any user: slow and idle clients are cut
//! off, connections beyond the cap wait their turn, 200 connections over
//! TLS with basic auth run bcrypt at most twice (against the in-process
//! server: its log says how often bcrypt ran), and 200 connections scrape
//! for 30 s with wrk (against a unitwatch process, whose resident memory is
//! its own to measure).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::inproc::Server;
use common::tls::{cert_dir, web_config};
use common::unitwatch::{http_get, proc_status, temp_dir, Unitwatch};
use common::{wait_for, wrk};
use unitwatch::http::serve::{HEADER_TIMEOUT, MAX_CONNECTIONS};

/// Waiting two and a half times the header timeout for a connection to be
/// closed is a correctness bound, not a speed check.
const CLOSE_BOUND: Duration = Duration::from_secs(25);

/// Reads from `stream` until the server closes it (EOF or reset), for at
/// most [`CLOSE_BOUND`]; returns what arrived before.
fn await_close(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set read timeout");
    let mut got = Vec::new();
    wait_for(what, CLOSE_BOUND, || {
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => Some(()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                None
            }
            Err(e) if is_timeout(&e) => None,
            Err(_) => Some(()), // reset by the server
        }
    });
    got
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Slowloris: headers trickled a byte at a time never complete; the
/// connection is closed (header timeout, 10 s) without a response, and the
/// server keeps answering others meanwhile.
#[test]
fn slow_headers_are_cut_off() {
    let server = Server::start(&temp_dir("limits-slow"));
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("send half a request");
    let mut writer = stream.try_clone().expect("clone socket");
    // Keeps sending one more byte of the header every 200 ms until the
    // server closes the connection (pacing, not synchronisation).
    let trickle = std::thread::spawn(move || {
        for _ in 0..600 {
            if writer.write_all(b"a").is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    let (status, _) = http_get(&server.addr, "/healthz").expect("another client");
    assert_eq!(status, 503, "another client is served while one trickles");
    let got = await_close(&mut stream, "the server to close a trickling connection");
    assert!(
        got.is_empty(),
        "a response to an incomplete request: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        trickle.join().expect("trickle thread"),
        "the trickling client could write for two minutes"
    );
}

/// A keep-alive connection that goes quiet after a response is closed.
#[test]
fn idle_keep_alive_connection_is_closed() {
    let server = Server::start(&temp_dir("limits-idle"));
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send request");
    let got = await_close(&mut stream, "the server to close an idle connection");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "the server did not offer keep-alive: {text}"
    );
    assert!(text.contains("unitwatch_build_info"), "{text}");
}

/// A TLS port with a client that connects and says nothing: closed after
/// the handshake timeout.
#[test]
fn silent_tls_client_is_cut_off() {
    let dir = cert_dir("limits-silent");
    let server = Server::setup(&dir).web(&web_config(&dir, "", 4)).start();
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    let got = await_close(&mut stream, "the server to close a silent TLS connection");
    assert!(got.is_empty(), "{got:?}");
}

/// Makes sure this process may hold `n` more descriptors.
fn allow_descriptors(n: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < n + 256 {
            limit.rlim_cur = (n + 256).min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// With [`MAX_CONNECTIONS`] connections open (and silent), one more is
/// accepted by the kernel but not served; it is served as soon as one of
/// the others ends — before the others' header timeout frees theirs.
#[test]
fn a_connection_beyond_the_cap_waits_for_one_to_end() {
    // The server's ends are in this process too.
    allow_descriptors(2 * MAX_CONNECTIONS as u64 + 2);
    let server = Server::start(&temp_dir("limits-cap"));
    let opened = Instant::now();
    let mut held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|i| TcpStream::connect(&server.addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let mut over = TcpStream::connect(&server.addr).expect("connect beyond the cap");
    over.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .expect("send request");
    // A free slot answers within milliseconds on loopback.
    over.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("set read timeout");
    let mut buf = [0u8; 64];
    match over.read(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        other => panic!(
            "connection {} was served with {MAX_CONNECTIONS} open: {other:?}",
            MAX_CONNECTIONS + 1
        ),
    }
    drop(held.remove(0));
    over.set_read_timeout(Some(HEADER_TIMEOUT))
        .expect("set read timeout");
    let n = over
        .read(&mut buf)
        .expect("an answer once a connection ended");
    let answer = String::from_utf8_lossy(&buf[..n]);
    // No systemd here: /healthz says so.
    assert!(answer.starts_with("HTTP/1.0 503"), "{answer}");
    assert!(
        opened.elapsed() < HEADER_TIMEOUT,
        "served only after {:?}: when the held connections timed out, not when one ended",
        opened.elapsed()
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in /proc/PID/status")
}

/// After 200 concurrent connections scraping for 30 s, unitwatch stays
/// this small (KiB); see README.md, "HTTP and security".
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// How many units the load test's saved state holds.
const LOAD_UNITS: usize = 20;

/// A saved state (the first release's format) of [`LOAD_UNITS`] units
/// `aitbc-load{i}.service`, each restarted and failed a few times.
fn load_state() -> String {
    let units: Vec<String> = (0..LOAD_UNITS)
        .map(|i| {
            format!(
                r#""aitbc-load{i}.service":{{"seen_at":1700000000000000,"fold_at":1700000000000000,"fold_state":"active","up_usec":0,"down_usec":0,"points":{{"1700000050000000":"failed"}},"sub_state":"failed","n_restarts":{{"high":2,"high_at":1700000050000000,"epoch_at":0,"previous_high":null}},"restarts":[2,1],"failures":{{"exit-code":1}},"last_failure_at":1700000050000000,"failed_invocations":["x"],"restarted_invocations":[],"loaded":true}}"#
            )
        })
        .collect();
    format!(
        r#"{{"version":1,"saved_at":1700000100000000,"boot_id":"b","journal_cursor":null,"journal_from":1700000100000000,"ledger":{{"units":{{{}}}}}}}"#,
        units.join(",")
    )
}

/// 200 connections scrape /metrics of [`LOAD_UNITS`] units for 30 s
/// (wrk): no socket errors, no non-2xx answers, and unitwatch's memory
/// stays bounded. A process of its own, so that its memory is its own.
#[test]
fn load_200_connections_for_30_seconds() {
    let dir = temp_dir("limits-load");
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(dir.join("state").join("state.json"), load_state()).expect("write state");
    let uw = Unitwatch::setup(&dir)
        .watch("units = [\"aitbc-load*.service\"]")
        .start();
    uw.wait_value("unitwatch_units_watched", Duration::from_secs(15), |v| {
        v == LOAD_UNITS as f64
    });
    let pid = uw.pid().expect("unitwatch runs");
    println!("unitwatch VmRSS before the load: {} KiB", rss_kib(pid));
    wrk(
        &[
            "-c",
            "200",
            "-t",
            "2",
            "-d",
            "30s",
            "--timeout",
            "10s",
            &format!("http://{}/metrics", uw.addr),
        ],
        || uw.log(),
    );
    let rss = rss_kib(pid);
    println!("unitwatch VmRSS after the load: {rss} KiB");
    assert!(
        rss < RSS_BOUND_KIB,
        "VmRSS {rss} KiB after the load, bound {RSS_BOUND_KIB} KiB"
    );
    // Still serving, and still accounting.
    assert_eq!(uw.value("unitwatch_units_watched"), Some(LOAD_UNITS as f64));
}

/// TLS and basic auth (bcrypt cost 10, as recommended) under 200
/// connections opening at once: no errors, and the password is checked with
/// bcrypt at most twice (the concurrent checks), not once per connection or
/// request.
#[test]
fn bcrypt_runs_at_most_twice_for_200_tls_connections() {
    use base64::Engine;
    let dir = cert_dir("limits-tls-load");
    let server = Server::setup(&dir).web(&web_config(&dir, "", 10)).start();
    let auth = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    wrk(
        &[
            "-c",
            "200",
            "-t",
            "2",
            "-d",
            "10s",
            "--timeout",
            "10s",
            "-H",
            &auth,
            &server.url("https", "/metrics"),
        ],
        || server.log(),
    );
    let log = server.log();
    let checks = log.matches("checked a password with bcrypt").count();
    assert!(
        (1..=2).contains(&checks),
        "{checks} bcrypt checks for one user's 200 connections:\n{log}"
    );
}
