//! The log itself: recovery on open, appends with group commit, the tail API.

use crate::error::{io_err, Error, Result};
use crate::record::{self, RECORD_PAYLOAD_MAX};
use crate::segment::{
    encode_header, parse_segment_name, scan_segment, segment_name, SEGMENT_HEADER_BYTES,
};
use crate::Lsn;
use event_listener::Event;
use rdb_io::fs::{align_down, align_up, File, Fs};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// How a write waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged after fdatasync.
    Hard,
    /// Acknowledged once buffered; written by the next hard commit or `flush`.
    Soft,
}

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A new segment starts once the active one is this large.
    pub segment_bytes_max: u64,
    /// Soft records buffered beyond this many bytes are written (not synced) eagerly.
    pub soft_buffer_bytes_max: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            soft_buffer_bytes_max: 1024 * 1024,
        }
    }
}

struct Segment {
    first_lsn: Lsn,
    path: PathBuf,
}

struct Active<F: Fs> {
    /// Shared so a flush can await I/O without holding the state borrowed.
    file: Rc<F::File>,
    path: PathBuf,
    /// Logical end of data in the file.
    end: u64,
    /// Bytes of the partially filled last block, starting at `align_down(end)`.
    tail: Vec<u8>,
}

struct State<F: Fs> {
    segments: Vec<Segment>,
    active: Active<F>,
    /// Encoded records not yet written.
    buffer: Vec<u8>,
    buffer_first_lsn: Lsn,
    next_lsn: Lsn,
    /// Highest LSN written to the file (maybe not synced).
    written_lsn: Lsn,
    /// Highest LSN known to survive power loss.
    durable_lsn: Lsn,
    flushing: bool,
    failed: Option<String>,
    /// Bytes handed to the disk, including rewritten partial tail blocks.
    bytes_written: u64,
    /// Records retained below this LSN may be deleted.
    oldest_lsn: Lsn,
}

/// A shard's write-ahead log.
pub struct Wal<F: Fs> {
    fs: F,
    dir: PathBuf,
    opts: WalOptions,
    st: RefCell<State<F>>,
    /// Fired after every flush attempt (success or failure).
    flushed: Event,
    /// LSNs that followers still need (with how many hold each): never removed.
    holds: Rc<RefCell<std::collections::BTreeMap<Lsn, usize>>>,
}

/// Keeps the records from an LSN on from being removed while a follower (changefeed,
/// replica) still needs them. Dropping it releases them.
pub struct Retention {
    lsn: Lsn,
    holds: Rc<RefCell<std::collections::BTreeMap<Lsn, usize>>>,
}

impl Retention {
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        let mut h = self.holds.borrow_mut();
        if let Some(n) = h.get_mut(&self.lsn) {
            *n -= 1;
            if *n == 0 {
                h.remove(&self.lsn);
            }
        }
    }
}

impl<F: Fs> Wal<F> {
    /// Opens (or creates) the log in `dir`, recovering it: a torn last write is cut off,
    /// damage anywhere else is an error naming the file and offset. `replay` sees every
    /// surviving record from `replay_from` on, in order.
    pub async fn open(
        fs: F,
        dir: &Path,
        opts: WalOptions,
        replay_from: Lsn,
        mut replay: impl FnMut(Lsn, &[u8]) -> Result<()>,
    ) -> Result<Wal<F>> {
        fs.create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut names: Vec<(Lsn, String)> = fs
            .list(dir)
            .map_err(|e| io_err(dir, e))?
            .into_iter()
            .filter_map(|n| parse_segment_name(&n).map(|l| (l, n)))
            .collect();
        names.sort();
        let mut segments = Vec::new();
        let mut next_lsn: Lsn = names.first().map(|(l, _)| *l).unwrap_or(1).max(1);
        let oldest_lsn = next_lsn;
        let mut active = None;
        for (i, (first, name)) in names.iter().enumerate() {
            let path = dir.join(name);
            let last = i + 1 == names.len();
            if *first != next_lsn {
                return Err(Error::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("segment starts at LSN {first} but the log continues at {next_lsn} (missing segment)"),
                });
            }
            let file = fs.open(&path).await.map_err(|e| io_err(&path, e))?;
            let len = file.size().await.map_err(|e| io_err(&path, e))?;
            let buf = file
                .read_at(0, len as usize)
                .await
                .map_err(|e| io_err(&path, e))?;
            if last && buf.len() < SEGMENT_HEADER_BYTES && buf.iter().all(|b| *b == 0) {
                // Created but its header never reached the disk: rewrite it below.
                active = Some((file, path.clone(), 0u64, *first));
                segments.push(Segment {
                    first_lsn: *first,
                    path,
                });
                continue;
            }
            let scan = scan_segment(&buf, *first).map_err(|(offset, reason)| Error::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                reason,
            })?;
            if let Some(d) = &scan.damage {
                if !last || d.later_batches_follow {
                    return Err(Error::Corrupt {
                        path,
                        offset: d.offset as u64,
                        reason: d.reason.clone(),
                    });
                }
                tracing::warn!(path = %path.display(), offset = d.offset, reason = %d.reason, "WAL: dropping torn tail");
            }
            for (lsn, _, payload) in &scan.records {
                if *lsn >= replay_from {
                    replay(*lsn, payload)?;
                }
            }
            next_lsn = first + scan.records.len() as u64;
            if last {
                active = Some((file, path.clone(), scan.valid_end as u64, *first));
            }
            segments.push(Segment {
                first_lsn: *first,
                path,
            });
        }
        let active = match active {
            Some((file, path, end, first)) => {
                // Cut off anything after the valid end (torn records, zero padding) so
                // that no stale bytes can ever be read as records again.
                let tail;
                if end == 0 {
                    tail = encode_header(first);
                    file.write_at(0, &tail)
                        .await
                        .map_err(|e| io_err(&path, e))?;
                } else {
                    let base = align_down(end);
                    tail = file
                        .read_at(base, (end - base) as usize)
                        .await
                        .map_err(|e| io_err(&path, e))?;
                    let len = file.size().await.map_err(|e| io_err(&path, e))?;
                    if len > end {
                        file.write_at(base, &tail)
                            .await
                            .map_err(|e| io_err(&path, e))?;
                        file.truncate(align_up(end))
                            .await
                            .map_err(|e| io_err(&path, e))?;
                    }
                }
                file.sync().await.map_err(|e| io_err(&path, e))?;
                let end = end.max(tail.len() as u64);
                Active {
                    file: Rc::new(file),
                    path,
                    end,
                    tail,
                }
            }
            None => {
                let (a, seg) = new_segment(&fs, dir, next_lsn).await?;
                segments.push(seg);
                a
            }
        };
        let last = next_lsn - 1;
        Ok(Wal {
            fs,
            dir: dir.to_path_buf(),
            opts,
            st: RefCell::new(State {
                segments,
                active,
                buffer: Vec::new(),
                buffer_first_lsn: next_lsn,
                next_lsn,
                written_lsn: last,
                durable_lsn: last,
                flushing: false,
                failed: None,
                bytes_written: 0,
                oldest_lsn,
            }),
            flushed: Event::new(),
            holds: Rc::new(RefCell::new(std::collections::BTreeMap::new())),
        })
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.st.borrow().next_lsn
    }

    /// Highest LSN that survives power loss.
    pub fn durable_lsn(&self) -> Lsn {
        self.st.borrow().durable_lsn
    }

    /// Oldest and newest durable LSN still readable through `read_from`.
    pub fn retained_range(&self) -> (Lsn, Lsn) {
        let st = self.st.borrow();
        (st.oldest_lsn, st.durable_lsn)
    }

    pub fn failure(&self) -> Option<String> {
        self.st.borrow().failed.clone()
    }

    /// Appends one record. With `Hard`, returns once it is durable; every writer waiting
    /// at the same time shares one write and one fdatasync.
    pub async fn append(&self, payload: &[u8], durability: Durability) -> Result<Lsn> {
        if payload.len() > RECORD_PAYLOAD_MAX {
            return Err(Error::TooLarge(payload.len()));
        }
        let (lsn, soft_overflow) = {
            let mut st = self.st.borrow_mut();
            if let Some(f) = &st.failed {
                return Err(Error::Failed(f.clone()));
            }
            let lsn = st.next_lsn;
            st.next_lsn += 1;
            if st.buffer.is_empty() {
                st.buffer_first_lsn = lsn;
            }
            let batch_first = st.buffer_first_lsn;
            record::encode(&mut st.buffer, lsn, batch_first, payload);
            (lsn, st.buffer.len() > self.opts.soft_buffer_bytes_max)
        };
        match durability {
            Durability::Hard => self.wait_durable(lsn).await?,
            Durability::Soft if soft_overflow => self.write_out().await?,
            Durability::Soft => {}
        }
        Ok(lsn)
    }

    /// Writes and syncs everything appended so far.
    pub async fn flush(&self) -> Result<()> {
        let target = self.st.borrow().next_lsn - 1;
        self.wait_durable(target).await
    }

    async fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        loop {
            let listener = self.flushed.listen();
            let lead = {
                let mut st = self.st.borrow_mut();
                if st.durable_lsn >= lsn {
                    return Ok(());
                }
                if let Some(f) = &st.failed {
                    return Err(Error::Failed(f.clone()));
                }
                let lead = !st.flushing;
                st.flushing = true;
                lead
            };
            if lead {
                self.lead_flush(true).await?;
                continue;
            }
            listener.await;
        }
    }

    /// Writes buffered records without waiting for fdatasync (soft records piling up),
    /// unless a flush is already under way.
    async fn write_out(&self) -> Result<()> {
        {
            let mut st = self.st.borrow_mut();
            if st.flushing {
                return Ok(());
            }
            st.flushing = true;
        }
        self.lead_flush(false).await
    }

    /// Runs one flush as the leader (the caller has set `flushing`), then publishes the
    /// outcome to every waiter; a failure fails the log.
    async fn lead_flush(&self, sync: bool) -> Result<()> {
        let mut guard = LeaderGuard {
            wal: self,
            done: false,
        };
        let r = self.flush_once(sync).await;
        guard.done = true;
        let mut st = self.st.borrow_mut();
        st.flushing = false;
        if let Err(e) = &r {
            st.failed = Some(e.to_string());
        }
        drop(st);
        self.flushed.notify(usize::MAX);
        r
    }

    /// One group commit: write the buffered records, then (if `sync`) fdatasync and
    /// publish them as durable.
    async fn flush_once(&self, sync: bool) -> Result<()> {
        self.maybe_roll().await?;
        let (pos, data, last_lsn, path, file) = {
            let mut st = self.st.borrow_mut();
            let buffer = std::mem::take(&mut st.buffer);
            let last_lsn = st.next_lsn - 1;
            let a = &mut st.active;
            let pos = align_down(a.end);
            let mut data = std::mem::take(&mut a.tail);
            data.extend_from_slice(&buffer);
            a.end += buffer.len() as u64;
            let keep_from = align_down(a.end) - pos;
            a.tail = data[keep_from as usize..].to_vec();
            (pos, data, last_lsn, a.path.clone(), a.file.clone())
        };
        if !data.is_empty() {
            file.write_at(pos, &data)
                .await
                .map_err(|e| io_err(&path, e))?;
            self.st.borrow_mut().bytes_written += align_up(data.len() as u64);
        }
        self.st.borrow_mut().written_lsn = last_lsn;
        if sync {
            file.sync().await.map_err(|e| io_err(&path, e))?;
            self.st.borrow_mut().durable_lsn = last_lsn;
        }
        Ok(())
    }

    /// Starts a new segment when the active one is full and nothing is buffered for it.
    async fn maybe_roll(&self) -> Result<()> {
        let (full, first) = {
            let st = self.st.borrow();
            (
                st.active.end >= self.opts.segment_bytes_max,
                st.buffer_first_lsn,
            )
        };
        if !full || self.st.borrow().buffer.is_empty() {
            return Ok(());
        }
        // Records written to the old segment without a sync (soft overflow) must be
        // durable before later syncs, which only touch the new segment, vouch for them.
        let (old, old_path) = {
            let st = self.st.borrow();
            (st.active.file.clone(), st.active.path.clone())
        };
        old.sync().await.map_err(|e| io_err(&old_path, e))?;
        {
            let mut st = self.st.borrow_mut();
            st.durable_lsn = st.written_lsn;
        }
        let (active, seg) = new_segment(&self.fs, &self.dir, first).await?;
        let mut st = self.st.borrow_mut();
        st.active = active;
        st.segments.push(seg);
        Ok(())
    }

    /// Durable records with LSN >= `from`, up to about `bytes_max` of payload.
    pub async fn read_from(&self, from: Lsn, bytes_max: usize) -> Result<Vec<(Lsn, Vec<u8>)>> {
        let (oldest, durable, segs) = {
            let st = self.st.borrow();
            let segs: Vec<(Lsn, PathBuf)> = st
                .segments
                .iter()
                .map(|s| (s.first_lsn, s.path.clone()))
                .collect();
            (st.oldest_lsn, st.durable_lsn, segs)
        };
        if from < oldest {
            return Err(Error::Expired {
                requested: from,
                oldest,
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = segs
            .iter()
            .rposition(|(first, _)| *first <= from)
            .unwrap_or(0);
        for (first, path) in &segs[start..] {
            if *first > durable {
                break;
            }
            let f = self.fs.open(path).await.map_err(|e| io_err(path, e))?;
            let len = f.size().await.map_err(|e| io_err(path, e))?;
            let buf = f
                .read_at(0, len as usize)
                .await
                .map_err(|e| io_err(path, e))?;
            let scan = scan_segment(&buf, *first).map_err(|(offset, reason)| Error::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                reason,
            })?;
            for (lsn, _, payload) in scan.records {
                if lsn < from || lsn > durable {
                    continue;
                }
                bytes += payload.len();
                out.push((lsn, payload));
                if bytes >= bytes_max {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Waits until `lsn` is durable (followers block here for new records).
    pub async fn wait_for(&self, lsn: Lsn) -> Result<()> {
        loop {
            let listener = self.flushed.listen();
            {
                let st = self.st.borrow();
                if st.durable_lsn >= lsn {
                    return Ok(());
                }
                if let Some(f) = &st.failed {
                    return Err(Error::Failed(f.clone()));
                }
            }
            listener.await;
        }
    }

    /// Deletes whole segments holding only records below `lsn` (never the active one).
    pub async fn remove_before(&self, lsn: Lsn) -> Result<()> {
        // Never past what a follower still holds.
        let lsn = self
            .holds
            .borrow()
            .keys()
            .next()
            .map_or(lsn, |held| lsn.min(*held));
        loop {
            let victim = {
                let st = self.st.borrow();
                if st.segments.len() < 2 || st.segments[1].first_lsn > lsn {
                    None
                } else {
                    Some(st.segments[0].path.clone())
                }
            };
            let Some(path) = victim else { break };
            self.fs.remove(&path).await.map_err(|e| io_err(&path, e))?;
            let mut st = self.st.borrow_mut();
            st.segments.remove(0);
            st.oldest_lsn = st.segments[0].first_lsn;
        }
        self.fs
            .sync_dir(&self.dir)
            .await
            .map_err(|e| io_err(&self.dir, e))
    }

    /// The first LSN to keep so that at least `bytes` of closed segments stay (each
    /// counted at the segment size limit); `Lsn::MAX` when nothing needs keeping.
    pub fn retention_cut(&self, bytes: u64) -> Lsn {
        if bytes == 0 {
            return Lsn::MAX;
        }
        let st = self.st.borrow();
        let closed = st.segments.len().saturating_sub(1);
        let keep = (bytes.div_ceil(self.opts.segment_bytes_max.max(1)) as usize).min(closed);
        st.segments[closed - keep].first_lsn
    }

    /// Holds the records from `lsn` on (a follower's position) until the guard drops.
    /// Fails if they are already gone.
    pub fn retain_from(&self, lsn: Lsn) -> Result<Retention> {
        let oldest = self.st.borrow().oldest_lsn;
        if lsn < oldest {
            return Err(Error::Expired {
                requested: lsn,
                oldest,
            });
        }
        *self.holds.borrow_mut().entry(lsn).or_insert(0) += 1;
        Ok(Retention {
            lsn,
            holds: self.holds.clone(),
        })
    }

    /// Bytes written to disk so far by this process (for write amplification).
    pub fn bytes_written(&self) -> u64 {
        self.st.borrow().bytes_written
    }

    /// Number of segment files (for tests and inspection).
    pub fn segment_count(&self) -> usize {
        self.st.borrow().segments.len()
    }
}

/// If the task leading a group commit is dropped mid-flush, what reached the disk is
/// unknown: fail the log rather than let followers wait forever or trust it.
struct LeaderGuard<'a, F: Fs> {
    wal: &'a Wal<F>,
    done: bool,
}

impl<F: Fs> Drop for LeaderGuard<'_, F> {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut st) = self.wal.st.try_borrow_mut() {
                st.flushing = false;
                st.failed = Some("a group commit was cancelled mid-flush".into());
            }
            self.wal.flushed.notify(usize::MAX);
        }
    }
}

async fn new_segment<F: Fs>(fs: &F, dir: &Path, first_lsn: Lsn) -> Result<(Active<F>, Segment)> {
    let path = dir.join(segment_name(first_lsn));
    let file = fs.create(&path).await.map_err(|e| io_err(&path, e))?;
    let header = encode_header(first_lsn);
    file.write_at(0, &header)
        .await
        .map_err(|e| io_err(&path, e))?;
    file.sync().await.map_err(|e| io_err(&path, e))?;
    fs.sync_dir(dir).await.map_err(|e| io_err(dir, e))?;
    let active = Active {
        file: Rc::new(file),
        path: path.clone(),
        end: header.len() as u64,
        tail: header,
    };
    Ok((active, Segment { first_lsn, path }))
}

#[cfg(test)]
mod tests;
