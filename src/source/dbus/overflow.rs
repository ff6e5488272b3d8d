//! The D-Bus source after its signal queue overflowed: the ledger told to
//! trust D-Bus alone no more from then, and the units whose signals were
//! dropped read again; every other unit's signals all came, so it is seen
//! again as it stands. A host in a storm of a few units is not read whole
//! again: at 5000 units such a read took longer than the queue took to
//! fill again, and overflowed it anew.

use std::collections::HashSet;

use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

use super::DbusSource;
use crate::clock;
use crate::ledger::Usec;
use crate::message::Manager;
use crate::source::bus::DbusError;
use crate::source::read::Found;

impl DbusSource {
    /// Signals were dropped from `since` on: the ledger stops trusting
    /// D-Bus alone from then (the journal fills in, as after a lost
    /// connection), and the units they were about (`units`; `None`: any)
    /// are read again.
    pub(super) async fn overflowed(
        &mut self,
        conn: &Connection,
        since: Usec,
        dropped: u64,
        units: Option<HashSet<OwnedObjectPath>>,
    ) -> Result<(), DbusError> {
        // A timer's news is read with the units it triggers: all of them.
        let units = units.filter(|u| !u.iter().any(|p| self.timers.contains(p)));
        tracing::warn!(
            dropped,
            queue = self.queue,
            units = units.as_ref().map(HashSet::len),
            "more of systemd's signals came at once than unitwatch queues; dropped them and re-reading {}",
            match &units {
                Some(u) => format!("the {} units they were about", u.len()),
                None => "every watched unit".to_owned(),
            }
        );
        self.events
            .send(self.news(Manager::Overflow { at: since }))
            .await
            .map_err(|_| DbusError::LedgerGone)?;
        let Some(units) = units else {
            let n = self.snapshot(conn).await?;
            self.health.set_up(n);
            return self.snapshot_done(n).await;
        };
        let (now, frame) = clock::now_in_frame();
        let mut reread = Vec::with_capacity(units.len());
        let mut seen = Vec::new();
        for (path, name) in &self.paths {
            if units.contains(path) {
                let found = Found {
                    path: path.clone(),
                    check_load: true,
                    listed: None,
                };
                reread.push((name.clone(), found));
            } else if let Some(event) = self.units.get(name).and_then(|p| p.seen_again(name, now)) {
                seen.push(event);
            }
        }
        self.send(seen, frame).await?;
        self.read_in(conn, reread).await?;
        let n = self.paths.len();
        self.health.set_up(n);
        self.snapshot_done(n).await
    }
}
