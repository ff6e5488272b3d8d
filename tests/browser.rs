//! The status page in a real browser: Debian's chromium, headless, loads it
//! from unitwatch following a real systemd, after one unit was stopped and
//! another crashed twice. The rendered rows and badges are checked, and
//! screenshots (desktop and phone width) are saved to `target/artifacts/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::shipped::root;
use common::unitwatch::{http_get, temp_dir, Unitwatch};
use common::wait_for;

const WAIT: Duration = Duration::from_secs(30);
const API: &str = "aitbc-coordinator-api.service";
const NODE: &str = "aitbc-blockchain-node.service";
const MARKET: &str = "aitbc-marketplace.service";

/// Fails twice (exit 1, restarted by systemd), then keeps running.
const FAILS_TWICE: &str =
    "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\nRestartSec=200ms\n\
     ExecStart=/bin/sh -c 'f=/run/market.count; c=$$(cat $$f 2>/dev/null || echo 0); \
     echo $$((c+1)) > $$f; [ $$c -ge 2 ] && exec sleep infinity; sleep 0.5; exit 1'\n";

/// Runs headless chromium with `args` on `url`; its stdout.
fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<tr ...>` start tag of `unit`'s row and the row up to its end.
fn row<'a>(dom: &'a str, unit: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr id=\"{unit}\""))
        .unwrap_or_else(|| panic!("no row for {unit} in the rendered page:\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

fn artifacts() -> PathBuf {
    let dir = root().join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("target/artifacts");
    dir
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} is not a screenshot ({} bytes)",
        path.display(),
        bytes.len()
    );
}

#[test]
fn status_page_renders_rows_and_badges_in_chromium() {
    let sb = sandbox!();
    for unit in [API, NODE] {
        sb.write_unit(unit, "[Service]\nExecStart=/bin/sleep infinity\n");
    }
    sb.write_unit(MARKET, FAILS_TWICE);
    sb.daemon_reload();
    sb.systemctl(&["start", API, NODE]);
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]");
    sb.systemctl(&["start", "--no-block", MARKET]);
    wait_for("the marketplace to settle after 2 restarts", WAIT, || {
        (sb.show(MARKET, "NRestarts") == "2" && sb.show(MARKET, "SubState") == "running")
            .then_some(())
    });
    sb.systemctl(&["stop", NODE]);
    let url = format!("http://{}/", uw.addr);
    wait_for("the page to show the stop and the restarts", WAIT, || {
        let (_, html) = http_get(&uw.addr, "/").ok()?;
        (row(&html, NODE).contains("data-state=\"inactive\"")
            && row(&html, MARKET).contains("<td class=\"num restarts\">2</td>")
            && row(&html, MARKET).contains("data-state=\"active\""))
        .then_some(())
    });

    let profile = temp_dir("chromium");
    let dom = chromium(&profile, &["--dump-dom"], &url);
    assert_eq!(dom.matches("<tr id=").count(), 3, "three rows:\n{dom}");
    let api = row(&dom, API);
    assert!(
        api.contains("<span class=\"badge up\">active</span>"),
        "{api}"
    );
    assert!(api.contains("100.00%"), "{api}");
    let node = row(&dom, NODE);
    assert!(
        node.contains("<span class=\"badge idle\">inactive</span>"),
        "{node}"
    );
    let market = row(&dom, MARKET);
    assert!(
        market.contains("<span class=\"badge up\">active</span>"),
        "{market}"
    );
    assert!(
        market.contains("<td class=\"num restarts\">2</td>"),
        "{market}"
    );
    // Its timeline has red or grey stretches, or stretches of changes too
    // close to draw one by one (striped, titled with how many): the runs
    // that failed.
    assert!(
        market.contains("<span class=\"down\"")
            || market.contains("<span class=\"idle\"")
            || market.contains("<span class=\"busy\""),
        "{market}"
    );
    assert!(dom.contains("2 of 3 up"), "{dom}");

    let desktop = artifacts().join("status-page.png");
    let phone = artifacts().join("status-page-phone.png");
    for (path, size) in [(&desktop, "1280,560"), (&phone, "390,700")] {
        let _ = std::fs::remove_file(path);
        chromium(
            &profile,
            &[
                &format!("--screenshot={}", path.display()),
                &format!("--window-size={size}"),
            ],
            &url,
        );
        assert_png(path);
    }
    let _ = std::fs::remove_dir_all(&profile);
}
