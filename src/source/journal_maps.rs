//! Letting go of the journal pages libsystemd keeps mapped.
//!
//! libsystemd reads journal files through `mmap` and keeps its windows
//! mapped after reading: every page of journal unitwatch has read stays in
//! its resident set (on `/run`, a tmpfs, as shared memory) until the window
//! is reused, so unitwatch's RSS grew with how much journal it had read,
//! not with what it holds. Once caught up, [`Release`] tells the kernel the
//! mapped pages of `*.journal` files are not needed (`MADV_DONTNEED`): for a
//! shared, read-only mapping of a file that only drops them from the
//! resident set; the next read faults them in again from the page cache.
//! The mappings themselves, and libsystemd's view of them, stay as they are.

use std::time::{Duration, Instant};

/// How often at most the mappings are released: reading `/proc/self/maps`
/// costs some tens of microseconds, nothing once a second.
const EVERY: Duration = Duration::from_secs(1);

/// When the journal's pages were last released.
pub struct Release {
    last: Option<Instant>,
}

impl Release {
    pub fn new() -> Release {
        Release { last: None }
    }

    /// Releases the journal's mapped pages, unless that was done less than
    /// [`EVERY`] ago. Returns how many bytes of mappings were released.
    pub fn now(&mut self) -> usize {
        let at = Instant::now();
        if self
            .last
            .is_some_and(|last| at.duration_since(last) < EVERY)
        {
            return 0;
        }
        self.last = Some(at);
        let maps = match std::fs::read_to_string("/proc/self/maps") {
            Ok(maps) => maps,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read /proc/self/maps");
                return 0;
            }
        };
        journal_mappings(&maps)
            .filter(|(start, end)| {
                // SAFETY: the range is a whole mapping of a journal file,
                // which libsystemd maps shared and read-only: dropping its
                // pages loses nothing, they are read again on the next access.
                // No other memory is touched.
                unsafe {
                    libc::madvise(
                        *start as *mut libc::c_void,
                        end - start,
                        libc::MADV_DONTNEED,
                    ) == 0
                }
            })
            .map(|(start, end)| end - start)
            .sum()
    }
}

impl Default for Release {
    fn default() -> Self {
        Release::new()
    }
}

/// The address ranges of shared, read-only mappings of journal files
/// (`*.journal`, `*.journal~`, also once deleted) in a `/proc/PID/maps` text.
fn journal_mappings(maps: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        // offset, device, inode, then the path (which may hold spaces).
        let path = line.splitn(6, char::is_whitespace).nth(5)?.trim();
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        let journal = path.ends_with(".journal") || path.ends_with(".journal~");
        if !journal || !perms.starts_with("r-") || perms.as_bytes().get(3) != Some(&b's') {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (end > start).then_some((start, end))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0b00000 r-xp 00000000 08:01 1234 /usr/bin/unitwatch
7f0000000000-7f0000800000 r--s 00000000 00:19 42 /run/log/journal/0123/system.journal
7f0000800000-7f0001000000 r--s 00800000 00:19 43 /var/log/journal/0123/system@0005-0006.journal~ (deleted)
7f0001000000-7f0001001000 rw-s 00000000 00:19 44 /run/log/journal/0123/user-1000.journal
7f0002000000-7f0002100000 r--p 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libsystemd.so.0
7f0003000000-7f0003100000 r--s 00000000 00:19 45 /tmp/my dir/notes.journal.txt
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn only_shared_read_only_mappings_of_journal_files_are_released() {
        let found: Vec<_> = journal_mappings(MAPS).collect();
        assert_eq!(
            found,
            vec![
                (0x7f00_0000_0000, 0x7f00_0080_0000),
                (0x7f00_0080_0000, 0x7f00_0100_0000),
            ]
        );
    }

    #[test]
    fn a_release_within_a_second_of_the_last_does_nothing() {
        let mut release = Release::new();
        release.now();
        assert!(release.last.is_some());
        let first = release.last;
        assert_eq!(release.now(), 0);
        assert_eq!(release.last, first);
    }
}
