//! An in-memory file system for tests that simulates what disks do to us: unsynced
//! writes lost or torn on power loss, directory entries lost unless the directory was
//! synced, and EIO/ENOSPC on chosen operations.

use super::{File, Fs, ALIGN};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Granularity at which a torn write is torn.
const SECTOR: usize = 512;

/// A fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails with EIO.
    Eio,
    /// The operation fails with ENOSPC.
    NoSpace,
}

#[derive(Default)]
struct FileData {
    /// What a reader sees now.
    current: Vec<u8>,
    /// What survives power loss.
    durable: Vec<u8>,
    /// Writes since the last sync, replayed partly on power loss.
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    files: HashMap<u64, FileData>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: std::collections::BTreeSet<PathBuf>,
    ops: u64,
    faults: Vec<(u64, Fault, &'static str)>,
    /// Once a sync has failed, the data it covered is in an unknown state.
    rng: u64,
}

impl State {
    fn rand(&mut self) -> u64 {
        // xorshift64*: deterministic for a given seed, enough for fault patterns.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Counts an operation of `kind` and returns the injected fault, if any.
    fn tick(&mut self, kind: &'static str) -> io::Result<()> {
        self.ops += 1;
        let n = self.ops;
        if let Some(i) = self
            .faults
            .iter()
            .position(|(at, _, k)| *at <= n && (*k == "any" || *k == kind))
        {
            let (_, f, _) = self.faults.remove(i);
            return Err(match f {
                Fault::Eio => io::Error::from_raw_os_error(libc::EIO),
                Fault::NoSpace => io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        Ok(())
    }
}

/// The in-memory file system. Clones share state.
#[derive(Clone)]
pub struct MemFs {
    st: Rc<RefCell<State>>,
}

impl MemFs {
    pub fn new(seed: u64) -> MemFs {
        let st = State {
            rng: seed | 1,
            ..Default::default()
        };
        MemFs {
            st: Rc::new(RefCell::new(st)),
        }
    }

    /// Makes the first operation of `kind` ("write", "sync", "read", "create", "rename",
    /// "sync_dir", or "any") at or after operation number `at` fail with `fault`.
    pub fn inject(&self, at: u64, kind: &'static str, fault: Fault) {
        self.st.borrow_mut().faults.push((at, fault, kind));
    }

    /// Operations performed so far (for choosing fault points).
    pub fn ops(&self) -> u64 {
        self.st.borrow().ops
    }

    /// Simulates power loss: every unsynced write is lost, or torn (a random subset of
    /// its sectors reaches the disk); unsynced directory changes are lost.
    pub fn power_loss(&self) {
        let mut st = self.st.borrow_mut();
        let ids: Vec<u64> = st.files.keys().copied().collect();
        for id in ids {
            let mut pending =
                std::mem::take(&mut st.files.get_mut(&id).expect("id listed").pending);
            // Each pending write independently: lost, torn, or complete.
            for (pos, data) in pending.drain(..) {
                let mode = st.rand() % 3;
                let mut keep = vec![false; data.len().div_ceil(SECTOR)];
                for k in keep.iter_mut() {
                    *k = match mode {
                        0 => false,
                        1 => st.rand().is_multiple_of(2),
                        _ => true,
                    };
                }
                let f = st.files.get_mut(&id).expect("id listed");
                for (i, k) in keep.iter().enumerate() {
                    if !k {
                        continue;
                    }
                    let start = i * SECTOR;
                    let end = ((i + 1) * SECTOR).min(data.len());
                    let p = pos as usize + start;
                    if f.durable.len() < p + (end - start) {
                        f.durable.resize(p + (end - start), 0);
                    }
                    f.durable[p..p + (end - start)].copy_from_slice(&data[start..end]);
                }
            }
            let f = st.files.get_mut(&id).expect("id listed");
            f.current = f.durable.clone();
        }
        st.names = st.durable_names.clone();
        let live: std::collections::HashSet<u64> = st.names.values().copied().collect();
        st.files.retain(|id, _| live.contains(id));
        st.faults.clear();
    }

    /// Flips one bit of a file's current and durable contents (corruption tests).
    pub fn flip_bit(&self, path: &Path, byte: usize, bit: u8) {
        let mut st = self.st.borrow_mut();
        let id = *st.names.get(path).expect("file exists");
        let f = st.files.get_mut(&id).expect("file exists");
        f.current[byte] ^= 1 << bit;
        f.durable[byte] ^= 1 << bit;
    }

    /// The current contents of a file.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.st.borrow();
        st.names.get(path).map(|id| st.files[id].current.clone())
    }

    /// Replaces a file's contents outright (durably), for corruption tests.
    pub fn set_contents(&self, path: &Path, data: Vec<u8>) {
        let mut st = self.st.borrow_mut();
        let id = *st.names.get(path).expect("file exists");
        let f = st.files.get_mut(&id).expect("file exists");
        f.current = data.clone();
        f.durable = data;
        f.pending.clear();
    }
}

/// Returns Pending once (after waking itself), then Ready.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// An open in-memory file.
pub struct MemFile {
    st: Rc<RefCell<State>>,
    id: u64,
}

impl File for MemFile {
    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        assert_eq!(pos % ALIGN, 0, "unaligned write at {pos}");
        let mut st = self.st.borrow_mut();
        st.tick("write")?;
        let padded = super::align_up(data.len() as u64) as usize;
        let mut buf = data.to_vec();
        buf.resize(padded, 0);
        let f = st
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let end = pos as usize + padded;
        if f.current.len() < end {
            f.current.resize(end, 0);
        }
        f.current[pos as usize..end].copy_from_slice(&buf);
        f.pending.push((pos, buf));
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut st = self.st.borrow_mut();
        st.tick("read")?;
        let f = st
            .files
            .get(&self.id)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let start = (pos as usize).min(f.current.len());
        let end = (pos as usize).saturating_add(len).min(f.current.len());
        Ok(f.current[start..end].to_vec())
    }

    async fn sync(&self) -> io::Result<()> {
        // A real fdatasync takes time; yielding lets other tasks queue behind it, which
        // is what group commit relies on.
        yield_once().await;
        let mut st = self.st.borrow_mut();
        st.tick("sync")?;
        let f = st
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        f.durable = f.current.clone();
        f.pending.clear();
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        let st = self.st.borrow();
        Ok(st
            .files
            .get(&self.id)
            .map(|f| f.current.len() as u64)
            .unwrap_or(0))
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        st.tick("write")?;
        let f = st
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        f.current.truncate(len as usize);
        // A truncation is metadata: treat it as durable at the next sync like data.
        f.pending.retain(|(p, _)| *p < len);
        Ok(())
    }
}

impl Fs for MemFs {
    type File = MemFile;

    async fn create(&self, path: &Path) -> io::Result<MemFile> {
        let mut st = self.st.borrow_mut();
        st.tick("create")?;
        let id = st.next_id;
        st.next_id += 1;
        st.files.insert(id, FileData::default());
        st.names.insert(path.to_path_buf(), id);
        Ok(MemFile {
            st: self.st.clone(),
            id,
        })
    }

    async fn open(&self, path: &Path) -> io::Result<MemFile> {
        let mut st = self.st.borrow_mut();
        st.tick("open")?;
        let id = *st
            .names
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(MemFile {
            st: self.st.clone(),
            id,
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        st.tick("rename")?;
        let id = st
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        st.tick("remove")?;
        st.names
            .remove(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        st.tick("sync_dir")?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        let keep: Vec<(PathBuf, u64)> = st
            .durable_names
            .iter()
            .filter(|(p, _)| !in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        let add: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        st.durable_names = keep.into_iter().chain(add).collect();
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.st.borrow_mut().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.st.borrow();
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        self.st.borrow().names.contains_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn unsynced_data_and_names_are_lost() {
        block_on(async {
            let fs = MemFs::new(7);
            let dir = Path::new("/d");
            let f = fs.create(&dir.join("a")).await.unwrap();
            f.write_at(0, b"hello").await.unwrap();
            f.sync().await.unwrap();
            // Not durable yet: the directory entry was never synced.
            fs.power_loss();
            assert!(!fs.exists(&dir.join("a")));

            let f = fs.create(&dir.join("b")).await.unwrap();
            f.write_at(0, b"durable").await.unwrap();
            f.sync().await.unwrap();
            fs.sync_dir(dir).await.unwrap();
            f.write_at(4096, &[7u8; 4096]).await.unwrap();
            fs.power_loss();
            let c = fs.contents(&dir.join("b")).unwrap();
            assert_eq!(&c[..7], b"durable");
            // The unsynced block is lost, torn, or whole; never garbage.
            assert!(c.len() <= 8192);
            assert!(c[4096..].iter().all(|b| *b == 0 || *b == 7));
        });
    }

    #[test]
    fn injected_faults_fire_once() {
        block_on(async {
            let fs = MemFs::new(1);
            let f = fs.create(Path::new("/x")).await.unwrap();
            fs.inject(0, "sync", Fault::Eio);
            assert_eq!(f.sync().await.unwrap_err().raw_os_error(), Some(libc::EIO));
            assert!(f.sync().await.is_ok());
            fs.inject(0, "write", Fault::NoSpace);
            assert_eq!(
                f.write_at(0, b"x").await.unwrap_err().raw_os_error(),
                Some(libc::ENOSPC)
            );
        });
    }
}
