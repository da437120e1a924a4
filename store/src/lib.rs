//! # lanyard-store
//!
//! One storage trait, [`Store`], used by the client core and the server, with
//! a sled backend ([`SledStore`], the default on disk) and an in-memory
//! backend ([`MemoryStore`]). Both pass the same test suite.
//!
//! A document is kept as a list of *chunks* (an Automerge save followed by
//! incremental saves or raw changes); concatenated, they load with
//! `Automerge::load`. Appending is cheap; [`Store::replace_doc`] compacts.
//! Every write is durable (flushed) when the call returns, except
//! `append_chunks_deferred`, which is durable after the next `flush`.
//!
//! ```
//! use lanyard_store::{MemoryStore, Store};
//! let store = MemoryStore::default();
//! store.append_chunks("agenda/conf", &[b"one".to_vec(), b"two".to_vec()]).unwrap();
//! assert_eq!(store.load_doc("agenda/conf").unwrap(), Some(b"onetwo".to_vec()));
//! store.replace_doc("agenda/conf", b"all").unwrap();
//! assert_eq!(store.chunk_count("agenda/conf").unwrap(), 1);
//! ```

#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The sled database reported an error (I/O, corruption, full disk).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// The database at the given path could not be opened.
    #[error("cannot open the database at {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// sled's error.
        source: sled::Error,
    },
    /// A key or value in the database has an unexpected shape.
    #[error("corrupt entry in the database: {0}")]
    Corrupt(String),
    /// A database server (PostgreSQL) failed the operation: it is
    /// unreachable, the connection dropped, or it refused the transaction.
    /// Nothing of a failed write was made durable.
    #[error("database: {0}")]
    Database(String),
    /// Decisions this node made as the cluster's authority cannot be
    /// written: another node became the authority. They were dropped; the
    /// new authority decides again what they decided.
    #[error("not the authority: {0}")]
    Fenced(String),
}

/// Document and metadata storage. Writes are durable when they return.
pub trait Store: Send + Sync + 'static {
    /// The concatenated chunks of a document, or `None` if it was never written.
    fn load_doc(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Appends chunks to a document, atomically and durably.
    fn append_chunks(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError>;
    /// Replaces all of a document's chunks by one (compaction), atomically and durably.
    fn replace_doc(&self, doc: &str, whole: &[u8]) -> Result<(), StoreError>;
    /// How many chunks a document has.
    fn chunk_count(&self, doc: &str) -> Result<usize, StoreError>;
    /// Ids of all stored documents.
    fn doc_ids(&self) -> Result<Vec<String>, StoreError>;
    /// A metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a metadata value, durably.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Appends chunks like [`Store::append_chunks`], atomically, but may
    /// return before they are durable: they are visible at once and durable
    /// once a later [`Store::flush`] returns `Ok`. Lets a server make many
    /// devices' writes durable with one flush. By default the same as
    /// `append_chunks`.
    fn append_chunks_deferred(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        self.append_chunks(doc, chunks)
    }
    /// Makes every earlier write durable (by default nothing is deferred).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Bytes the store takes (on disk, or in memory for a memory store).
    fn size_bytes(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// The sled backend.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    chunks: sled::Tree,
    meta: sled::Tree,
}

fn chunk_key(doc: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(doc.len() + 9);
    k.extend_from_slice(doc.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn doc_prefix(doc: &str) -> Vec<u8> {
    let mut k = doc.as_bytes().to_vec();
    k.push(0);
    k
}

impl SledStore {
    /// Opens (or creates) a database in the directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Self::from_db(db)
    }

    /// A temporary database, deleted on drop (for tests and simulations).
    pub fn temporary() -> Result<Self, StoreError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let chunks = db.open_tree("chunks")?;
        let meta = db.open_tree("meta")?;
        Ok(SledStore { db, chunks, meta })
    }

    fn next_seq(&self, doc: &str) -> Result<u64, StoreError> {
        match self.chunks.scan_prefix(doc_prefix(doc)).next_back() {
            None => Ok(0),
            Some(entry) => {
                let (k, _) = entry?;
                let tail: [u8; 8] = k[k.len().saturating_sub(8)..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("chunk key of {doc}")))?;
                Ok(u64::from_be_bytes(tail) + 1)
            }
        }
    }

    fn flush_db(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn append_batch(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (seq, c) in (self.next_seq(doc)?..).zip(chunks) {
            batch.insert(chunk_key(doc, seq), c.as_slice());
        }
        self.chunks.apply_batch(batch)?;
        Ok(())
    }
}

impl Store for SledStore {
    fn load_doc(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        let mut any = false;
        for entry in self.chunks.scan_prefix(doc_prefix(doc)) {
            let (_, v) = entry?;
            out.extend_from_slice(&v);
            any = true;
        }
        Ok(any.then_some(out))
    }

    fn append_chunks(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        self.append_batch(doc, chunks)?;
        self.flush_db()
    }

    fn append_chunks_deferred(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        self.append_batch(doc, chunks)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.flush_db()
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    fn replace_doc(&self, doc: &str, whole: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for entry in self.chunks.scan_prefix(doc_prefix(doc)) {
            let (k, _) = entry?;
            batch.remove(k);
        }
        batch.insert(chunk_key(doc, 0), whole);
        self.chunks.apply_batch(batch)?;
        self.flush_db()
    }

    fn chunk_count(&self, doc: &str) -> Result<usize, StoreError> {
        Ok(self.chunks.scan_prefix(doc_prefix(doc)).count())
    }

    fn doc_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = Vec::new();
        for entry in self.chunks.iter() {
            let (k, _) = entry?;
            let end = k
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| StoreError::Corrupt("chunk key without separator".into()))?;
            let id = String::from_utf8(k[..end].to_vec())
                .map_err(|_| StoreError::Corrupt("chunk key is not UTF-8".into()))?;
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key, value)?;
        self.flush_db()
    }
}

/// The in-memory backend (for simulations and the benchmark's many devices).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    docs: BTreeMap<String, Vec<Vec<u8>>>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock cannot leave the maps half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn load_doc(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().docs.get(doc).map(|c| c.concat()))
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        let inner = self.lock();
        let chunks: usize = inner.docs.values().flatten().map(Vec::len).sum();
        let meta: usize = inner.meta.values().map(Vec::len).sum();
        Ok((chunks + meta) as u64)
    }

    fn append_chunks(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        self.lock()
            .docs
            .entry(doc.to_owned())
            .or_default()
            .extend(chunks.iter().cloned());
        Ok(())
    }

    fn replace_doc(&self, doc: &str, whole: &[u8]) -> Result<(), StoreError> {
        self.lock()
            .docs
            .insert(doc.to_owned(), vec![whole.to_vec()]);
        Ok(())
    }

    fn chunk_count(&self, doc: &str) -> Result<usize, StoreError> {
        Ok(self.lock().docs.get(doc).map_or(0, Vec::len))
    }

    fn doc_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().docs.keys().cloned().collect())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().meta.get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    mod memory {
        crate::store_suite!(crate::MemoryStore::default());
    }

    mod sled_backend {
        crate::store_suite!(crate::SledStore::temporary().unwrap());
    }

    mod faulty_without_faults {
        crate::store_suite!(crate::testing::FaultyStore::new(
            crate::MemoryStore::default()
        ));
    }

    #[test]
    fn faults_fail_reads_writes_and_flushes_as_armed() {
        use crate::testing::{Fault, FaultyStore};
        let s = FaultyStore::new(MemoryStore::default());
        s.append_chunks("d", &[vec![1]]).unwrap();
        s.arm(Fault::Writes);
        assert!(s.append_chunks("d", &[vec![2]]).is_err());
        assert!(s.put_meta("k", b"v").is_err());
        assert!(s.replace_doc("d", &[9]).is_err());
        assert_eq!(s.load_doc("d").unwrap(), Some(vec![1]), "nothing written");
        s.disarm(Fault::Writes);
        s.arm(Fault::Reads);
        assert!(s.load_doc("d").is_err());
        assert!(s.get_meta("k").is_err());
        assert!(s.doc_ids().is_err());
        s.disarm(Fault::Reads);
        s.arm(Fault::Flushes);
        // Written, visible, but the call fails: the disk filled before the flush.
        assert!(s.append_chunks("d", &[vec![3]]).is_err());
        assert!(s.flush().is_err());
        s.disarm(Fault::Flushes);
        assert_eq!(s.load_doc("d").unwrap(), Some(vec![1, 3]));
    }

    #[test]
    fn sled_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.append_chunks("d", &[vec![5]]).unwrap();
            s.put_meta("m", b"x").unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.load_doc("d").unwrap(), Some(vec![5]));
        assert_eq!(s.get_meta("m").unwrap(), Some(b"x".to_vec()));
    }

    #[test]
    fn sled_deferred_appends_survive_reopen_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            for i in 0..50u8 {
                s.append_chunks_deferred("d", &[vec![i]]).unwrap();
            }
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.load_doc("d").unwrap(), Some((0..50u8).collect()));
    }

    #[test]
    fn opening_a_file_as_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"not a db").unwrap();
        let err = SledStore::open(&file).unwrap_err();
        assert!(
            err.to_string().contains("cannot open the database"),
            "{err}"
        );
    }
}
