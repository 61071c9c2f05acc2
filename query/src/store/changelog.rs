//! The recent changes of one table on one shard, read by every changefeed of the table
//! with its own cursor. A write appends its changes once, whatever the number of feeds
//! (the work a writer does for feeds does not grow with them); feeds on any core copy
//! out what is past their cursor. Entries every live cursor has passed are dropped; a
//! feed that falls further behind than its queue bound skips the oldest and reports how
//! many.

use super::shard::{DocChange, FeedMsg};
use event_listener::Event;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

/// Entries appended between two looks for entries every cursor has passed.
const TRIM_EVERY: u64 = 256;

pub struct TableLog {
    inner: Mutex<Inner>,
    /// Notified after every append and at the end.
    event: Event,
}

struct Inner {
    /// Sequence number of `entries[0]` (sequence numbers count appended changes).
    first: u64,
    entries: VecDeque<Arc<DocChange>>,
    ended: Option<String>,
    /// Cursors of the feeds reading this log (the next sequence number each reads).
    cursors: Vec<Weak<AtomicU64>>,
    appended_since_trim: u64,
    /// Most entries kept: the largest queue bound of the readers (older entries are
    /// dropped, and readers that had not reached them count them as skipped).
    cap: usize,
}

impl Inner {
    fn end_seq(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
    /// Drops entries every live cursor has passed (and forgets dead cursors).
    fn trim(&mut self) {
        self.cursors.retain(|c| c.strong_count() > 0);
        let min = self
            .cursors
            .iter()
            .filter_map(Weak::upgrade)
            .map(|c| c.load(Relaxed))
            .min()
            .unwrap_or(self.end_seq());
        while self.first < min && !self.entries.is_empty() {
            self.entries.pop_front();
            self.first += 1;
        }
        self.appended_since_trim = 0;
    }
}

impl TableLog {
    pub fn new() -> Arc<TableLog> {
        Arc::new(TableLog {
            inner: Mutex::new(Inner {
                first: 0,
                entries: VecDeque::new(),
                ended: None,
                cursors: Vec::new(),
                appended_since_trim: 0,
                cap: 0,
            }),
            event: Event::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent data (appends and trims
        // are single steps): keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new reader, positioned after everything appended so far, that may fall
    /// `queue_max` changes behind.
    pub fn register(&self, queue_max: usize) -> Arc<AtomicU64> {
        let mut g = self.lock();
        g.cap = g.cap.max(queue_max);
        let cursor = Arc::new(AtomicU64::new(g.end_seq()));
        g.cursors.push(Arc::downgrade(&cursor));
        cursor
    }

    /// Whether any reader is left (the shard drops logs nobody reads). Called on every
    /// write: it stops at the first live cursor (dead ones are forgotten by `trim`), so
    /// its cost does not grow with the number of feeds.
    pub fn has_readers(&self) -> bool {
        self.lock().cursors.iter().any(|c| c.strong_count() > 0)
    }

    pub fn append(&self, changes: impl IntoIterator<Item = Arc<DocChange>>) {
        {
            let mut g = self.lock();
            for c in changes {
                g.entries.push_back(c);
                g.appended_since_trim += 1;
            }
            while g.entries.len() > g.cap {
                g.entries.pop_front();
                g.first += 1;
            }
            if g.appended_since_trim >= TRIM_EVERY {
                g.trim();
            }
        }
        self.event.notify(usize::MAX);
    }

    /// Ends every reader with `msg` once it has read what is there.
    pub fn end(&self, msg: String) {
        self.lock().ended = Some(msg);
        self.event.notify(usize::MAX);
    }

    /// Copies out up to `max` messages past `cursor` (advancing it). Entries more than
    /// `backlog_max` behind the newest are skipped: their count is returned.
    pub fn read(
        &self,
        cursor: &AtomicU64,
        max: usize,
        backlog_max: u64,
        out: &mut VecDeque<FeedMsg>,
    ) -> u64 {
        let g = self.lock();
        let end = g.end_seq();
        let mut at = cursor.load(Relaxed).max(g.first);
        let mut skipped = at - cursor.load(Relaxed);
        if end - at > backlog_max {
            skipped += end - at - backlog_max;
            at = end - backlog_max;
        }
        let take = ((end - at) as usize).min(max);
        let from = (at - g.first) as usize;
        out.extend(
            g.entries
                .range(from..from + take)
                .map(|c| FeedMsg::Change(c.clone())),
        );
        at += take as u64;
        if at == end {
            if let Some(msg) = &g.ended {
                out.push_back(FeedMsg::End(msg.clone()));
            }
        }
        cursor.store(at, Relaxed);
        skipped
    }

    /// Whether a read at `cursor` would return something.
    pub fn has_news(&self, cursor: &AtomicU64) -> bool {
        let g = self.lock();
        cursor.load(Relaxed) < g.end_seq() || g.ended.is_some()
    }

    pub fn listen(&self) -> event_listener::EventListener {
        self.event.listen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(i: u64) -> Arc<DocChange> {
        Arc::new(DocChange {
            key: vec![i as u8],
            old: None,
            new: Some(vec![]),
            lsn: i,
            idx: 0,
        })
    }

    fn keys(out: &VecDeque<FeedMsg>) -> Vec<u64> {
        out.iter()
            .filter_map(|m| match m {
                FeedMsg::Change(c) => Some(c.lsn),
                FeedMsg::End(_) => None,
            })
            .collect()
    }

    #[test]
    fn readers_see_every_change_once_and_entries_are_trimmed() {
        let log = TableLog::new();
        let a = log.register(1000);
        log.append((0..10).map(change));
        let b = log.register(1000);
        log.append((10..15).map(change));
        let mut out = VecDeque::new();
        assert_eq!(log.read(&a, 4, u64::MAX, &mut out), 0);
        assert_eq!(keys(&out), vec![0, 1, 2, 3]);
        out.clear();
        log.read(&a, 100, u64::MAX, &mut out);
        assert_eq!(keys(&out), (4..15).collect::<Vec<_>>());
        out.clear();
        log.read(&b, 100, u64::MAX, &mut out);
        assert_eq!(keys(&out), (10..15).collect::<Vec<_>>());
        // Both passed everything: a trim empties the log.
        log.append((15..15 + TRIM_EVERY).map(change));
        out.clear();
        log.read(&a, usize::MAX, u64::MAX, &mut out);
        log.read(&b, usize::MAX, u64::MAX, &mut out);
        log.append([change(999)]);
        log.lock().trim();
        assert_eq!(log.lock().entries.len(), 1);
        drop(a);
        drop(b);
        assert!(!log.has_readers());
    }

    #[test]
    fn a_reader_too_far_behind_skips_the_oldest() {
        let log = TableLog::new();
        let a = log.register(1000);
        log.append((0..200).map(change));
        let mut out = VecDeque::new();
        assert_eq!(log.read(&a, usize::MAX, 50, &mut out), 150);
        assert_eq!(keys(&out), (150..200).collect::<Vec<_>>());
        log.end("gone".into());
        out.clear();
        log.read(&a, usize::MAX, 50, &mut out);
        assert!(matches!(out.back(), Some(FeedMsg::End(m)) if m == "gone"));
    }
}
