//! unitwatch as user nobody with no capabilities at all: it serves TLS with
//! basic auth and, from start to exit, writes nothing outside its state
//! directory (every file system call traced with strace). A process of its
//! own, started by root through setpriv: this test needs root.

mod common;

use std::os::unix::fs::{chown, MetadataExt};
use std::path::Path;
use std::time::Duration;

use common::tls::{cert_dir, curl, web_config};
use common::unitwatch::{proc_status, terminate, Unitwatch};

const NOBODY: u32 = 65534;

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

#[test]
fn runs_unprivileged_and_writes_only_its_state() {
    require_root!("to start unitwatch as nobody (setpriv) and trace it (strace)");
    let dir = cert_dir("unpriv");
    // What a deployment does: the key readable by unitwatch's user, the
    // state directory its own.
    chown(dir.join("server.key"), Some(NOBODY), Some(NOBODY)).expect("chown key");
    let state = dir.join("state");
    std::fs::create_dir(&state).expect("state dir");
    chown(&state, Some(NOBODY), Some(NOBODY)).expect("chown state dir");
    let trace = dir.join("syscalls.trace");
    let trace_arg = trace.display().to_string();
    let mut uw = Unitwatch::setup(&dir)
        .web(&web_config(&dir, "", 4))
        .via(&[
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
        ])
        .start();
    // strace's child is unitwatch (setpriv executed it).
    let strace = uw.pid().expect("running");
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
    let metrics = uw.url("https", "/metrics");
    let (status, text) = curl(&["--cacert", &ca, "-u", "alice:s3cret", &metrics]);
    assert_eq!(status, 200, "{text}\nlog:\n{}", uw.log());
    let (status, _) = curl(&["--cacert", &ca, &metrics]);
    assert_eq!(status, 401);

    terminate(pid);
    let exit = uw
        .wait_exit(Duration::from_secs(10))
        .expect("unitwatch exits on SIGTERM (strace with it)");
    assert_eq!(exit.code(), Some(0), "log:\n{}", uw.log());
    let saved = state.join("state.json");
    let meta = std::fs::metadata(&saved)
        .unwrap_or_else(|e| panic!("{}: {e}\nlog:\n{}", saved.display(), uw.log()));
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
