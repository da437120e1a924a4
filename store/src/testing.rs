//! Test support shared by every backend and every crate that tests over a
//! [`Store`]: the suite every backend must pass ([`store_suite!`]) and a
//! fault-injecting wrapper ([`FaultyStore`]) for full disks, failing reads
//! and failed flushes. Behind the `testing` feature.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Store, StoreError};

/// Which operations a [`FaultyStore`] fails while the fault is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every read (`load_doc`, `chunk_count`, `doc_ids`, `get_meta`) fails.
    Reads,
    /// Every write fails before anything is written (a full disk).
    Writes,
    /// Writes are made (and visible) but the flush that makes them durable
    /// fails: durable writes return an error, `flush` fails.
    Flushes,
}

/// A [`Store`] that fails the operations of each armed [`Fault`] and passes
/// everything else to the store it wraps.
#[derive(Debug, Default)]
pub struct FaultyStore<S> {
    inner: S,
    reads: AtomicBool,
    writes: AtomicBool,
    flushes: AtomicBool,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`, with no fault armed.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            reads: AtomicBool::new(false),
            writes: AtomicBool::new(false),
            flushes: AtomicBool::new(false),
        }
    }

    fn flag(&self, fault: Fault) -> &AtomicBool {
        match fault {
            Fault::Reads => &self.reads,
            Fault::Writes => &self.writes,
            Fault::Flushes => &self.flushes,
        }
    }

    /// Starts failing the operations of `fault`.
    pub fn arm(&self, fault: Fault) {
        self.flag(fault).store(true, Ordering::SeqCst);
    }

    /// Stops failing them.
    pub fn disarm(&self, fault: Fault) {
        self.flag(fault).store(false, Ordering::SeqCst);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn check(&self, fault: Fault) -> Result<(), StoreError> {
        if !self.flag(fault).load(Ordering::SeqCst) {
            return Ok(());
        }
        let (kind, text) = match fault {
            Fault::Reads => (std::io::ErrorKind::Other, "injected read failure"),
            Fault::Writes => (std::io::ErrorKind::StorageFull, "no space left on device"),
            Fault::Flushes => (std::io::ErrorKind::StorageFull, "flush: disk full"),
        };
        Err(StoreError::Sled(std::io::Error::new(kind, text).into()))
    }

    /// A durable write: refused whole under `Writes`; made but reported
    /// failed under `Flushes`.
    fn durable(&self, write: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        self.check(Fault::Writes)?;
        write()?;
        self.check(Fault::Flushes)
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn load_doc(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check(Fault::Reads)?;
        self.inner.load_doc(doc)
    }
    fn append_chunks(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        self.durable(|| self.inner.append_chunks_deferred(doc, chunks))
    }
    fn replace_doc(&self, doc: &str, whole: &[u8]) -> Result<(), StoreError> {
        self.durable(|| self.inner.replace_doc(doc, whole))
    }
    fn chunk_count(&self, doc: &str) -> Result<usize, StoreError> {
        self.check(Fault::Reads)?;
        self.inner.chunk_count(doc)
    }
    fn doc_ids(&self) -> Result<Vec<String>, StoreError> {
        self.check(Fault::Reads)?;
        self.inner.doc_ids()
    }
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check(Fault::Reads)?;
        self.inner.get_meta(key)
    }
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.durable(|| self.inner.put_meta(key, value))
    }
    fn append_chunks_deferred(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        self.check(Fault::Writes)?;
        self.inner.append_chunks_deferred(doc, chunks)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.check(Fault::Writes)?;
        self.check(Fault::Flushes)?;
        self.inner.flush()
    }
}

/// The checks of the shared suite, one function per behaviour. Each takes a
/// fresh, empty store and panics (failing the test) on a broken contract.
#[allow(clippy::unwrap_used, missing_docs)]
pub mod suite {
    use crate::Store;

    pub fn deferred_appends(s: &dyn Store) {
        s.append_chunks("d", &[vec![1]]).unwrap();
        s.append_chunks_deferred("d", &[vec![2], vec![3]]).unwrap();
        // Visible at once, in order with durable appends.
        assert_eq!(s.load_doc("d").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(s.chunk_count("d").unwrap(), 3);
        s.flush().unwrap();
        s.append_chunks("d", &[vec![4]]).unwrap();
        assert_eq!(s.load_doc("d").unwrap(), Some(vec![1, 2, 3, 4]));
    }

    pub fn empty(s: &dyn Store) {
        assert_eq!(s.load_doc("a").unwrap(), None);
        assert_eq!(s.chunk_count("a").unwrap(), 0);
        assert!(s.doc_ids().unwrap().is_empty());
        assert_eq!(s.get_meta("k").unwrap(), None);
    }

    pub fn append_and_load(s: &dyn Store) {
        s.append_chunks("d", &[vec![1, 2], vec![3]]).unwrap();
        s.append_chunks("d", &[vec![4]]).unwrap();
        assert_eq!(s.load_doc("d").unwrap(), Some(vec![1, 2, 3, 4]));
        assert_eq!(s.chunk_count("d").unwrap(), 3);
        // Enough appends to cross byte boundaries of the sequence numbers.
        for i in 0..300u32 {
            s.append_chunks("d", &[i.to_be_bytes().to_vec()]).unwrap();
        }
        let all = s.load_doc("d").unwrap().unwrap();
        assert_eq!(all.len(), 4 + 300 * 4);
        assert_eq!(&all[all.len() - 4..], &299u32.to_be_bytes());
    }

    pub fn replace_compacts(s: &dyn Store) {
        s.append_chunks("d", &[vec![1], vec![2]]).unwrap();
        s.replace_doc("d", &[9, 9]).unwrap();
        assert_eq!(s.load_doc("d").unwrap(), Some(vec![9, 9]));
        assert_eq!(s.chunk_count("d").unwrap(), 1);
        s.append_chunks("d", &[vec![7]]).unwrap();
        assert_eq!(s.load_doc("d").unwrap(), Some(vec![9, 9, 7]));
    }

    pub fn docs_are_separate(s: &dyn Store) {
        // "a" is a prefix of "ab": chunks must not leak between them.
        s.append_chunks("a", &[vec![1]]).unwrap();
        s.append_chunks("ab", &[vec![2]]).unwrap();
        s.append_chunks("agenda/x", &[vec![3]]).unwrap();
        assert_eq!(s.load_doc("a").unwrap(), Some(vec![1]));
        assert_eq!(s.load_doc("ab").unwrap(), Some(vec![2]));
        assert_eq!(s.doc_ids().unwrap(), vec!["a", "ab", "agenda/x"]);
    }

    pub fn meta(s: &dyn Store) {
        s.put_meta("k", b"v1").unwrap();
        s.put_meta("k", b"v2").unwrap();
        assert_eq!(s.get_meta("k").unwrap(), Some(b"v2".to_vec()));
    }
}

/// Generates one `#[test]` per check of [`suite`] for the store that
/// `$make` builds (a fresh one per test). Every backend runs it:
///
/// ```text
/// mod memory {
///     lanyard_store::store_suite!(lanyard_store::MemoryStore::default());
/// }
/// ```
#[macro_export]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store_suite!(@tests $make;
            empty, append_and_load, replace_compacts, docs_are_separate, meta, deferred_appends);
    };
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                let store = $make;
                $crate::testing::suite::$check(&store);
            }
        )*
    };
}
