//! A sequence stored in shared chunks: cloning it for a snapshot costs one
//! reference per chunk, a change afterwards copies only the chunk it
//! touches, and reads are plain slice accesses — binary searches over a
//! history stay as fast as over a `Vec`.
//!
//! Layout: every chunk but the last holds exactly [`CHUNK`] items; the first
//! `head` items of the first chunk are gone (popped from the front), so an
//! index maps to its chunk by arithmetic. Appending and popping from the
//! front are O(1); inserting or removing in the middle rebuilds the chunks
//! after the place, which only late reports do.

use std::sync::Arc;

/// Items per chunk.
pub const CHUNK: usize = 64;

#[derive(Clone, Debug)]
pub struct Chunked<T> {
    chunks: Vec<Arc<Vec<T>>>,
    /// Items popped from the front of the first chunk.
    head: usize,
    len: usize,
    /// A copy of the last item: what a scrape reads of every unit, kept
    /// inline so that reading it touches no chunk.
    last: Option<T>,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            head: 0,
            len: 0,
            last: None,
        }
    }
}

impl<T: Clone + PartialEq> PartialEq for Chunked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Clone + Eq> Eq for Chunked<T> {}

impl<T: Clone> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut c = Chunked::default();
        for item in items {
            c.push_back(item);
        }
        c
    }
}

impl<T: Clone> Chunked<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let p = self.head + i;
        self.chunks.get(p / CHUNK)?.get(p % CHUNK)
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn back(&self) -> Option<&T> {
        self.last.as_ref()
    }

    pub fn push_back(&mut self, item: T) {
        self.last = Some(item.clone());
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let item = self.front()?.clone();
        self.len -= 1;
        self.head += 1;
        if self.head == CHUNK || self.len == 0 {
            self.chunks.remove(0);
            self.head = 0;
        }
        if self.len == 0 {
            self.chunks.clear();
            self.last = None;
        }
        Some(item)
    }

    /// Replaces the item at `i` (nothing if there is none).
    pub fn set(&mut self, i: usize, item: T) {
        if i >= self.len {
            return;
        }
        if i + 1 == self.len {
            self.last = Some(item.clone());
        }
        let p = self.head + i;
        if let Some(chunk) = self.chunks.get_mut(p / CHUNK) {
            if let Some(slot) = Arc::make_mut(chunk).get_mut(p % CHUNK) {
                *slot = item;
            }
        }
    }

    /// Inserts `item` before the item at `i` (at the end if `i` is the length).
    pub fn insert(&mut self, i: usize, item: T) {
        let i = i.min(self.len);
        let rest: Vec<T> = self.iter_from(i).cloned().collect();
        self.truncate(i);
        self.push_back(item);
        for r in rest {
            self.push_back(r);
        }
    }

    /// Keeps the first `n` items.
    fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        if n == 0 {
            *self = Chunked::default();
            return;
        }
        let p = self.head + n;
        let (chunk, offset) = (p / CHUNK, p % CHUNK);
        if offset == 0 {
            self.chunks.truncate(chunk);
        } else {
            self.chunks.truncate(chunk + 1);
            if let Some(last) = self.chunks.last_mut() {
                Arc::make_mut(last).truncate(offset);
            }
        }
        self.len = n;
        self.last = self.chunks.last().and_then(|c| c.last()).cloned();
    }

    /// The items from `i` on.
    pub fn iter_from(&self, i: usize) -> impl Iterator<Item = &T> + '_ {
        let p = self.head + i.min(self.len);
        let (first, offset) = (p / CHUNK, p % CHUNK);
        self.chunks
            .iter()
            .skip(first)
            .enumerate()
            .flat_map(move |(k, chunk)| {
                chunk[if k == 0 { offset.min(chunk.len()) } else { 0 }..].iter()
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.iter_from(0)
    }

    /// The index of the first item for which `before` is false, all those
    /// before it being true (as `slice::partition_point`).
    pub fn partition_point(&self, mut before: impl FnMut(&T) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid).map(&mut before) {
                Some(true) => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_ops(n: usize) -> (Chunked<usize>, Vec<usize>) {
        let mut c = Chunked::default();
        let mut v = Vec::new();
        for i in 0..n {
            c.push_back(i * 2);
            v.push(i * 2);
            if i % 7 == 3 {
                assert_eq!(c.pop_front(), Some(v.remove(0)));
            }
            if i % 31 == 5 {
                let at = v.len() / 2;
                c.insert(at, 1);
                v.insert(at, 1);
            }
        }
        (c, v)
    }

    #[test]
    fn behaves_like_a_vec_through_pushes_pops_and_inserts() {
        let (c, v) = model_ops(1000);
        assert_eq!(c.len(), v.len());
        assert!(c.iter().eq(v.iter()));
        for (i, x) in v.iter().enumerate() {
            assert_eq!(c.get(i), Some(x));
        }
        assert_eq!(c.back(), v.last());
        assert_eq!(c.get(v.len()), None);
    }

    #[test]
    fn a_clone_keeps_its_items_when_the_original_changes() {
        let (mut c, v) = model_ops(300);
        let snapshot = c.clone();
        c.set(10, 999);
        c.push_back(5);
        c.pop_front();
        assert!(snapshot.iter().eq(v.iter()));
    }

    #[test]
    fn searches_find_the_partition() {
        let c: Chunked<u64> = (0..500).map(|x| x * 10).collect();
        assert_eq!(c.partition_point(|x| *x < 255), 26);
        assert_eq!(c.partition_point(|x| *x < 250), 25);
        assert_eq!(c.partition_point(|_| true), 500);
    }

    #[test]
    fn popping_everything_leaves_it_empty_and_usable() {
        let mut c: Chunked<u32> = (0..130).collect();
        while c.pop_front().is_some() {}
        assert_eq!(c.len(), 0);
        c.push_back(7);
        assert_eq!((c.front(), c.back(), c.len()), (Some(&7), Some(&7), 1));
    }
}
