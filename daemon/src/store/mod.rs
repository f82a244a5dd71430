//! Persistent state: one sled database in the data dir, one tree per service,
//! and a schema version recorded in the `meta` tree. A data dir written by a
//! newer schema is refused rather than misread. Services get their tree through
//! [`Store::tree`] and own its key layout; nothing else writes there.
//! [`make_private`] keeps the data dir around it readable by its owner only.

mod private_dir;

pub use private_dir::{make_private, PrivateDirError};

use std::path::{Path, PathBuf};

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

/// Handle to the node's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
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
        Ok(Store { db })
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

/// For tests that open a database again in the same process, as a restarted
/// daemon would: sled lets go of its file lock only once its flusher thread
/// (and any task still holding a clone) drops the last handle, a moment after
/// the `Store` is dropped. A restarted daemon is a new process and never
/// waits; a test tries again for up to [`REOPEN_PATIENCE`].
#[cfg(test)]
pub(crate) mod reopen {
    use super::{Store, StoreError};
    use std::path::Path;
    use std::time::{Duration, Instant};

    const REOPEN_PATIENCE: Duration = Duration::from_secs(5);
    const RETRY_EVERY: Duration = Duration::from_millis(20);

    /// One try of [`Store::open`]: `None` while another handle holds the lock
    /// and the patience since `since` lasts.
    fn try_open(data_dir: &Path, since: Instant) -> Option<Result<Store, StoreError>> {
        match Store::open(data_dir) {
            Err(StoreError::Open { source, .. })
                if source.to_string().contains("could not acquire lock")
                    && since.elapsed() < REOPEN_PATIENCE =>
            {
                None
            }
            opened => Some(opened),
        }
    }

    /// [`Store::open`], waiting (blocking the thread) while the lock is held.
    pub(crate) fn open_again(data_dir: &Path) -> Result<Store, StoreError> {
        let since = Instant::now();
        loop {
            match try_open(data_dir, since) {
                Some(opened) => return opened,
                None => std::thread::sleep(RETRY_EVERY),
            }
        }
    }

    /// Same, sleeping on the runtime: the task still holding the previous
    /// handle may need this thread to finish.
    pub(crate) async fn open_again_async(data_dir: &Path) -> Store {
        let since = Instant::now();
        loop {
            match try_open(data_dir, since) {
                Some(opened) => return opened.unwrap_or_else(|error| panic!("{error}")),
                None => tokio::time::sleep(RETRY_EVERY).await,
            }
        }
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
