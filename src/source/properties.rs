//! What systemd tells about a unit over the bus, and the ledger events it means.
//!
//! systemd sends the full set of a unit's change-emitting properties in each
//! `PropertiesChanged`, but it coalesces: several state changes between two
//! dispatches of its bus queue arrive as one signal. The timestamps systemd
//! keeps per unit (`InactiveExitTimestamp`, `ActiveEnterTimestamp`,
//! `ActiveExitTimestamp`, `InactiveEnterTimestamp`, `StateChangeTimestamp`)
//! still carry every edge of the last cycle, so each update is turned into one
//! state event per timestamp that moved; the ledger orders and deduplicates them.
//!
//! Each timestamp comes on both of systemd's clocks; where the monotonic one
//! is known it is used, placed in unitwatch's frame ([`crate::clock`]), so a
//! wall-clock step between two transitions does not change the time between them.

use crate::ledger::{ActiveState, Event, Transition, Usec};

/// The properties of a unit that unitwatch follows, merged from `Get`s and
/// `PropertiesChanged` of the `Unit` and `Service` interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitProperties {
    pub active_state: Option<ActiveState>,
    pub sub_state: Option<String>,
    pub state_change: Usec,
    pub inactive_exit: Usec,
    pub active_enter: Usec,
    pub active_exit: Usec,
    pub inactive_enter: Usec,
    /// `NRestarts` (services only).
    pub n_restarts: Option<u32>,
    /// `Result` (services only).
    pub result: Option<String>,
    /// `InvocationID` of the current or last run, as hex.
    pub invocation_id: Option<String>,
    /// The five timestamps above on the monotonic clock (`...Monotonic`),
    /// in the same order as [`UnitProperties::TIMESTAMPS`]; 0 if unknown.
    pub monotonic: [Usec; 5],
    /// `Type` (services only): `simple`, `oneshot`, ...
    pub service_type: Option<String>,
    /// `RemainAfterExit` (services only).
    pub remain_after_exit: Option<bool>,
    /// `TriggeredBy`: the units (timers, paths, sockets) that start this one.
    pub triggered_by: Vec<String>,
}

/// A property value as read off the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    U64(u64),
    U32(u32),
    Bool(bool),
    Bytes(Vec<u8>),
    Strs(Vec<String>),
}

impl UnitProperties {
    /// Takes in one property; unknown names and mistyped values are ignored.
    pub fn set(&mut self, name: &str, value: Value) {
        match (name, value) {
            ("ActiveState", Value::Str(s)) => self.active_state = ActiveState::parse(&s),
            ("SubState", Value::Str(s)) => self.sub_state = Some(s),
            ("StateChangeTimestamp", Value::U64(t)) => self.state_change = t,
            ("InactiveExitTimestamp", Value::U64(t)) => self.inactive_exit = t,
            ("ActiveEnterTimestamp", Value::U64(t)) => self.active_enter = t,
            ("ActiveExitTimestamp", Value::U64(t)) => self.active_exit = t,
            ("InactiveEnterTimestamp", Value::U64(t)) => self.inactive_enter = t,
            (name, Value::U64(t)) if name.ends_with("Monotonic") => {
                if let Some(i) = Self::TIMESTAMPS
                    .iter()
                    .position(|n| name.strip_suffix("Monotonic") == Some(n))
                {
                    self.monotonic[i] = t;
                }
            }
            ("NRestarts", Value::U32(n)) => self.n_restarts = Some(n),
            ("Type", Value::Str(s)) => self.service_type = Some(s),
            ("RemainAfterExit", Value::Bool(b)) => self.remain_after_exit = Some(b),
            // Sorted: systemd lists a set, and the snapshot builds the same
            // from the timers' `Triggers` (in no order of systemd's).
            ("TriggeredBy", Value::Strs(mut units)) => {
                units.sort();
                self.triggered_by = units
            }
            ("Result", Value::Str(s)) => self.result = Some(s),
            ("InvocationID", Value::Bytes(b)) => {
                self.invocation_id = (!b.is_empty()).then(|| hex(&b));
            }
            _ => {}
        }
    }

    /// Names of the properties [`UnitProperties::set`] takes in.
    pub const NAMES: [&'static str; 18] = [
        "ActiveState",
        "SubState",
        "StateChangeTimestamp",
        "InactiveExitTimestamp",
        "ActiveEnterTimestamp",
        "ActiveExitTimestamp",
        "InactiveEnterTimestamp",
        "StateChangeTimestampMonotonic",
        "InactiveExitTimestampMonotonic",
        "ActiveEnterTimestampMonotonic",
        "ActiveExitTimestampMonotonic",
        "InactiveEnterTimestampMonotonic",
        "NRestarts",
        "Result",
        "InvocationID",
        "Type",
        "RemainAfterExit",
        "TriggeredBy",
    ];

    /// The properties of the `Service` interface read (its `GetAll` returns
    /// some 200).
    pub const SERVICE: [&'static str; 4] = ["NRestarts", "Result", "Type", "RemainAfterExit"];

    /// Whether its properties make the unit a job: a oneshot that does not
    /// remain active after it exits, or a unit a timer triggers.
    pub fn is_job(&self) -> bool {
        let oneshot =
            self.service_type.as_deref() == Some("oneshot") && self.remain_after_exit != Some(true);
        oneshot || self.timer().is_some()
    }

    /// The timer that triggers the unit, if one does.
    pub fn timer(&self) -> Option<&str> {
        self.triggered_by
            .iter()
            .map(String::as_str)
            .find(|u| u.ends_with(".timer"))
    }

    /// The timestamps, each also sent as `<name>Monotonic`.
    pub const TIMESTAMPS: [&'static str; 5] = [
        "StateChangeTimestamp",
        "InactiveExitTimestamp",
        "ActiveEnterTimestamp",
        "ActiveExitTimestamp",
        "InactiveEnterTimestamp",
    ];

    /// Places the timestamps known on the monotonic clock in `frame` (see
    /// [`crate::clock`]); the others keep their wall-clock value.
    pub fn rebase(&mut self, frame: i64) {
        let [a, b, c, d, e] = self.monotonic;
        for (t, mono) in [
            (&mut self.state_change, a),
            (&mut self.inactive_exit, b),
            (&mut self.active_enter, c),
            (&mut self.active_exit, d),
            (&mut self.inactive_enter, e),
        ] {
            if mono != 0 {
                *t = crate::clock::to_frame(mono, frame);
            }
        }
    }

    /// The first sight of a unit at unitwatch's time `now`: a `Seen` event,
    /// followed by the events of every timestamp systemd kept. The ledger
    /// ignores those from before its accounting of the unit began; for a unit
    /// it knows from the state file they fill the time unitwatch was away.
    pub fn seen(&self, unit: &str, now: Usec) -> Vec<Event> {
        let Some(state) = self.active_state else {
            return Vec::new();
        };
        let mut events = vec![Event::new(
            unit,
            now,
            Transition::Seen {
                state,
                sub_state: self.sub_state.clone().unwrap_or_default(),
                n_restarts: self.n_restarts,
            },
        )];
        events.extend(self.changes_since(&UnitProperties::default(), unit, now));
        events
    }

    /// Seen again (after a reconnect, a reload or an overflow), at `now`:
    /// no new baseline (`NRestarts` is not in it), so that the ledger knows
    /// the unit is loaded and follows it again; `None` before its state is
    /// known.
    pub fn seen_again(&self, unit: &str, now: Usec) -> Option<Event> {
        let transition = Transition::Seen {
            state: self.active_state?,
            sub_state: self.sub_state.clone().unwrap_or_default(),
            n_restarts: None,
        };
        Some(Event::new(unit, now, transition))
    }

    /// The events that lead from `before` to `self`; `now` is unitwatch's time
    /// of the update, used for `NRestarts`, which carries no timestamp.
    pub fn changes_since(&self, before: &UnitProperties, unit: &str, now: Usec) -> Vec<Event> {
        let Some(state) = self.active_state else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let mut edges: Vec<(Usec, ActiveState)> = [
            (
                self.inactive_exit,
                before.inactive_exit,
                ActiveState::Activating,
            ),
            (self.active_enter, before.active_enter, ActiveState::Active),
            (
                self.active_exit,
                before.active_exit,
                ActiveState::Deactivating,
            ),
            (
                self.inactive_enter,
                before.inactive_enter,
                ActiveState::Inactive,
            ),
        ]
        .into_iter()
        .filter(|(t, old, _)| *t != 0 && t != old)
        .map(|(t, _, s)| (t, s))
        .collect();
        // Stable by time: at equal timestamps the later edge of the cycle wins.
        edges.sort_by_key(|(t, _)| *t);
        for (at, s) in edges {
            events.push(Event::new(
                unit,
                at,
                Transition::State {
                    state: s,
                    sub_state: None,
                },
            ));
        }
        if self.state_change != 0
            && (self.state_change != before.state_change
                || Some(state) != before.active_state
                || self.sub_state != before.sub_state)
        {
            events.push(Event::new(
                unit,
                self.state_change,
                Transition::State {
                    state,
                    sub_state: self.sub_state.clone(),
                },
            ));
        }
        // A run began as the unit left inactive or failed. systemd announces
        // a new InvocationID a moment before the run begins, while the unit
        // is still inactive with the last run's timestamps: a start counts
        // only once the unit is in the run (or the whole run is in this
        // update), and the ledger keeps the first report of each.
        let down =
            |s: Option<ActiveState>| matches!(s, Some(ActiveState::Inactive | ActiveState::Failed));
        let exit_moved = self.inactive_exit != before.inactive_exit;
        let enter_moved = self.inactive_enter != before.inactive_enter;
        // Waiting in auto-restart is between runs: the next attempt comes
        // with an InvocationID of its own.
        let in_run = !down(Some(state)) && self.sub_state.as_deref() != Some("auto-restart");
        let whole_run = exit_moved && enter_moved && self.inactive_enter >= self.inactive_exit;
        if self.invocation_id.is_some()
            && self.inactive_exit != 0
            && (in_run || whole_run)
            && (self.invocation_id != before.invocation_id
                || exit_moved
                || down(before.active_state)
                || before.active_state.is_none())
        {
            events.push(Event::new(
                unit,
                self.inactive_exit,
                Transition::RunStarted {
                    invocation: self.invocation_id.clone(),
                },
            ));
        }
        // A run ended badly: failed, or waiting to be restarted, with a Result
        // other than success; reported again on each update that changes the
        // end (the Result may come after the state), and the ledger counts
        // one per invocation (or end-of-run timestamp). Not on the update that
        // only announces the next run's InvocationID.
        let end_changed = enter_moved
            || self.result != before.result
            || Some(state) != before.active_state
            || self.sub_state != before.sub_state;
        let ended = end_changed
            && (state == ActiveState::Failed || self.sub_state.as_deref() == Some("auto-restart"));
        // The run ended as the unit entered inactive or failed (systemd
        // passes through failed on its way to auto-restart).
        let end = if self.inactive_enter != 0 {
            self.inactive_enter
        } else {
            self.state_change
        };
        if let (true, Some(result)) = (ended, &self.result) {
            if result != "success" && self.state_change != 0 {
                events.push(Event::new(
                    unit,
                    self.state_change,
                    Transition::RunFailed {
                        result: result.clone(),
                        invocation: self.invocation_id.clone(),
                    },
                ));
                events.push(Event::new(
                    unit,
                    end,
                    Transition::RunEnded {
                        result: result.clone(),
                        invocation: self.invocation_id.clone(),
                    },
                ));
            }
        }
        if state == ActiveState::Inactive
            && self.result.as_deref() == Some("success")
            && self.inactive_enter != 0
            && self.inactive_enter >= self.inactive_exit
            && (enter_moved || before.active_state != Some(ActiveState::Inactive))
        {
            events.push(Event::new(
                unit,
                self.inactive_enter,
                Transition::RunEnded {
                    result: "success".into(),
                    invocation: self.invocation_id.clone(),
                },
            ));
        }
        if let Some(n) = self.n_restarts {
            if before.n_restarts != Some(n) {
                events.push(Event::new(unit, now, Transition::NRestarts(n)));
            }
        }
        events
    }
}

/// `bytes` in lowercase hex, as systemd writes an `InvocationID` in the
/// journal; by hand, as this runs for every `PropertiesChanged` of a unit
/// (a `format!` a byte was a tenth of decoding one).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    const S: Usec = 1_000_000;
    const T0: Usec = 1_700_000_000 * S;

    #[test]
    fn an_invocation_id_is_lowercase_hex_and_none_when_empty() {
        let mut p = UnitProperties::default();
        p.set("InvocationID", Value::Bytes(vec![0x0a, 0xf0, 0x00, 0x9b]));
        assert_eq!(p.invocation_id.as_deref(), Some("0af0009b"));
        p.set("InvocationID", Value::Bytes(vec![]));
        assert_eq!(p.invocation_id, None);
    }

    fn props(state: &str, sub: &str, ts: [u64; 5], n: u32, result: &str) -> UnitProperties {
        let mut p = UnitProperties::default();
        p.set("ActiveState", Value::Str(state.into()));
        p.set("SubState", Value::Str(sub.into()));
        for (name, t) in [
            "StateChangeTimestamp",
            "InactiveExitTimestamp",
            "ActiveEnterTimestamp",
            "ActiveExitTimestamp",
            "InactiveEnterTimestamp",
        ]
        .iter()
        .zip(ts)
        {
            p.set(name, Value::U64(if t == 0 { 0 } else { T0 + t * S }));
        }
        p.set("NRestarts", Value::U32(n));
        p.set("Result", Value::Str(result.into()));
        p
    }

    fn feed(ledger: &mut Ledger, events: Vec<Event>) {
        for e in events {
            ledger.apply(e);
        }
    }

    #[test]
    fn coalesced_stop_and_start_keep_the_down_interval() {
        let mut l = Ledger::new();
        // active since t=1, seen at t=2
        let a = props("active", "running", [1, 0, 1, 0, 0], 0, "success");
        feed(&mut l, a.seen("u.service", T0 + 2 * S));
        // one signal after stop at 5 and start at 7 (inactive 6..7)
        let b = props("active", "running", [7, 7, 7, 5, 6], 0, "success");
        feed(&mut l, b.changes_since(&a, "u.service", T0 + 8 * S));
        let v = l.unit("u.service", T0 + 10 * S).expect("unit");
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (6.0, 2.0));
    }

    #[test]
    fn crash_into_auto_restart_counts_one_failure_however_often_reported() {
        let mut l = Ledger::new();
        let a = props("active", "running", [1, 1, 1, 0, 0], 0, "success");
        feed(&mut l, a.seen("u.service", T0 + 2 * S));
        let b = props(
            "activating",
            "auto-restart",
            [4, 1, 1, 4, 0],
            0,
            "exit-code",
        );
        feed(&mut l, b.changes_since(&a, "u.service", T0 + 4 * S));
        feed(&mut l, b.changes_since(&b, "u.service", T0 + 4 * S));
        let c = props("activating", "start", [5, 1, 1, 4, 0], 1, "success");
        feed(&mut l, c.changes_since(&b, "u.service", T0 + 5 * S));
        let d = props("active", "running", [5, 1, 5, 4, 0], 1, "success");
        feed(&mut l, d.changes_since(&c, "u.service", T0 + 5 * S));
        let v = l.unit("u.service", T0 + 10 * S).expect("unit");
        assert_eq!(v.restarts_auto, 1);
        assert_eq!(v.failures.get("exit-code"), Some(&1));
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (7.0, 1.0));
    }

    #[test]
    fn result_arriving_after_the_state_still_counts() {
        let mut l = Ledger::new();
        let a = props("active", "running", [1, 1, 1, 0, 0], 0, "success");
        feed(&mut l, a.seen("u.service", T0 + 2 * S));
        let b = props("failed", "failed", [4, 1, 1, 3, 4], 0, "success");
        feed(&mut l, b.changes_since(&a, "u.service", T0 + 4 * S));
        let c = props("failed", "failed", [4, 1, 1, 3, 4], 0, "signal");
        feed(&mut l, c.changes_since(&b, "u.service", T0 + 4 * S));
        let v = l.unit("u.service", T0 + 10 * S).expect("unit");
        assert_eq!(v.failures.get("signal"), Some(&1));
        assert_eq!(v.state, ActiveState::Failed);
    }

    #[test]
    fn a_failure_before_first_sight_is_not_counted() {
        let mut l = Ledger::new();
        let a = props("failed", "failed", [1, 0, 0, 0, 1], 0, "exit-code");
        feed(&mut l, a.seen("u.service", T0 + 2 * S));
        let v = l.unit("u.service", T0 + 3 * S).expect("unit");
        assert!(v.failures.is_empty());
        assert_eq!(v.downtime_seconds, 1.0);
    }

    #[test]
    fn monotonic_timestamps_win_and_a_clock_step_between_edges_does_not_count() {
        let mut l = Ledger::new();
        // Frame: wall clock = monotonic + T0. Active since mono 1 s.
        let mut a = props("active", "running", [1, 1, 1, 0, 0], 0, "success");
        for (name, t) in UnitProperties::TIMESTAMPS.iter().zip([1, 1, 1, 0, 0]) {
            a.set(&format!("{name}Monotonic"), Value::U64(t * S));
        }
        a.rebase(T0 as i64);
        feed(&mut l, a.seen("u.service", T0 + 2 * S));
        // The wall clock was set an hour back at mono 3 s; the unit stopped
        // at mono 5 s, which its wall-clock timestamp puts an hour earlier.
        let mut b = a.clone();
        for (name, t) in UnitProperties::TIMESTAMPS.iter().zip([5, 1, 1, 5, 5]) {
            b.set(name, Value::U64(T0 - 3600 * S + t * S));
            b.set(&format!("{name}Monotonic"), Value::U64(t * S));
        }
        b.set("ActiveState", Value::Str("inactive".into()));
        b.set("SubState", Value::Str("dead".into()));
        b.rebase(T0 as i64);
        feed(&mut l, b.changes_since(&a, "u.service", T0 + 5 * S));
        let v = l.unit("u.service", T0 + 10 * S).expect("unit");
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (3.0, 5.0));
        assert_eq!(v.state_change_seconds, 1_700_000_005.0);
    }

    fn with_invocation(mut p: UnitProperties, id: u8) -> UnitProperties {
        p.set("InvocationID", Value::Bytes(vec![id; 16]));
        p
    }

    fn runs(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match &e.transition {
                Transition::RunStarted { .. } => Some(format!("started@{}", (e.at - T0) / S)),
                Transition::RunEnded { result, .. } => {
                    Some(format!("{result}@{}", (e.at - T0) / S))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_run_is_reported_as_it_begins_and_as_it_ends() {
        let idle = with_invocation(props("inactive", "dead", [3, 1, 0, 0, 3], 0, "success"), 1);
        let start = with_invocation(
            props("activating", "start", [5, 5, 0, 0, 3], 0, "success"),
            2,
        );
        assert_eq!(
            runs(&start.changes_since(&idle, "j.service", T0 + 5 * S)),
            ["started@5"]
        );
        let end = with_invocation(props("inactive", "dead", [6, 5, 0, 0, 6], 0, "success"), 2);
        assert_eq!(
            runs(&end.changes_since(&start, "j.service", T0 + 6 * S)),
            ["success@6"]
        );
    }

    #[test]
    fn the_next_invocation_announced_before_its_run_is_no_run() {
        // systemd sets the new InvocationID a moment before the unit leaves
        // inactive: the timestamps are still the last run's.
        let idle = with_invocation(props("inactive", "dead", [3, 1, 0, 0, 3], 0, "success"), 1);
        let announced = with_invocation(idle.clone(), 2);
        assert!(runs(&announced.changes_since(&idle, "j.service", T0 + 4 * S)).is_empty());
        let failed = with_invocation(
            props("failed", "failed", [3, 1, 0, 0, 3], 0, "exit-code"),
            1,
        );
        let announced = with_invocation(failed.clone(), 2);
        let events = announced.changes_since(&failed, "j.service", T0 + 4 * S);
        assert!(runs(&events).is_empty());
        assert!(!events
            .iter()
            .any(|e| matches!(e.transition, Transition::RunFailed { .. })));
    }

    #[test]
    fn a_whole_run_in_one_update_is_reported_with_its_start() {
        let idle = with_invocation(props("inactive", "dead", [3, 1, 0, 0, 3], 0, "success"), 1);
        let ran = with_invocation(props("inactive", "dead", [6, 5, 0, 0, 6], 0, "success"), 2);
        assert_eq!(
            runs(&ran.changes_since(&idle, "j.service", T0 + 6 * S)),
            ["started@5", "success@6"]
        );
    }

    #[test]
    fn a_failure_on_its_way_to_auto_restart_ends_the_run_as_it_entered_failed() {
        let running = with_invocation(
            props("activating", "start", [1, 1, 0, 0, 0], 0, "success"),
            1,
        );
        // Failed at 4, then waiting in auto-restart since 4 (one signal).
        let waiting = with_invocation(
            props(
                "activating",
                "auto-restart",
                [5, 5, 0, 0, 4],
                0,
                "exit-code",
            ),
            1,
        );
        assert_eq!(
            runs(&waiting.changes_since(&running, "j.service", T0 + 5 * S)),
            ["exit-code@4"]
        );
    }
}
