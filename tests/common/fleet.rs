//! A private test network for fleet tests: a bridge in a network namespace
//! of its own ([`Bridge`]), one veth pair into each sandbox's namespace with
//! an address on 10.77.0.0/24, links that can be cut and restored; and the
//! metrics engines the test runs in the bridge's namespace ([`Daemon`]),
//! queried there over loopback ([`Bridge::query`]). Nothing outside that
//! network is contacted. Everything is removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use super::Sandbox;

/// The test network's prefix; host `i` is `10.77.0.{i}`, the bridge `.254`.
pub const NET: &str = "10.77.0";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace holding bridge `br0`; deleted (with its veths) when dropped.
pub struct Bridge {
    ns: String,
}

impl Bridge {
    pub fn new() -> Bridge {
        let ns = format!("unitwatch-fleet-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(Command::new("ip").args(["netns", "add", &ns]));
        let bridge = Bridge { ns };
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "br0", "type", "bridge"],
            &["addr", "add", &format!("{NET}.254/24"), "dev", "br0"],
            &["link", "set", "br0", "up"],
        ] {
            bridge.ip(args);
        }
        bridge
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", &self.ns]).args(args));
    }

    /// Connects `sb` as host `i`: its `eth0` gets `10.77.0.{i}/24`.
    pub fn attach(&self, sb: &Sandbox, i: u8) {
        let veth = format!("vh{i}");
        let pid = sb.pid().to_string();
        self.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ]);
        self.ip(&["link", "set", &veth, "master", "br0", "up"]);
        sb.sh(&format!(
            "ip addr add {NET}.{i}/24 dev eth0 && ip link set eth0 up"
        ));
    }

    /// Cuts (`false`) or restores (`true`) host `i`'s link.
    pub fn link(&self, i: u8, up: bool) {
        self.ip(&[
            "link",
            "set",
            &format!("vh{i}"),
            if up { "up" } else { "down" },
        ]);
    }

    /// A command run in the bridge's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// GET `url` (on loopback in the bridge's namespace) as JSON, or `None`.
    pub fn get(&self, url: &str) -> Option<Value> {
        let out = self
            .command("curl")
            .args(["-sf", "--max-time", "5", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// An instant query against the Prometheus HTTP API at `base`: the
    /// result vector as (labels, value) pairs, or `None` if it failed.
    pub fn query(&self, base: &str, promql: &str) -> Option<Vec<(Value, f64)>> {
        let out = self
            .command("curl")
            .args(["-sf", "--max-time", "5", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("{base}/api/v1/query"))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let result = v["data"]["result"].as_array()?;
        Some(
            result
                .iter()
                .filter_map(|r| {
                    let value = r["value"][1].as_str()?.parse().ok()?;
                    Some((r["metric"].clone(), value))
                })
                .collect(),
        )
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A process the test started in the bridge's namespace; killed (by its
/// own PID) when dropped. Its output goes to `log`.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(bridge: &Bridge, program: &str, args: &[String], log: &Path) -> Daemon {
        let file = std::fs::File::create(log).expect("daemon log");
        let err = file.try_clone().expect("daemon log");
        let child = bridge
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Daemon {
            child,
            log: log.to_owned(),
        }
    }

    /// The last lines of its log, for failure messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
