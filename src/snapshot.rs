//! What the owner task publishes for readers: numbers about unitwatch
//! itself, next to the ledger.

/// Numbers about unitwatch itself.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Events applied, by origin (`dbus`, `journal`).
    pub events: [u64; 2],
    /// Whether the journal is being read.
    pub journal_up: bool,
    /// Whether the D-Bus connection is up.
    pub dbus_up: bool,
    /// Times the D-Bus connection came back after it was lost.
    pub dbus_reconnects: u64,
    /// Times systemd's signals overflowed the D-Bus source's queue.
    pub dbus_overflows: u64,
    /// Times the journal had lost records unitwatch had not read yet.
    pub journal_gaps: u64,
}
