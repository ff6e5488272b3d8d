//! Times and durations written for people: UTC timestamps and short
//! durations, shared by the status page and `unitwatch status`.

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(unix_seconds: f64) -> String {
    let secs = unix_seconds.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Unix seconds as `HH:MM` (UTC).
pub fn clock(unix_seconds: f64) -> String {
    let rem = (unix_seconds.max(0.0) as i64).rem_euclid(86_400);
    format!("{:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

/// A duration as its two largest units: `3d 4h`, `2h 5m`, `4m 12s`, `9s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let (d, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A run's duration: to a hundredth of a second under 1 s, a tenth under
/// 10 s, else as [`duration`]: `0.31s`, `3.2s`, `4m 12s`.
pub fn run_time(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 1.0 {
        format!("{s:.2}s")
    } else if s < 10.0 {
        format!("{s:.1}s")
    } else {
        duration(s)
    }
}

/// How far the moment `at` is from `now` (Unix seconds): `in 4m 12s`, or
/// `5m 0s ago` for one that has passed.
pub fn relative(at: f64, now: f64) -> String {
    if at > now {
        format!("in {}", duration(at - now))
    } else {
        format!("{} ago", duration(now - at))
    }
}

/// A ratio as a percentage with two decimals, rounded down so that only a
/// perfect record shows 100.00%; `-` when there is none.
pub fn percent(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!("{:.2}%", (r * 10_000.0).floor() / 100.0),
        None => "-".to_owned(),
    }
}

/// Bytes in binary units, three significant figures (`512 B`, `1.50 MiB`);
/// `-` when unknown.
pub fn bytes(n: Option<u64>) -> String {
    let Some(n) = n else {
        return "-".to_owned();
    };
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    match v {
        v if v < 10.0 => format!("{v:.2} {unit}"),
        v if v < 100.0 => format!("{v:.1} {unit}"),
        v => format!("{v:.0} {unit}"),
    }
}

/// CPU use in cores as a percentage of one core (`12.5%`, `250%`); `-`
/// when unknown.
pub fn cores(c: Option<f64>) -> String {
    match c {
        Some(c) if c * 100.0 < 10.0 => format!("{:.1}%", c * 100.0),
        Some(c) => format!("{:.0}%", c * 100.0),
        None => "-".to_owned(),
    }
}

/// The service manager's units by `ActiveState`, said in one phrase:
/// `113 units loaded, 41 active, 0 failed`.
pub fn unit_counts(counts: &std::collections::BTreeMap<String, u64>) -> String {
    let n = |state: &str| counts.get(state).copied().unwrap_or(0);
    format!(
        "{} units loaded, {} active, {} failed",
        counts.values().sum::<u64>(),
        n("active"),
        n("failed")
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_durations_percentages() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000.9), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(clock(1_700_000_000.0), "22:13");
        assert_eq!(duration(9.4), "9s");
        assert_eq!(duration(252.0), "4m 12s");
        assert_eq!(duration(7500.0), "2h 5m");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 59.0), "3d 4h");
        assert_eq!(percent(Some(0.99995)), "99.99%");
        assert_eq!(percent(Some(1.0)), "100.00%");
        assert_eq!(percent(Some(0.5)), "50.00%");
        assert_eq!(percent(None), "-");
    }

    #[test]
    fn run_times_keep_fractions_of_short_runs() {
        assert_eq!(run_time(0.314), "0.31s");
        assert_eq!(run_time(3.24), "3.2s");
        assert_eq!(run_time(252.0), "4m 12s");
    }

    #[test]
    fn moments_are_told_from_now_either_way() {
        assert_eq!(relative(1_000_252.0, 1_000_000.0), "in 4m 12s");
        assert_eq!(relative(999_700.0, 1_000_000.0), "5m 0s ago");
    }

    #[test]
    fn bytes_and_cores_read_at_a_glance() {
        assert_eq!(bytes(Some(512)), "512 B");
        assert_eq!(bytes(Some(1536 * 1024)), "1.50 MiB");
        assert_eq!(bytes(Some(300 * 1024 * 1024)), "300 MiB");
        assert_eq!(bytes(None), "-");
        assert_eq!(cores(Some(0.125)), "12%");
        assert_eq!(cores(Some(0.012)), "1.2%");
        assert_eq!(cores(Some(2.5)), "250%");
        assert_eq!(cores(None), "-");
    }
}
