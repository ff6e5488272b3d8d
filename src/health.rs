//! Whether unitwatch is connected to systemd, shared by the D-Bus source
//! (which sets it) and `/healthz` (which reads it).

use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct State {
    up: bool,
    reason: String,
    units: usize,
    journal: Option<Result<(), String>>,
}

/// A cheap, clonable handle to the shared health state.
#[derive(Clone, Debug)]
pub struct Health(Arc<Mutex<State>>);

impl Default for Health {
    fn default() -> Self {
        Health(Arc::new(Mutex::new(State {
            up: false,
            reason: "not yet connected to systemd".into(),
            units: 0,
            journal: None,
        })))
    }
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connected and following `units` watched units.
    pub fn set_up(&self, units: usize) {
        let mut s = self.lock();
        s.up = true;
        s.units = units;
        s.reason.clear();
    }

    /// Not connected, for `reason`. Returns whether this is news (it was up).
    pub fn set_down(&self, reason: &str) -> bool {
        let mut s = self.lock();
        let was_up = s.up;
        s.up = false;
        s.reason = reason.to_owned();
        was_up || s.units == 0
    }

    pub fn is_up(&self) -> bool {
        self.lock().up
    }

    /// Whether the journal can be read (`Err` with why not).
    pub fn set_journal(&self, status: Result<(), String>) {
        self.lock().journal = Some(status);
    }

    /// `Ok(units watched)` while connected, `Err(reason)` otherwise.
    pub fn status(&self) -> Result<usize, String> {
        let s = self.lock();
        if s.up {
            Ok(s.units)
        } else {
            Err(s.reason.clone())
        }
    }

    /// The journal's status: `None` until known.
    pub fn journal(&self) -> Option<Result<(), String>> {
        self.lock().journal.clone()
    }
}
