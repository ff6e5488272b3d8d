//! The names of unitwatch's series for one unit, as `/metrics` renders
//! them, for tests that read values with [`super::unitwatch::value`].

/// `family{unit="UNIT"EXTRA}`; `extra` is more labels, each led by a comma.
pub fn series(family: &str, unit: &str, extra: &str) -> String {
    format!("{family}{{unit=\"{unit}\"{extra}}}")
}

pub fn up(unit: &str) -> String {
    series("service_up", unit, "")
}

pub fn uptime(unit: &str) -> String {
    series("service_uptime_seconds_total", unit, "")
}

pub fn downtime(unit: &str) -> String {
    series("service_downtime_seconds_total", unit, "")
}

/// Restarts by `trigger` (`auto`, `manual`).
pub fn restarts(unit: &str, trigger: &str) -> String {
    series(
        "service_restart_count_total",
        unit,
        &format!(",trigger=\"{trigger}\""),
    )
}

pub fn auto(unit: &str) -> String {
    restarts(unit, "auto")
}

pub fn manual(unit: &str) -> String {
    restarts(unit, "manual")
}

/// Failures with systemd's `Result` `result`.
pub fn failures(unit: &str, result: &str) -> String {
    series(
        "service_failures_total",
        unit,
        &format!(",result=\"{result}\""),
    )
}

pub fn exit_code(unit: &str) -> String {
    failures(unit, "exit-code")
}
