//! Online backups and restores of a data directory.
//!
//! A backup is a gzip-compressed tar file:
//!
//! - `manifest.json`: format version, time, server version, documents;
//! - `identity/…`: the certificate, its key, the token signing key, the
//!   reset key and the admin token, so a restored server keeps its pin and
//!   every join link stays valid (keep backups as secret as the server);
//! - `meta/…`: the store's metadata (the revocations);
//! - `docs/<document id>`: each document, saved whole by Automerge.
//!
//! A running server writes each document from memory under that
//! document's lock, so the backup holds every change acknowledged before
//! it started (and perhaps some made while it ran). With no server
//! running, the store is read directly.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use lanyard_protocol::DocId;
use lanyard_store::{SledStore, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::devices::REVOCATIONS_KEY;

/// The backup format's version.
pub const FORMAT: u32 = 1;

/// The identity files a backup carries (relative to the data directory).
const IDENTITY_FILES: &[&str] = &[
    "cert.der",
    "cert-key.der",
    "signing-key.pk8",
    "reset-key.bin",
    crate::admin::TOKEN_FILE,
];

/// The store metadata a backup carries.
const META_KEYS: &[&str] = &[REVOCATIONS_KEY];

/// What a backup holds, as written in its `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// When it was taken (Unix ms).
    pub created_unix_ms: u64,
    /// The server version that wrote it.
    pub server_version: String,
    /// Documents in it.
    pub documents: usize,
}

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing a file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backup file is not one, or is damaged.
    #[error("{path} is not a usable Lanyard backup: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The target directory holds data.
    #[error("{0} is not empty: restore into an empty directory, or pass --force to replace what is there")]
    NotEmpty(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// Writes a backup to `out`: the identity files of `data_dir`, the
/// metadata `meta` and the documents `docs` yields (`(id, saved bytes)`).
pub fn write_backup(
    out: impl Write,
    data_dir: &Path,
    meta: &[(String, Vec<u8>)],
    docs: impl Iterator<Item = Result<(DocId, Vec<u8>), BackupError>>,
) -> Result<Manifest, BackupError> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let add = |tar: &mut tar::Builder<_>, path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, path, bytes)
            .map_err(io(format!("writing {path} into the backup")))
    };
    for name in IDENTITY_FILES {
        let path = data_dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => add(&mut tar, &format!("identity/{name}"), &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        }
    }
    for (key, value) in meta {
        add(&mut tar, &format!("meta/{key}"), value)?;
    }
    let mut documents = 0;
    for doc in docs {
        let (id, bytes) = doc?;
        add(&mut tar, &format!("docs/{id}"), &bytes)?;
        documents += 1;
    }
    let manifest = Manifest {
        format: FORMAT,
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        documents,
    };
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    add(&mut tar, "manifest.json", &json)?;
    let gz = tar.into_inner().map_err(io("finishing the backup"))?;
    let mut out = gz.finish().map_err(io("finishing the backup"))?;
    out.flush().map_err(io("finishing the backup"))?;
    Ok(manifest)
}

/// The metadata a backup carries, read from `store`.
pub fn backup_meta(store: &dyn Store) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut meta = Vec::new();
    for key in META_KEYS {
        if let Some(v) = store.get_meta(key)? {
            meta.push(((*key).to_string(), v));
        }
    }
    Ok(meta)
}

/// Backs up a data directory no server runs on, reading its store.
pub fn backup_offline(data_dir: &Path, out: impl Write) -> Result<Manifest, BackupError> {
    let store = SledStore::open(data_dir.join("db"))?;
    let meta = backup_meta(&store)?;
    let docs = stored_docs(&store)?;
    write_backup(out, data_dir, &meta, docs)
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Documents written.
    pub documents: usize,
}

/// Whether `dir` exists and holds anything.
fn non_empty(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(format!("reading {}", dir.display()))(e)),
    }
}

/// Restores the backup `input` into `data_dir`, which must be empty unless
/// `force` (then its database and identity are replaced). Every document
/// is checked to load before anything is written.
pub fn restore(input: &Path, data_dir: &Path, force: bool) -> Result<Restored, BackupError> {
    if non_empty(data_dir)? && !force {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    let invalid = |reason: String| BackupError::Invalid {
        path: input.to_path_buf(),
        reason,
    };
    let mut identity = Vec::new();
    let mut meta = Vec::new();
    let mut docs = Vec::new();
    let mut manifest: Option<Manifest> = None;
    for (path, bytes) in entries_of(input)? {
        if path == "manifest.json" {
            manifest = Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| invalid(format!("bad manifest: {e}")))?,
            );
        } else if let Some(name) = path.strip_prefix("identity/") {
            if !IDENTITY_FILES.contains(&name) {
                return Err(invalid(format!("unknown identity file {name}")));
            }
            identity.push((name.to_string(), bytes));
        } else if let Some(key) = path.strip_prefix("meta/") {
            if !META_KEYS.contains(&key) {
                return Err(invalid(format!("unknown metadata {key}")));
            }
            meta.push((key.to_string(), bytes));
        } else if let Some(id) = path.strip_prefix("docs/") {
            let doc =
                DocId::parse(id).map_err(|e| invalid(format!("bad document id {id}: {e}")))?;
            automerge::Automerge::load(&bytes)
                .map_err(|e| invalid(format!("document {id} does not load: {e}")))?;
            docs.push((doc, bytes));
        } else {
            return Err(invalid(format!("unknown entry {path}")));
        }
    }
    let manifest =
        manifest.ok_or_else(|| invalid("no manifest (the file is cut short?)".into()))?;
    if manifest.format != FORMAT {
        return Err(invalid(format!(
            "format {} (this server reads {FORMAT})",
            manifest.format
        )));
    }
    if manifest.documents != docs.len() {
        return Err(invalid(format!(
            "the manifest lists {} documents, the file holds {}",
            manifest.documents,
            docs.len()
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(io(format!("creating {}", data_dir.display())))?;
    let db = data_dir.join("db");
    if force && db.exists() {
        std::fs::remove_dir_all(&db).map_err(io(format!("removing {}", db.display())))?;
    }
    for (name, bytes) in &identity {
        let path = data_dir.join(name);
        std::fs::write(&path, bytes).map_err(io(format!("writing {}", path.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
    }
    let store = SledStore::open(&db)?;
    for (key, value) in &meta {
        store.put_meta(key, value)?;
    }
    for (doc, bytes) in &docs {
        store.replace_doc(&doc.to_string(), bytes)?;
    }
    store.flush()?;
    Ok(Restored {
        manifest,
        documents: docs.len(),
    })
}

/// What `export` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// The event.
    pub event: String,
    /// Each document written, by id, with its file (relative to the output
    /// directory) and size.
    pub documents: Vec<ExportedDoc>,
}

/// One exported document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedDoc {
    /// Its id (`agenda/E`, `attendee/E/U`, …).
    pub id: String,
    /// Its file, relative to the output directory.
    pub file: String,
    /// Bytes.
    pub bytes: u64,
}

/// Writes every document of `event` held in the backup-able form `docs`
/// (`(id, saved bytes)`) into `output` as Automerge binaries, one file per
/// document (`agenda/E.automerge`, `attendee/E/U.automerge`, …), with an
/// `export.json` listing them.
pub fn export_docs(
    event: &lanyard_protocol::EventId,
    output: &Path,
    docs: impl Iterator<Item = Result<(DocId, Vec<u8>), BackupError>>,
) -> Result<Exported, BackupError> {
    if non_empty(output)? {
        return Err(BackupError::NotEmpty(output.to_path_buf()));
    }
    let mut written = Vec::new();
    for doc in docs {
        let (id, bytes) = doc?;
        if id.event() != event {
            continue;
        }
        let file = format!("{id}.automerge");
        let path = output.join(&file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        std::fs::write(&path, &bytes).map_err(io(format!("writing {}", path.display())))?;
        written.push(ExportedDoc {
            id: id.to_string(),
            file,
            bytes: bytes.len() as u64,
        });
    }
    let exported = Exported {
        event: event.to_string(),
        documents: written,
    };
    std::fs::create_dir_all(output).map_err(io(format!("creating {}", output.display())))?;
    let json = serde_json::to_vec_pretty(&exported).unwrap_or_default();
    let path = output.join("export.json");
    std::fs::write(&path, json).map_err(io(format!("writing {}", path.display())))?;
    Ok(exported)
}

/// The documents of a data directory's store (no server running), saved.
pub fn stored_docs(
    store: &SledStore,
) -> Result<impl Iterator<Item = Result<(DocId, Vec<u8>), BackupError>> + '_, BackupError> {
    let ids = store.doc_ids()?;
    Ok(ids.into_iter().map(move |id| {
        let doc = DocId::parse(&id)
            .map_err(|_| StoreError::Corrupt(format!("unknown document id {id}")))?;
        let raw = store.load_doc(&id)?.unwrap_or_default();
        let am = automerge::Automerge::load(&raw)
            .map_err(|e| StoreError::Corrupt(format!("document {id} cannot be loaded: {e}")))?;
        Ok((doc, am.save()))
    }))
}

/// Every entry of the backup file `input`, as (path, bytes), read whole.
fn entries_of(input: &Path) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    let invalid = |reason: String| BackupError::Invalid {
        path: input.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(input).map_err(io(format!("opening {}", input.display())))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("cannot read it: {e}")))?;
    let mut out = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("damaged: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| invalid(format!("damaged entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| invalid(format!("damaged at {path}: {e}")))?;
        out.push((path, bytes));
    }
    Ok(out)
}

/// The documents in the backup file `input` (read whole).
pub fn docs_in_backup(input: &Path) -> Result<Vec<(DocId, Vec<u8>)>, BackupError> {
    let mut docs = Vec::new();
    for (path, bytes) in entries_of(input)? {
        if let Some(id) = path.strip_prefix("docs/") {
            let doc = DocId::parse(id).map_err(|e| BackupError::Invalid {
                path: input.to_path_buf(),
                reason: format!("bad document id {id}: {e}"),
            })?;
            docs.push((doc, bytes));
        }
    }
    Ok(docs)
}
