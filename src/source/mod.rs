//! Sources: adapters that turn the outside world into ledger events.

pub mod dbus;
pub mod journal;
pub mod journal_record;
pub mod properties;
pub mod signal;
pub mod signal_queue;
