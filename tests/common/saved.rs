//! Saved states to start the in-process server from, written as unitwatch
//! writes `state.json`: what the tests of the API, the status page and
//! `unitwatch status` read without systemd, as any user.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::unitwatch::temp_dir;

/// The job of [`with_job`].
pub const JOB: &str = "backup.service";
/// The service of [`with_job`].
pub const SERVICE: &str = "web.service";

const S: u64 = 1_000_000;
const MINUTE: u64 = 60 * S;

/// Times of [`with_job`]'s state, µs since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct JobTimes {
    /// When the state was saved: the tests' now, near enough.
    pub now: u64,
    /// The first run: 90 minutes before `now`, 3 s long, a success.
    pub first_start: u64,
    pub first_end: u64,
    /// The second and last: 30 minutes before `now`, 1.5 s long, `exit-code`.
    pub last_start: u64,
    pub last_end: u64,
    /// The timer's next elapse: 30 minutes after `now`.
    pub next_run: u64,
}

impl JobTimes {
    fn now() -> JobTimes {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let first_start = now - 90 * MINUTE;
        let last_start = now - 30 * MINUTE;
        JobTimes {
            now,
            first_start,
            first_end: first_start + 3 * S,
            last_start,
            last_end: last_start + 3 * S / 2,
            next_run: now + 30 * MINUTE,
        }
    }
}

/// A fresh directory whose state, saved in this boot, holds, watched for
/// two hours, [`SERVICE`] (up all along) and [`JOB`] (a job on `backup.timer`, which ran twice:
/// see [`JobTimes`]); and its times.
pub fn with_job(tag: &str) -> (PathBuf, JobTimes) {
    let dir = temp_dir(tag);
    let t = JobTimes::now();
    write(&dir, &state(&t));
    (dir, t)
}

fn write(dir: &Path, state: &str) {
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(dir.join("state").join("state.json"), state).expect("write state");
}

fn state(t: &JobTimes) -> String {
    let seen = t.now - 120 * MINUTE;
    let service = format!(
        r#""{SERVICE}":{{"seen_at":{seen},"fold_at":{seen},"fold_state":"active","up_usec":0,"down_usec":0,"points":{{}},"sub_state":"running","n_restarts":null,"restarts":[0,0],"failures":{{}},"last_failure_at":0,"failed_invocations":[],"restarted_invocations":[],"loaded":true}}"#
    );
    let job = format!(
        r#""{JOB}":{{"seen_at":{seen},"fold_at":{seen},"fold_state":"inactive","up_usec":0,"down_usec":0,"points":{{"{fs}":"activating","{fe}":"inactive","{ls}":"activating","{le}":"failed"}},"sub_state":"failed","n_restarts":null,"restarts":[0,0],"failures":{{"exit-code":1}},"last_failure_at":{le},"last_failure_result":"exit-code","failed_invocations":["r2"],"restarted_invocations":[],"loaded":true,"kind":"job","runs":{{"last_start":{ls},"last":{{"start":{ls},"end":{le},"result":4}},"last_success":{fe},"results":{{"success":1,"exit-code":1}},"log":[{{"start":{fs},"end":{fe},"result":0}},{{"start":{ls},"end":{le},"result":4}}]}},"timer":{{"name":"backup.timer","last_trigger":{ls},"next_elapse":{next}}}}}"#,
        fs = t.first_start,
        fe = t.first_end,
        ls = t.last_start,
        le = t.last_end,
        next = t.next_run,
    );
    format!(
        r#"{{"version":1,"saved_at":{now},"boot_id":"{boot}","journal_cursor":null,"journal_from":{now},"ledger":{{"units":{{{service},{job}}}}}}}"#,
        now = t.now,
        boot = boot_id(),
    )
}

/// This boot's id, as unitwatch writes it: a state saved in another boot
/// would have the host go down since, and the service with it.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().replace('-', ""))
        .unwrap_or_default()
}
