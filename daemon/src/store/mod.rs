//! Persistent state: one sled database in the data dir, one tree per service,
//! and a schema version recorded in the `meta` tree. A data dir written by a
//! newer schema is refused rather than misread. Services get their tree through
//! [`Store::tree`] and own its key layout; nothing else writes there.
//! [`make_private`] keeps the data dir around it readable by its owner only.

mod private_dir;

pub use private_dir::{make_private, PrivateDirError};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Version of the on-disk layout written by this build.
pub const SCHEMA_VERSION: u32 = 1;
const META_TREE: &str = "meta";
const SCHEMA_KEY: &[u8] = b"schema_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database in {path}: {source} (is another golem-daemon using this --data-dir?)")]
    Open { path: PathBuf, source: sled::Error },
    #[error(
        "the database in {path} has schema version {found}, newer than this build's {SCHEMA_VERSION}; \
         upgrade golem-daemon or use another --data-dir"
    )]
    NewerSchema { path: PathBuf, found: u32 },
    #[error("store-cache-mib is 0: sled needs a page cache of at least 1 MiB (fix the config file, GOLEM_STORE_CACHE_MIB or --store-cache-mib)")]
    NoCache,
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in {tree}: {message}")]
    Corrupt { tree: String, message: String },
    #[error("cannot tell whether the database in {path} is still open: {source}")]
    LockProbe {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the database in {path} is still open {waited:?} after the node let go of it \
         (a task still holds a handle); another golem-daemon on this --data-dir must wait for this one to exit"
    )]
    StillOpen { path: PathBuf, waited: Duration },
}

/// Make every write to `tree` so far durable, on tokio's blocking pool.
///
/// sled 0.34's own `flush_async` can leave its future for ever unwoken when
/// several callers flush at once (spacejam/sled#1241, #1308): a market that
/// countered nine proposals together once never answered its client. Every
/// flush in the daemon goes through here instead; overlapping callers share
/// sled's flush of everything written before it.
pub async fn flush_tree(tree: sled::Tree) -> Result<(), sled::Error> {
    match tokio::task::spawn_blocking(move || tree.flush()).await {
        Ok(flushed) => flushed.map(drop),
        Err(task) => Err(sled::Error::ReportableBug(format!(
            "the flush task ended without flushing: {task}"
        ))),
    }
}

/// sled's page cache when no setting says otherwise (`store-cache-mib`).
pub const DEFAULT_CACHE_MIB: u64 = 8;

/// How long [`Store::close`] waits for the database's other handles to go.
const CLOSE_PATIENCE: Duration = Duration::from_secs(10);
const LOCK_PROBE_EVERY: Duration = Duration::from_millis(10);

/// Whether no handle, in this process or another, holds sled's exclusive
/// lock on the database in `db_dir` (a missing database counts as free).
/// Probed with a non-blocking `flock` of the file sled locks, let go at once.
fn lock_is_free(db_dir: &Path) -> std::io::Result<bool> {
    use nix::fcntl::{Flock, FlockArg};
    let file = match std::fs::File::open(db_dir.join("db")) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(error) => return Err(error),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(probe) => {
            drop(probe);
            Ok(true)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(false),
        Err((_, errno)) => Err(errno.into()),
    }
}

/// Wait until no handle holds the database in `db_dir` ([`lock_is_free`]),
/// probing every [`LOCK_PROBE_EVERY`]; `false` if one still does after
/// `patience`.
async fn released_within(db_dir: &Path, patience: Duration) -> std::io::Result<bool> {
    let since = Instant::now();
    loop {
        if lock_is_free(db_dir)? {
            return Ok(true);
        }
        if since.elapsed() >= patience {
            return Ok(false);
        }
        tokio::time::sleep(LOCK_PROBE_EVERY).await;
    }
}

/// Handle to the node's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// `<data_dir>/db`, sled's directory.
    path: PathBuf,
}

impl Store {
    /// Open (creating if needed) `<data_dir>/db` with the default cache and
    /// check its schema version.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(data_dir, DEFAULT_CACHE_MIB)
    }

    /// Same, with sled's page cache capped at `cache_mib` MiB. sled counts
    /// the serialized size of the nodes it caches; what they take deserialized
    /// on the heap is larger (a soak's heap profile: about twice).
    pub fn open_with_cache(data_dir: &Path, cache_mib: u64) -> Result<Store, StoreError> {
        if cache_mib == 0 {
            return Err(StoreError::NoCache);
        }
        let path = data_dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            // Small cache: the node's working set is small and idle RSS matters.
            .cache_capacity(cache_mib.saturating_mul(1024 * 1024))
            .flush_every_ms(Some(500))
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let meta = db.open_tree(META_TREE)?;
        match meta.get(SCHEMA_KEY)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: META_TREE.into(),
                        message: "bad schema version".into(),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema { path, found });
                }
            }
        }
        Ok(Store { db, path })
    }

    /// Flush, drop this handle and wait until every other handle is gone
    /// too. sled lets go of its file lock only with the last handle (a
    /// service's tree, its own flusher thread), a moment after the node's
    /// services stop; once this returns, another node may open the same data
    /// dir, in this process or another. Waits up to [`CLOSE_PATIENCE`].
    pub async fn close(self) -> Result<(), StoreError> {
        self.close_within(CLOSE_PATIENCE).await
    }

    async fn close_within(self, patience: Duration) -> Result<(), StoreError> {
        self.flush().await?;
        let path = self.path.clone();
        drop(self);
        match released_within(&path, patience).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::StillOpen {
                path,
                waited: patience,
            }),
            Err(source) => Err(StoreError::LockProbe { path, source }),
        }
    }

    /// The tree a service keeps its records in.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// What the database holds: per tree and key kind (a key up to its
    /// first `/`), the number of records and their bytes (keys and values),
    /// sorted by tree and kind. Reads every record: for a stopped node's
    /// data dir or tests, not for a running service.
    pub fn census(&self) -> Result<Vec<StoreCensusRow>, StoreError> {
        let mut rows = std::collections::BTreeMap::<(String, String), (u64, u64)>::new();
        for name in self.db.tree_names() {
            let tree_name = String::from_utf8_lossy(&name).into_owned();
            let tree = self.db.open_tree(&name)?;
            for entry in tree.iter() {
                let (key, value) = entry?;
                let kind = match key.iter().position(|byte| *byte == b'/') {
                    Some(end) => String::from_utf8_lossy(&key[..=end]).into_owned(),
                    None => String::from_utf8_lossy(&key).into_owned(),
                };
                let row = rows.entry((tree_name.clone(), kind)).or_default();
                row.0 += 1;
                row.1 += (key.len() + value.len()) as u64;
            }
        }
        Ok(rows
            .into_iter()
            .map(|((tree, kind), (records, bytes))| StoreCensusRow {
                tree,
                kind,
                records,
                bytes,
            })
            .collect())
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        flush_tree((*self.db).clone()).await?;
        Ok(())
    }

    /// Record another schema version (to prove the newer-schema refusal).
    #[cfg(test)]
    fn force_schema_version(&self, version: u32) -> Result<(), StoreError> {
        self.db
            .open_tree(META_TREE)?
            .insert(SCHEMA_KEY, &version.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}

/// One line of [`Store::census`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCensusRow {
    pub tree: String,
    /// The key up to its first `/` (the whole key when it has none).
    pub kind: String,
    pub records: u64,
    pub bytes: u64,
}

/// Serialize a record as JSON bytes for a tree.
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError::Corrupt {
        tree: "-".into(),
        message: error.to_string(),
    })
}

/// Deserialize a record read from `tree`.
pub fn decode<T: serde::de::DeserializeOwned>(tree: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        tree: tree.into(),
        message: error.to_string(),
    })
}

impl From<StoreError> for golem_model::GolemError {
    fn from(error: StoreError) -> Self {
        golem_model::GolemError::internal(error.to_string())
    }
}

/// For unit tests that drop a `Store` (or the services holding its trees)
/// and open the database again in the same process, as a restarted daemon
/// would: sled lets go of its file lock a moment after the last handle is
/// dropped. They wait for the lock as [`Store::close`] does, up to
/// [`REOPEN_PATIENCE`], then open.
#[cfg(test)]
pub(crate) mod reopen {
    use super::{lock_is_free, released_within, Store, StoreError, LOCK_PROBE_EVERY};
    use std::path::Path;
    use std::time::{Duration, Instant};

    const REOPEN_PATIENCE: Duration = Duration::from_secs(5);

    /// [`Store::open`] once the lock is free (blocking the thread meanwhile).
    pub(crate) fn open_again(data_dir: &Path) -> Result<Store, StoreError> {
        let since = Instant::now();
        while !lock_is_free(&data_dir.join("db")).unwrap_or(true)
            && since.elapsed() < REOPEN_PATIENCE
        {
            std::thread::sleep(LOCK_PROBE_EVERY);
        }
        Store::open(data_dir)
    }

    /// Same, sleeping on the runtime: the task still holding the previous
    /// handle may need this thread to finish.
    pub(crate) async fn open_again_async(data_dir: &Path) -> Store {
        // Opening tells what a probe that failed or timed out could not.
        let _ = released_within(&data_dir.join("db"), REOPEN_PATIENCE).await;
        Store::open(data_dir).unwrap_or_else(|error| panic!("{error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many callers flushing one tree at once all finish (sled's own
    /// `flush_async` left some of them waiting for ever).
    #[test]
    fn concurrent_flushes_of_one_tree_all_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("market").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        for round in 0..20u32 {
            let flushes: Vec<_> = (0..64u32)
                .map(|writer| {
                    let tree = tree.clone();
                    runtime.spawn(async move {
                        tree.insert(format!("{round}/{writer}"), &[0u8; 64][..])
                            .unwrap();
                        flush_tree(tree).await
                    })
                })
                .collect();
            runtime.block_on(async {
                let all = futures::future::join_all(flushes);
                let flushed = tokio::time::timeout(std::time::Duration::from_secs(60), all)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a flush never finished"));
                for result in flushed {
                    result.unwrap().unwrap();
                }
            });
        }
        assert_eq!(tree.len(), 20 * 64);
    }

    #[test]
    fn census_counts_records_by_tree_and_key_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("activity").unwrap();
        tree.insert("provider/a", b"12".as_slice()).unwrap();
        tree.insert("provider/b", b"1234".as_slice()).unwrap();
        tree.insert("requestor/a", b"".as_slice()).unwrap();
        let census = store.census().unwrap();
        let activity: Vec<_> = census.iter().filter(|row| row.tree == "activity").collect();
        assert_eq!(activity.len(), 2);
        assert_eq!(
            (
                activity[0].kind.as_str(),
                activity[0].records,
                activity[0].bytes
            ),
            ("provider/", 2, 10 + 10 + 2 + 4)
        );
        assert_eq!(
            (
                activity[1].kind.as_str(),
                activity[1].records,
                activity[1].bytes
            ),
            ("requestor/", 1, 11)
        );
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.tree("identity").unwrap().insert("k", "v").unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen::open_again(dir.path()).unwrap();
        assert_eq!(
            store
                .tree("identity")
                .unwrap()
                .get("k")
                .unwrap()
                .unwrap()
                .as_ref(),
            b"v"
        );
    }

    /// `close` returns only once the last handle (here a tree another
    /// thread still uses) is gone: the database opens at once afterwards,
    /// with what that thread wrote.
    #[tokio::test]
    async fn close_waits_for_every_handle_and_frees_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("market").unwrap();
        assert!(!lock_is_free(&dir.path().join("db")).unwrap());
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            tree.insert("late", "write").unwrap();
            tree.flush().unwrap();
        });
        let since = Instant::now();
        store.close().await.unwrap();
        assert!(
            since.elapsed() >= Duration::from_millis(250),
            "close returned while a tree was still held"
        );
        holder.join().unwrap();
        let reopened = Store::open(dir.path()).expect("the data dir is free after close");
        assert_eq!(
            reopened
                .tree("market")
                .unwrap()
                .get("late")
                .unwrap()
                .unwrap()
                .as_ref(),
            b"write"
        );
    }

    /// A handle that is never dropped makes `close` give up with an error
    /// that names the data dir and what to do.
    #[tokio::test]
    async fn close_reports_a_handle_that_is_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let leaked = store.tree("market").unwrap();
        let error = store
            .close_within(Duration::from_millis(200))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, StoreError::StillOpen { .. }), "{text}");
        assert!(
            text.contains(&dir.path().join("db").display().to_string())
                && text.contains("--data-dir"),
            "{text}"
        );
        drop(leaked);
    }

    #[test]
    fn newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.force_schema_version(SCHEMA_VERSION + 1).unwrap();
        }
        let error = match reopen::open_again(dir.path()) {
            Err(error) => error,
            Ok(_) => panic!("opened a newer schema"),
        };
        let text = error.to_string();
        assert!(
            text.contains("newer than this build") && text.contains("--data-dir"),
            "{text}"
        );
    }

    #[test]
    fn a_cache_of_zero_is_refused_with_the_setting_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = match Store::open_with_cache(dir.path(), 0) {
            Err(error) => error,
            Ok(_) => panic!("opened without a cache"),
        };
        assert!(
            error.to_string().contains("GOLEM_STORE_CACHE_MIB"),
            "{error}"
        );
        let store = Store::open_with_cache(dir.path(), 1).unwrap();
        store.tree("identity").unwrap().insert("k", "v").unwrap();
    }
}
