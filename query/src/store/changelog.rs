//! The recent changes of one table on one shard, read by every changefeed of the table
//! with its own cursor. A write appends its changes once, whatever the number of feeds
//! (the work a writer does for feeds does not grow with them); feeds on any core take
//! shared references to what is past their cursor. Entries every live cursor has passed
//! are dropped; a feed that falls further behind than its queue bound skips the oldest
//! and reports how many.
//!
//! Changes are copied into chunks: one buffer for the bytes of many changes, shared by
//! reference count once sealed. The log may hold a feed's whole queue bound (100,000
//! changes by default) while feeds lag; an allocation per change would make the writer
//! pay for a fresh allocation and, later, a cold free of every change it makes.

use super::shard::FeedMsg;
use event_listener::Event;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

/// Entries appended between two looks for entries every cursor has passed.
const TRIM_EVERY: u64 = 256;
/// A chunk is sealed at this many changes or bytes (or when a reader reaches its end).
/// Small enough that a feed holding on to one change keeps little memory alive.
const CHUNK_CHANGES_MAX: usize = 256;
const CHUNK_BYTES_MAX: usize = 64 * 1024;

/// Where one change's parts lie in its chunk's bytes.
#[derive(Clone, Copy, Debug)]
struct Span {
    key: (u32, u32),
    old: Option<(u32, u32)>,
    new: Option<(u32, u32)>,
    lsn: u64,
    idx: u32,
}

/// Consecutive changes of one log.
#[derive(Debug, Default)]
pub struct ChangeChunk {
    /// Sequence number of the first change.
    first_seq: u64,
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

impl ChangeChunk {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.spans.len() as u64
    }

    fn push(&mut self, lsn: u64, idx: u32, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let mut put = |b: &[u8]| {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(b);
            (at as u32, b.len() as u32)
        };
        let span = Span {
            key: put(key),
            old: old.map(&mut put),
            new: new.map(&mut put),
            lsn,
            idx,
        };
        self.spans.push(span);
    }

    fn slice(&self, (at, len): (u32, u32)) -> &[u8] {
        &self.bytes[at as usize..at as usize + len as usize]
    }
}

/// One change in a log: the document's storage key, its old and new encodings, and
/// where the change is in the shard's WAL (record `lsn`, operation `idx`).
#[derive(Clone, Debug)]
pub struct ChangeRef {
    chunk: Arc<ChangeChunk>,
    i: u32,
}

impl ChangeRef {
    fn span(&self) -> &Span {
        &self.chunk.spans[self.i as usize]
    }
    pub fn key(&self) -> &[u8] {
        self.chunk.slice(self.span().key)
    }
    pub fn old_value(&self) -> Option<&[u8]> {
        self.span().old.map(|s| self.chunk.slice(s))
    }
    pub fn new_value(&self) -> Option<&[u8]> {
        self.span().new.map(|s| self.chunk.slice(s))
    }
    pub fn lsn(&self) -> u64 {
        self.span().lsn
    }
    pub fn idx(&self) -> u32 {
        self.span().idx
    }
}

/// A change to append: operation index in its WAL record, key, old and new values.
pub type NewChange<'a> = (u32, &'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);

pub struct TableLog {
    inner: Mutex<Inner>,
    /// Notified after every append and at the end.
    event: Event,
}

struct Inner {
    /// Sequence number of the oldest change kept (sequence numbers count appended
    /// changes); older ones in `sealed` or `open` are dead and never read.
    first: u64,
    /// Sequence number the next change gets.
    end: u64,
    /// Sealed chunks, oldest first, consecutive, ending where `open` starts.
    sealed: VecDeque<Arc<ChangeChunk>>,
    /// The chunk being filled.
    open: ChangeChunk,
    ended: Option<String>,
    /// Cursors of the feeds reading this log (the next sequence number each reads).
    cursors: Vec<Weak<AtomicU64>>,
    appended_since_trim: u64,
    /// Most entries kept: the largest queue bound of the readers (older entries are
    /// dropped, and readers that had not reached them count them as skipped).
    cap: usize,
}

impl Inner {
    fn seal(&mut self) {
        if self.open.spans.is_empty() {
            return;
        }
        let next = ChangeChunk {
            first_seq: self.end,
            bytes: Vec::with_capacity(self.open.bytes.len().clamp(256, CHUNK_BYTES_MAX)),
            spans: Vec::with_capacity(self.open.spans.len().clamp(4, CHUNK_CHANGES_MAX)),
        };
        let full = std::mem::replace(&mut self.open, next);
        self.sealed.push_back(Arc::new(full));
    }

    /// Moves `first` up to `at` and frees the chunks wholly before it.
    fn forget_before(&mut self, at: u64) {
        self.first = self.first.max(at.min(self.end));
        while self
            .sealed
            .front()
            .is_some_and(|c| c.end_seq() <= self.first)
        {
            self.sealed.pop_front();
        }
        if self.open.end_seq() <= self.first && !self.open.spans.is_empty() {
            self.open.bytes.clear();
            self.open.spans.clear();
            self.open.first_seq = self.end;
        }
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
            .unwrap_or(self.end);
        self.forget_before(min);
        self.appended_since_trim = 0;
    }

    #[cfg(test)]
    fn kept(&self) -> u64 {
        self.end - self.first
    }
}

impl TableLog {
    pub fn new() -> Arc<TableLog> {
        Arc::new(TableLog {
            inner: Mutex::new(Inner {
                first: 0,
                end: 0,
                sealed: VecDeque::new(),
                open: ChangeChunk::default(),
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
        let cursor = Arc::new(AtomicU64::new(g.end));
        g.cursors.push(Arc::downgrade(&cursor));
        cursor
    }

    /// Whether any reader is left (the shard drops logs nobody reads). Called on every
    /// write: it stops at the first live cursor (dead ones are forgotten by `trim`), so
    /// its cost does not grow with the number of feeds.
    pub fn has_readers(&self) -> bool {
        self.lock().cursors.iter().any(|c| c.strong_count() > 0)
    }

    /// Appends the changes of WAL record `lsn`.
    pub fn append<'a>(&self, lsn: u64, changes: impl IntoIterator<Item = NewChange<'a>>) {
        {
            let mut g = self.lock();
            for (idx, key, old, new) in changes {
                if g.open.spans.len() >= CHUNK_CHANGES_MAX || g.open.bytes.len() >= CHUNK_BYTES_MAX
                {
                    g.seal();
                }
                g.open.push(lsn, idx, key, old, new);
                g.end += 1;
                g.appended_since_trim += 1;
            }
            let keep_from = g.end.saturating_sub(g.cap as u64);
            if g.first < keep_from {
                g.forget_before(keep_from);
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
        let mut g = self.lock();
        let end = g.end;
        let mut at = cursor.load(Relaxed).max(g.first);
        let mut skipped = at - cursor.load(Relaxed);
        if end - at > backlog_max {
            skipped += end - at - backlog_max;
            at = end - backlog_max;
        }
        let take = ((end - at) as usize).min(max) as u64;
        if take > 0 {
            // Readers share sealed chunks only: seal the open one if the read reaches it.
            if at + take > g.open.first_seq {
                g.seal();
            }
            let mut c = g.sealed.partition_point(|c| c.end_seq() <= at);
            let stop = at + take;
            while at < stop {
                let chunk = &g.sealed[c];
                let upto = chunk.end_seq().min(stop);
                out.extend((at..upto).map(|s| {
                    FeedMsg::Change(ChangeRef {
                        chunk: chunk.clone(),
                        i: (s - chunk.first_seq) as u32,
                    })
                }));
                at = upto;
                c += 1;
            }
        }
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
        cursor.load(Relaxed) < g.end || g.ended.is_some()
    }

    pub fn listen(&self) -> event_listener::EventListener {
        self.event.listen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends changes `range`, each in its own WAL record (lsn = its number).
    fn append(log: &TableLog, range: std::ops::Range<u64>) {
        for i in range {
            let key = i.to_be_bytes();
            let old = (i % 3 == 0).then_some(&b"old"[..]);
            log.append(i, [(7, &key[..], old, Some(&key[..]))]);
        }
    }

    fn lsns(out: &VecDeque<FeedMsg>) -> Vec<u64> {
        out.iter()
            .filter_map(|m| match m {
                FeedMsg::Change(c) => {
                    // Every part comes back as appended.
                    assert_eq!(c.key(), c.lsn().to_be_bytes());
                    assert_eq!(c.new_value(), Some(&c.lsn().to_be_bytes()[..]));
                    assert_eq!(c.old_value(), (c.lsn() % 3 == 0).then_some(&b"old"[..]));
                    assert_eq!(c.idx(), 7);
                    Some(c.lsn())
                }
                FeedMsg::End(_) => None,
            })
            .collect()
    }

    #[test]
    fn readers_see_every_change_once_and_entries_are_trimmed() {
        let log = TableLog::new();
        let a = log.register(1000);
        append(&log, 0..10);
        let b = log.register(1000);
        append(&log, 10..15);
        let mut out = VecDeque::new();
        assert_eq!(log.read(&a, 4, u64::MAX, &mut out), 0);
        assert_eq!(lsns(&out), vec![0, 1, 2, 3]);
        out.clear();
        log.read(&a, 100, u64::MAX, &mut out);
        assert_eq!(lsns(&out), (4..15).collect::<Vec<_>>());
        out.clear();
        log.read(&b, 100, u64::MAX, &mut out);
        assert_eq!(lsns(&out), (10..15).collect::<Vec<_>>());
        // Both passed everything: a trim empties the log.
        append(&log, 15..15 + TRIM_EVERY);
        out.clear();
        log.read(&a, usize::MAX, u64::MAX, &mut out);
        log.read(&b, usize::MAX, u64::MAX, &mut out);
        assert_eq!(lsns(&out).len() as u64, 2 * TRIM_EVERY);
        append(&log, 999..1000);
        log.lock().trim();
        assert_eq!(log.lock().kept(), 1);
        assert_eq!(
            log.lock().sealed.len(),
            0,
            "chunks read by every reader are freed"
        );
        drop(a);
        drop(b);
        assert!(!log.has_readers());
    }

    #[test]
    fn a_reader_too_far_behind_skips_the_oldest() {
        let log = TableLog::new();
        let a = log.register(1000);
        append(&log, 0..200);
        let mut out = VecDeque::new();
        assert_eq!(log.read(&a, usize::MAX, 50, &mut out), 150);
        assert_eq!(lsns(&out), (150..200).collect::<Vec<_>>());
        log.end("gone".into());
        out.clear();
        log.read(&a, usize::MAX, 50, &mut out);
        assert!(matches!(out.back(), Some(FeedMsg::End(m)) if m == "gone"));
    }

    /// Reads of every size across chunk boundaries, with the log capped below what
    /// was appended, see exactly the changes kept, in order.
    #[test]
    fn reads_cross_chunks_and_the_cap_frees_whole_chunks() {
        let log = TableLog::new();
        let a = log.register(1000);
        let mut out = VecDeque::new();
        let mut seen = Vec::new();
        let mut skipped = 0;
        let mut next = 0;
        for round in 0..40u64 {
            append(&log, next..next + 97 * (round % 5));
            next += 97 * (round % 5);
            out.clear();
            skipped += log.read(&a, (round as usize * 37) % 300 + 1, u64::MAX, &mut out);
            seen.extend(lsns(&out));
        }
        out.clear();
        skipped += log.read(&a, usize::MAX, u64::MAX, &mut out);
        seen.extend(lsns(&out));
        assert_eq!(seen.len() as u64 + skipped, next);
        assert!(skipped > 0, "the reader never fell behind the cap");
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "out of order or repeated"
        );
        assert_eq!(*seen.last().unwrap(), next - 1);
        let g = log.lock();
        assert!(g.kept() <= 1000);
        let held: usize =
            g.sealed.iter().map(|c| c.spans.len()).sum::<usize>() + g.open.spans.len();
        assert!(held <= 1000 + CHUNK_CHANGES_MAX, "{held} changes held");
    }
}
