//! The HTTP server's security and limits: TLS and basic auth from
//! `--web.config.file` checked with real clients (curl, openssl s_client),
//! methods and paths, slow and idle clients, bad web configurations, and a
//! load test with wrk against unitwatch watching a real systemd.
//!
//! Only the load test needs systemd; the others run unitwatch without a bus
//! (its HTTP side works regardless).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::unitwatch::{free_port, http_get, temp_dir, Unitwatch};
use common::{try_wait_for, wait_for, Sandbox};

/// The documented header timeout is 10 s; waiting two and a half times as long for a
/// connection to be closed is a correctness bound, not a speed check.
const CLOSE_BOUND: Duration = Duration::from_secs(25);

/// unitwatch run without systemd, with an optional web config, stopped
/// with SIGTERM when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(dir: &Path, web: Option<&str>) -> Server {
        Server::start_via(dir, web, &[])
    }

    /// Like [`Server::start`], run through `wrapper` (a command that ends
    /// by executing its arguments).
    fn start_via(dir: &Path, web: Option<&str>, wrapper: &[&str]) -> Server {
        let config = write_config(dir);
        let port = free_port();
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_unitwatch"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_unitwatch")),
        };
        command
            .arg("--config")
            .arg(&config)
            .args(["--web.listen-address", &format!("127.0.0.1:{port}")]);
        if let Some(web) = web {
            let file = dir.join("web.yml");
            std::fs::write(&file, web).expect("write web config");
            command.arg("--web.config.file").arg(&file);
        }
        let log = std::fs::File::create(dir.join("unitwatch.log")).expect("log file");
        let child = command
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
            .env("RUST_LOG", "unitwatch=debug,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn unitwatch");
        let server = Server {
            child: Some(child),
            port,
            dir: dir.to_owned(),
        };
        wait_for(
            &format!("unitwatch to listen on port {port}"),
            Duration::from_secs(10),
            || TcpStream::connect(server.addr()).ok(),
        );
        server
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://localhost:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("unitwatch.log")).unwrap_or_default()
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits (bounded) for the process to exit by itself.
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = try_wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGTERM; waits for the exit.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = try_wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A config.toml in `dir` with state under `dir/state` and no backfill.
fn write_config(dir: &Path) -> PathBuf {
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[watch]\nunits = [\"aitbc-*.service\"]\n[state]\ndir = \"{}\"\n[journal]\nbackfill = \"0\"\n",
            dir.join("state").display()
        ),
    )
    .expect("write config");
    file
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} (scripts/setup installs it): {e}"))
}

/// `sh -c script` in `dir`; panics with its output if it fails.
fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, all made by openssl in `dir`: ca.crt, server.{crt,key},
/// client.{crt,key}.
fn make_certs(dir: &Path) {
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
         done",
    );
}

/// `curl` with `args`; returns (HTTP status, headers and body); status 0
/// if curl itself failed (TLS errors), with curl's exit code in the text.
fn curl(args: &[&str]) -> (u16, String) {
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
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                None
            }
            Err(_) => Some(()), // reset by the server
        }
    });
    got
}

fn tls_config(dir: &Path, extra: &str) -> String {
    tls_config_cost(dir, extra, 4)
}

/// TLS from [`make_certs`], user alice with password s3cret hashed at
/// bcrypt `cost`, a header, and `extra` lines in tls_server_config.
fn tls_config_cost(dir: &Path, extra: &str, cost: u32) -> String {
    let hash = bcrypt::hash("s3cret", cost).expect("bcrypt hash");
    format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: {}/server.key\n{extra}\
         basic_auth_users:\n  alice: '{hash}'\n\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
        dir.display()
    )
}

/// TLS with basic auth, as curl and openssl s_client see it; relative paths
/// are taken from the web config's directory.
#[test]
fn tls_and_basic_auth_with_real_clients() {
    let dir = temp_dir("web-tls");
    make_certs(&dir);
    let server = Server::start(&dir, Some(&tls_config(&dir, "  min_version: TLS13\n")));
    let ca = dir.join("ca.crt").display().to_string();
    let metrics = server.url("https", "/metrics");

    // Right password: the metrics, with the configured header.
    let (status, text) = curl(&["--cacert", &ca, "-u", "alice:s3cret", &metrics]);
    assert_eq!(status, 200, "{text}\nlog:\n{}", server.log());
    assert!(text.contains("unitwatch_build_info"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{text}"
    );
    // Twice more (the second and third are answered from the cache).
    for _ in 0..2 {
        let (status, text) = curl(&["--cacert", &ca, "-u", "alice:s3cret", &metrics]);
        assert_eq!(status, 200, "{text}");
    }

    // Wrong password, unknown user, no credentials: 401 with a challenge.
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
    // Auth comes before routing: an unknown path is 401 without credentials.
    let (status, _) = curl(&["--cacert", &ca, &server.url("https", "/nope")]);
    assert_eq!(status, 401);
    // With them: GET and HEAD only, on known paths only.
    let auth = ["--cacert", ca.as_str(), "-u", "alice:s3cret"];
    let (status, text) = curl(&[&auth[..], &[&server.url("https", "/nope")]].concat());
    assert_eq!(status, 404, "{text}");
    let (status, text) = curl(&[&auth[..], &["-X", "POST", &metrics]].concat());
    assert_eq!(status, 405, "{text}");
    let (status, text) = curl(&[&auth[..], &["-I", &metrics]].concat());
    assert_eq!(status, 200, "{text}");

    // A client that does not trust the certificate refuses it.
    let (status, text) = curl(&["-u", "alice:s3cret", &metrics]);
    assert_eq!(status, 0, "{text}");
    assert!(text.contains("curl exit Some(60)"), "{text}");

    // openssl s_client: verified TLS 1.3, a request through it; TLS 1.2 is
    // refused because of min_version.
    let request = format!(
        "printf 'GET /healthz HTTP/1.0\\r\\nAuthorization: Basic %s\\r\\n\\r\\n' \"$(printf alice:s3cret | base64)\" \
         | openssl s_client -connect {} -servername localhost -CAfile {ca} -verify_return_error -ign_eof 2>&1",
        server.addr()
    );
    let out = run("sh", &["-c", &request]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    // No systemd here: healthz says so, over TLS and past auth.
    assert!(text.contains("HTTP/1.0 503"), "{text}");
    let out = run(
        "sh",
        &[
            "-c",
            &format!(
                "openssl s_client -connect {} -CAfile {ca} -tls1_2 </dev/null 2>&1",
                server.addr()
            ),
        ],
    );
    assert!(
        !out.status.success(),
        "TLS 1.2 accepted despite min_version TLS13: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Plain HTTP on the TLS port: a clear 400, then the connection ends.
    let (status, body) = http_get(&server.addr(), "/metrics").expect("plain GET");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");
}

/// client_auth_type RequireAndVerifyClientCert: only clients with a
/// certificate from client_ca_file get through the handshake.
#[test]
fn client_certificates_are_required_when_configured() {
    let dir = temp_dir("web-mtls");
    make_certs(&dir);
    let web = tls_config(
        &dir,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    );
    let server = Server::start(&dir, Some(&web));
    let ca = dir.join("ca.crt").display().to_string();
    let cert = dir.join("client.crt").display().to_string();
    let key = dir.join("client.key").display().to_string();
    let metrics = server.url("https", "/metrics");
    let (status, text) = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "-u",
        "alice:s3cret",
        &metrics,
    ]);
    assert_eq!(status, 200, "{text}\nlog:\n{}", server.log());
    let (status, text) = curl(&["--cacert", &ca, "-u", "alice:s3cret", &metrics]);
    assert_eq!(status, 0, "no client certificate, yet: {text}");
    // A self-signed client certificate from elsewhere is refused too.
    let (status, text) = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &dir.join("ca.crt").display().to_string(),
        "--key",
        &dir.join("ca.key").display().to_string(),
        "-u",
        "alice:s3cret",
        &metrics,
    ]);
    assert_eq!(status, 0, "a certificate not from client_ca_file: {text}");
}

/// Slowloris: headers trickled a byte at a time never complete; the
/// connection is closed (header timeout, 10 s) without a response, and the
/// server keeps answering others meanwhile.
#[test]
fn slow_headers_are_cut_off() {
    let dir = temp_dir("web-slow");
    let server = Server::start(&dir, None);
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
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
    let (status, _) = http_get(&server.addr(), "/healthz").expect("another client");
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
    let dir = temp_dir("web-idle");
    let server = Server::start(&dir, None);
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
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
    let dir = temp_dir("web-silent");
    make_certs(&dir);
    let server = Server::start(&dir, Some(&tls_config(&dir, "")));
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    let got = await_close(&mut stream, "the server to close a silent TLS connection");
    assert!(got.is_empty(), "{got:?}");
}

/// The line `Field:` of /proc/PID/status, without the name.
fn proc_status(pid: u32, field: &str) -> String {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The paths that the system calls in strace's `trace` changed (created,
/// opened for writing, renamed, removed, ...), as strace quoted them.
fn written_paths(trace: &str) -> Vec<String> {
    const WRITING: &[&str] = &[
        "mkdir", "rename", "unlink", "rmdir", "link", "symlink", "chmod", "chown", "truncate",
        "utime", "mknod", "creat",
    ];
    let mut paths = Vec::new();
    for line in trace.lines() {
        // "PID  call(args) = result"
        let Some((call, args)) = line
            .split_once(char::is_whitespace)
            .and_then(|(_, rest)| rest.trim_start().split_once('('))
        else {
            continue;
        };
        let opens_for_writing = (call == "open" || call == "openat")
            && ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                .iter()
                .any(|f| args.contains(f));
        if !(opens_for_writing || WRITING.iter().any(|w| call.starts_with(w))) {
            continue;
        }
        paths.extend(args.split('"').skip(1).step_by(2).map(str::to_owned));
    }
    paths
}

/// As user nobody with no capabilities at all, unitwatch serves TLS with
/// basic auth, and from start to exit writes nothing outside its state
/// directory (every file system call traced with strace).
#[test]
fn runs_unprivileged_and_writes_only_its_state() {
    use std::os::unix::fs::{chown, MetadataExt};
    const NOBODY: u32 = 65534;
    let dir = temp_dir("web-unpriv");
    make_certs(&dir);
    // What a deployment does: the key readable by unitwatch's user, the
    // state directory its own.
    chown(dir.join("server.key"), Some(NOBODY), Some(NOBODY)).expect("chown key");
    let state = dir.join("state");
    std::fs::create_dir(&state).expect("state dir");
    chown(&state, Some(NOBODY), Some(NOBODY)).expect("chown state dir");
    let trace = dir.join("syscalls.trace");
    let trace_arg = trace.display().to_string();
    let mut server = Server::start_via(
        &dir,
        Some(&tls_config(&dir, "")),
        &[
            "strace",
            "-f",
            "-qq",
            "-s",
            "4096",
            "-e",
            "trace=%file",
            "-o",
            &trace_arg,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ],
    );
    // strace's child is unitwatch (setpriv executed it).
    let strace = server.pid().expect("running");
    let pid: u32 = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .expect("children of strace")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("strace has a child");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe of strace's child");
    assert!(exe.ends_with("unitwatch"), "{}", exe.display());
    assert!(
        proc_status(pid, "Uid").starts_with("65534"),
        "{}",
        proc_status(pid, "Uid")
    );
    for caps in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status(pid, caps), "0000000000000000", "{caps}");
    }

    let ca = dir.join("ca.crt").display().to_string();
    let metrics = server.url("https", "/metrics");
    let (status, text) = curl(&["--cacert", &ca, "-u", "alice:s3cret", &metrics]);
    assert_eq!(status, 200, "{text}\nlog:\n{}", server.log());
    let (status, _) = curl(&["--cacert", &ca, &metrics]);
    assert_eq!(status, 401);

    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let exit = server
        .wait_exit()
        .expect("unitwatch exits on SIGTERM (strace with it)");
    assert_eq!(exit.code(), Some(0), "log:\n{}", server.log());
    let saved = state.join("state.json");
    let meta = std::fs::metadata(&saved)
        .unwrap_or_else(|e| panic!("{}: {e}\nlog:\n{}", saved.display(), server.log()));
    assert_eq!(meta.uid(), NOBODY, "state written by nobody");

    let trace = std::fs::read_to_string(&trace).expect("read the trace");
    let written = written_paths(&trace);
    assert!(
        written.iter().any(|p| p.ends_with("state.json")),
        "the trace shows no write of the state file; is it complete?\n{trace}"
    );
    let outside: Vec<&String> = written
        .iter()
        .filter(|p| !Path::new(p).starts_with(&state))
        .collect();
    assert!(
        outside.is_empty(),
        "writes outside {}: {outside:?}",
        state.display()
    );
}

/// Bad web configurations: one line naming file, line, column and key,
/// exit status 1, nothing started (no state directory, no log).
#[test]
fn bad_web_config_is_one_line_and_nothing_starts() {
    let dir = temp_dir("web-bad");
    make_certs(&dir);
    let config = write_config(&dir);
    let good_hash = bcrypt::hash("x", 4).expect("bcrypt hash");
    let cases = [
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cert_fil: x\n",
            "4:3: tls_server_config.cert_fil: unknown field",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n   key_file: y\n",
            "3:12: tls_server_config: mapping values are not allowed",
        ),
        (
            "# TLS\ntls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
            "3:3: tls_server_config.cert_file: ",
        ),
        (
            &format!("basic_auth_users:\n  alice: '{good_hash}'\n  bob: hunter2\n"),
            "3:8: basic_auth_users.bob: not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
            "3:3: tls_server_config.key_file: ",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let file = dir.join(format!("web-{i}.yml"));
        std::fs::write(&file, yaml).expect("write web config");
        let want = format!("{}:{want}", file.display());
        let port = free_port();
        let out = run(
            env!("CARGO_BIN_EXE_unitwatch"),
            &[
                "--config",
                &config.display().to_string(),
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
                "--web.config.file",
                &file.display().to_string(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{yaml}: {err}");
        assert_eq!(err.lines().count(), 1, "{yaml}: {err}");
        assert!(err.starts_with(&format!("unitwatch: {want}")), "{err}");
        assert!(
            !dir.join("state").exists(),
            "a state directory was made: something started"
        );
        let check = run(
            env!("CARGO_BIN_EXE_unitwatch"),
            &["check-web-config", &file.display().to_string()],
        );
        let check_err = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(1), "{check_err}");
        assert!(
            check_err.starts_with(&format!("unitwatch: {want}")),
            "{check_err}"
        );
    }
    // Named by `server.web_config` in config.toml instead: checked by
    // check-config and at start alike.
    let with_key = dir.join("with-web.toml");
    std::fs::write(
        &with_key,
        format!(
            "[server]\nweb_config = \"{}\"\n{}",
            dir.join("web-3.yml").display(),
            std::fs::read_to_string(&config).expect("read config")
        ),
    )
    .expect("write config");
    let want = format!(
        "{}:3:8: basic_auth_users.bob:",
        dir.join("web-3.yml").display()
    );
    for args in [
        vec!["check-config".to_owned(), with_key.display().to_string()],
        vec!["--config".to_owned(), with_key.display().to_string()],
    ] {
        let out = run(
            env!("CARGO_BIN_EXE_unitwatch"),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    // The missing certificate's message names the resolved path.
    let err = String::from_utf8_lossy(
        &run(
            env!("CARGO_BIN_EXE_unitwatch"),
            &[
                "check-web-config",
                &dir.join("web-2.yml").display().to_string(),
            ],
        )
        .stderr,
    )
    .into_owned();
    assert!(
        err.contains(&dir.join("missing.crt").display().to_string()),
        "{err}"
    );
    // A web config that is not there at all.
    let out = run(
        env!("CARGO_BIN_EXE_unitwatch"),
        &["check-web-config", "/nonexistent/web.yml"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("unitwatch: /nonexistent/web.yml: cannot read: "));
    // And a good one passes.
    std::fs::write(dir.join("good.yml"), tls_config(&dir, "")).expect("write");
    let out = run(
        env!("CARGO_BIN_EXE_unitwatch"),
        &[
            "check-web-config",
            &dir.join("good.yml").display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Resident memory of a process, in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in /proc/PID/status")
}

/// Runs wrk with `args`; returns its report after checking it made
/// requests, none failed at the socket level and all got 2xx.
fn wrk(args: &[&str], log: impl Fn() -> String) -> String {
    let out = run("wrk", args);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's report:\n{report}"));
    assert!(requests > 0, "{report}");
    assert!(
        !report.contains("Socket errors"),
        "socket errors under load:\n{report}\nlog:\n{}",
        log()
    );
    assert!(
        !report.contains("Non-2xx"),
        "non-2xx answers under load:\n{report}"
    );
    report
}

/// After 200 concurrent connections scraping for 30 s, unitwatch stays
/// this small (KiB); see README.md, "HTTP and security".
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// 200 connections scrape /metrics for 30 s (wrk): no socket errors, no
/// non-2xx answers, and memory stays bounded.
#[test]
fn load_200_connections_for_30_seconds() {
    let sb = Sandbox::start();
    for i in 0..20 {
        sb.write_unit(
            &format!("aitbc-load{i}.service"),
            "[Service]\nExecStart=/bin/sleep infinity\n",
        );
    }
    sb.daemon_reload();
    sb.sh("for i in $(seq 0 19); do systemctl start aitbc-load$i.service; done");
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-load*.service\"]");
    uw.wait_value("unitwatch_units_watched", Duration::from_secs(15), |v| {
        v >= 20.0
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
    assert_eq!(uw.value("unitwatch_units_watched"), Some(20.0));
}

/// TLS and basic auth (bcrypt cost 10, as recommended) under 200
/// connections opening at once: no errors, and the password is checked with
/// bcrypt at most twice (the concurrent checks), not once per connection or
/// request.
#[test]
fn tls_with_basic_auth_under_load() {
    use base64::Engine;
    let dir = temp_dir("web-tls-load");
    make_certs(&dir);
    let server = Server::start(&dir, Some(&tls_config_cost(&dir, "", 10)));
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
