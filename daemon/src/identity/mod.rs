//! Identity service: owns the node key (and so the NodeId) and the app-keys that
//! guard the REST API. It answers `/local/identity` on the bus and gives the API
//! a fast in-memory lookup from app-key to its record. It must never expose the
//! secret key outside the process except to the net service that derives the
//! PeerId from it.
//!
//! App-keys are stored as their SHA3-256 hash plus a short prefix for listings,
//! never in plain text: the key itself is shown once, when it is created.
//! Records written by older builds (with the plain key) are rewritten at start.
//! A presented key is hashed and compared with every stored hash in constant
//! time.

mod key;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use golem_bus::ServiceEndpoint;
use golem_model::identity::{AppKeyInfo, CreateAppKey, DropAppKey, GetIdentity, ListAppKeys};
use golem_model::{GolemError, NodeId};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};

pub use key::NodeKey;

use crate::store::{self, Store, StoreError};

const TREE: &str = "identity";
const APPKEY_PREFIX: &str = "appkey/";
/// Name under which `GOLEM_AUTOCONF_APPKEY` is registered.
pub const AUTOCONF_APPKEY_NAME: &str = "autoconfigured";
/// Role reported by `/me`; yagna reports `manager` for app-keys of the default identity.
const DEFAULT_ROLE: &str = "manager";
/// At most this many leading characters of a key are kept for listings.
const KEY_PREFIX_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot use identity key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid identity key {0}")]
    InvalidKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    AppKey(#[from] GolemError),
}

/// An app-key as the `identity` tree keeps it: the hash, never the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredAppKey {
    name: String,
    /// SHA3-256 of the key, hex.
    key_hash: String,
    /// The first characters of the key (see [`key_prefix`]).
    key_prefix: String,
    role: String,
    identity: NodeId,
    created: chrono::DateTime<chrono::Utc>,
}

impl StoredAppKey {
    fn new(name: &str, appkey: &str, identity: NodeId) -> StoredAppKey {
        StoredAppKey {
            name: name.to_string(),
            key_hash: hex::encode(hash_key(appkey)),
            key_prefix: key_prefix(appkey),
            role: DEFAULT_ROLE.to_string(),
            identity,
            created: chrono::Utc::now(),
        }
    }

    /// What a listing shows: the key masked to its prefix.
    fn listed(&self) -> AppKeyInfo {
        AppKeyInfo {
            name: self.name.clone(),
            key: format!("{}…", self.key_prefix),
            key_prefix: Some(self.key_prefix.clone()),
            role: self.role.clone(),
            identity: self.identity,
            created: self.created,
        }
    }
}

fn hash_key(appkey: &str) -> [u8; 32] {
    Sha3_256::digest(appkey.as_bytes()).into()
}

/// Up to [`KEY_PREFIX_LEN`] characters, and never more than a quarter of the
/// key, so a short scripted key is not given away by its listing.
fn key_prefix(appkey: &str) -> String {
    let count = appkey.chars().count();
    appkey.chars().take(KEY_PREFIX_LEN.min(count / 4)).collect()
}

/// Equality of two hashes in time independent of where they differ.
fn same_hash(left: &[u8; 32], right: &[u8; 32]) -> bool {
    left.iter()
        .zip(right.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// An authenticating entry of the in-memory index.
struct KnownKey {
    hash: [u8; 32],
    info: Arc<AppKeyInfo>,
}

/// Handle to the identity service. Cheap to clone.
#[derive(Clone)]
pub struct IdentityService {
    inner: Arc<Inner>,
}

struct Inner {
    key: NodeKey,
    node_id: NodeId,
    tree: sled::Tree,
    /// Hash and record of every app-key, for the REST auth check on every request.
    known: RwLock<Vec<KnownKey>>,
}

fn known_key(stored: &StoredAppKey) -> Result<KnownKey, GolemError> {
    let hash: [u8; 32] = hex::decode(&stored.key_hash)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            GolemError::internal(format!(
                "corrupt hash of app-key {:?} in the identity tree",
                stored.name
            ))
        })?;
    Ok(KnownKey {
        hash,
        info: Arc::new(stored.listed()),
    })
}

/// Read one record, rewriting a plain-text one (older builds) as a hash; the
/// flag says whether it was rewritten (the caller flushes).
fn load_record(
    tree: &sled::Tree,
    key: &[u8],
    value: &[u8],
) -> Result<(StoredAppKey, bool), GolemError> {
    if let Ok(stored) = serde_json::from_slice::<StoredAppKey>(value) {
        return Ok((stored, false));
    }
    let plain: AppKeyInfo = store::decode(TREE, value)?;
    let stored = StoredAppKey {
        name: plain.name,
        key_hash: hex::encode(hash_key(&plain.key)),
        key_prefix: key_prefix(&plain.key),
        role: plain.role,
        identity: plain.identity,
        created: plain.created,
    };
    tree.insert(key, store::encode(&stored)?)
        .map_err(StoreError::from)?;
    tracing::warn!(name = %stored.name, "app-key was stored in plain text by an older build; \
        it is now kept as a hash, but its old bytes may stay in the database files until sled \
        reuses them: rotate it with `golem-daemon app-key drop` and `create`");
    Ok((stored, true))
}

/// Load or create the node key in `data_dir`, load app-keys from `store`
/// (hashing any kept in plain text), and register `autoconf_appkey` when given.
pub fn start(
    data_dir: &std::path::Path,
    store: &Store,
    autoconf_appkey: Option<&str>,
) -> Result<IdentityService, IdentityError> {
    let (key, created) = NodeKey::load_or_create(&data_dir.join("identity.key"))?;
    let node_id = key.node_id();
    if created {
        tracing::info!(%node_id, "created a new node identity");
    }
    let tree = store.tree(TREE)?;
    let mut known = Vec::new();
    let mut migrated = false;
    for entry in tree.scan_prefix(APPKEY_PREFIX) {
        let (record_key, value) = entry.map_err(StoreError::from)?;
        let (stored, rewritten) = load_record(&tree, &record_key, &value)?;
        migrated |= rewritten;
        known.push(known_key(&stored)?);
    }
    if migrated {
        tree.flush().map_err(StoreError::from)?;
    }
    let service = IdentityService {
        inner: Arc::new(Inner {
            key,
            node_id,
            tree,
            known: RwLock::new(known),
        }),
    };
    if let Some(appkey) = autoconf_appkey {
        service.register_app_key(AUTOCONF_APPKEY_NAME, appkey)?;
    }
    Ok(service)
}

fn validate_name(name: &str) -> Result<(), GolemError> {
    if name.is_empty()
        || name.len() > 64
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(GolemError::bad_request(format!(
            "invalid app-key name {name:?}: use 1 to 64 characters without spaces or '/'"
        )));
    }
    Ok(())
}

impl IdentityService {
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The 32-byte secret, for the net service's libp2p keypair only.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.inner.key.secret_bytes()
    }

    /// The record of `appkey`, or None when it is not a registered key. Every
    /// stored hash is compared, each in constant time.
    pub fn authenticate(&self, appkey: &str) -> Option<Arc<AppKeyInfo>> {
        let presented = hash_key(appkey);
        let known = self.inner.known.read().ok()?;
        let mut found = None;
        for entry in known.iter() {
            if same_hash(&entry.hash, &presented) {
                found = Some(entry.info.clone());
            }
        }
        found
    }

    fn store_record(&self, stored: &StoredAppKey) -> Result<(), GolemError> {
        let key = format!("{APPKEY_PREFIX}{}", stored.name);
        self.inner
            .tree
            .insert(key, store::encode(stored)?)
            .map_err(StoreError::from)?;
        self.inner.tree.flush().map_err(StoreError::from)?;
        Ok(())
    }

    fn find_by_name(&self, name: &str) -> Result<Option<StoredAppKey>, GolemError> {
        let record_key = format!("{APPKEY_PREFIX}{name}");
        match self.inner.tree.get(&record_key).map_err(StoreError::from)? {
            Some(bytes) => Ok(Some(
                load_record(&self.inner.tree, record_key.as_bytes(), &bytes)?.0,
            )),
            None => Ok(None),
        }
    }

    /// Store `appkey` under `name`; the answer carries the key this once.
    fn insert(&self, name: &str, appkey: String) -> Result<AppKeyInfo, GolemError> {
        let stored = StoredAppKey::new(name, &appkey, self.inner.node_id);
        self.store_record(&stored)?;
        let entry = known_key(&stored)?;
        if let Ok(mut known) = self.inner.known.write() {
            known.retain(|existing| existing.info.name != name);
            known.push(entry);
        }
        Ok(AppKeyInfo {
            key: appkey,
            ..stored.listed()
        })
    }

    /// Create a fresh random app-key named `name`.
    pub fn create_app_key(&self, name: &str) -> Result<AppKeyInfo, GolemError> {
        validate_name(name)?;
        if self.find_by_name(name)?.is_some() {
            return Err(GolemError::conflict(format!(
                "an app-key named {name:?} already exists"
            )));
        }
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        self.insert(name, hex::encode(bytes))
    }

    /// Register exactly `appkey` under `name`, replacing a different key of that name.
    pub fn register_app_key(&self, name: &str, appkey: &str) -> Result<AppKeyInfo, GolemError> {
        validate_name(name)?;
        if appkey.is_empty() || appkey.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(GolemError::bad_request(
                "an app-key must be non-empty and without spaces",
            ));
        }
        if let Some(existing) = self.find_by_name(name)? {
            if existing.key_hash == hex::encode(hash_key(appkey)) {
                return Ok(AppKeyInfo {
                    key: appkey.to_string(),
                    ..existing.listed()
                });
            }
            self.drop_app_key(name)?;
        }
        self.insert(name, appkey.to_string())
    }

    /// Every app-key, oldest first, each with its key masked to the prefix.
    pub fn list_app_keys(&self) -> Result<Vec<AppKeyInfo>, GolemError> {
        let mut keys = Vec::new();
        for entry in self.inner.tree.scan_prefix(APPKEY_PREFIX) {
            let (_, value) = entry.map_err(StoreError::from)?;
            keys.push(store::decode::<StoredAppKey>(TREE, &value)?.listed());
        }
        keys.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        Ok(keys)
    }

    pub fn drop_app_key(&self, name: &str) -> Result<(), GolemError> {
        if self.find_by_name(name)?.is_none() {
            return Err(GolemError::not_found(format!("no app-key named {name:?}")));
        }
        self.inner
            .tree
            .remove(format!("{APPKEY_PREFIX}{name}"))
            .map_err(StoreError::from)?;
        self.inner.tree.flush().map_err(StoreError::from)?;
        if let Ok(mut known) = self.inner.known.write() {
            known.retain(|existing| existing.info.name != name);
        }
        Ok(())
    }

    /// The bus endpoint for `/local/identity`.
    pub fn endpoint(&self) -> ServiceEndpoint {
        let get = self.clone();
        let create = self.clone();
        let list = self.clone();
        let drop = self.clone();
        ServiceEndpoint::new()
            .on(move |_caller, _: GetIdentity| {
                let node_id = get.node_id();
                async move { Ok(node_id) }
            })
            .on(move |_caller, message: CreateAppKey| {
                let result = create.create_app_key(&message.name);
                async move { result }
            })
            .on(move |_caller, _: ListAppKeys| {
                let result = list.list_app_keys();
                async move { result }
            })
            .on(move |_caller, message: DropAppKey| {
                let result = drop.drop_app_key(&message.name);
                async move { result }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golem_model::ErrorCode;

    fn open(dir: &std::path::Path, autoconf: Option<&str>) -> IdentityService {
        let store = crate::store::reopen::open_again(dir).unwrap();
        start(dir, &store, autoconf).unwrap()
    }

    #[test]
    fn app_keys_authenticate_until_dropped_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let created_key;
        let node_id;
        {
            let identity = open(dir.path(), None);
            node_id = identity.node_id();
            let created = identity.create_app_key("requestor").unwrap();
            created_key = created.key.clone();
            assert_eq!(created_key.len(), 32);
            assert_eq!(
                identity.authenticate(&created_key).unwrap().name,
                "requestor"
            );
            assert!(identity.authenticate("wrong").is_none());
            let duplicate = identity.create_app_key("requestor").unwrap_err();
            assert_eq!(duplicate.code, ErrorCode::Conflict);
        }
        let identity = open(dir.path(), None);
        assert_eq!(identity.node_id(), node_id);
        assert_eq!(
            identity.authenticate(&created_key).unwrap().identity,
            node_id
        );
        identity.drop_app_key("requestor").unwrap();
        assert!(identity.authenticate(&created_key).is_none());
        assert_eq!(
            identity.drop_app_key("requestor").unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn autoconf_registers_the_exact_key_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let identity = open(dir.path(), Some("scripted-key"));
            assert!(identity.authenticate("scripted-key").is_some());
        }
        let identity = open(dir.path(), Some("scripted-key"));
        assert_eq!(identity.list_app_keys().unwrap().len(), 1);
        drop(identity);
        let identity = open(dir.path(), Some("new-key"));
        assert!(identity.authenticate("scripted-key").is_none());
        assert!(identity.authenticate("new-key").is_some());
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let identity = open(dir.path(), None);
        for name in ["", "has space", "a/b", &"x".repeat(65)] {
            assert_eq!(
                identity.create_app_key(name).unwrap_err().code,
                ErrorCode::BadRequest,
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_store_keeps_a_hash_and_a_listing_shows_only_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let identity = open(dir.path(), None);
        let created = identity.create_app_key("requestor").unwrap();
        assert_eq!(created.key_prefix.as_deref(), Some(&created.key[..8]));
        let raw = identity
            .inner
            .tree
            .get(format!("{APPKEY_PREFIX}requestor"))
            .unwrap()
            .unwrap();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        assert!(!raw.contains(&created.key), "{raw}");
        assert!(raw.contains(&hex::encode(hash_key(&created.key))), "{raw}");
        let listed = identity.list_app_keys().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, format!("{}…", &created.key[..8]));
        assert_eq!(listed[0].key_prefix.as_deref(), Some(&created.key[..8]));
        assert!(identity.authenticate(&listed[0].key).is_none());
        assert!(identity.authenticate(&created.key[..8]).is_none());
    }

    #[test]
    fn plain_text_records_of_older_builds_are_hashed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let node_id;
        {
            let store = Store::open(dir.path()).unwrap();
            let identity = start(dir.path(), &store, None).unwrap();
            node_id = identity.node_id();
            let old = AppKeyInfo {
                name: "legacy".into(),
                key: "0123456789abcdef0123456789abcdef".into(),
                key_prefix: None,
                role: DEFAULT_ROLE.into(),
                identity: node_id,
                created: chrono::Utc::now(),
            };
            let tree = store.tree(TREE).unwrap();
            tree.insert("appkey/legacy", store::encode(&old).unwrap())
                .unwrap();
            tree.flush().unwrap();
        }
        let identity = open(dir.path(), None);
        let info = identity
            .authenticate("0123456789abcdef0123456789abcdef")
            .unwrap();
        assert_eq!((info.name.as_str(), info.identity), ("legacy", node_id));
        let raw = identity.inner.tree.get("appkey/legacy").unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("0123456789abcdef0123456789abcdef"));
        assert_eq!(identity.list_app_keys().unwrap()[0].key, "01234567…");
    }

    #[test]
    fn short_scripted_keys_keep_most_of_themselves_hidden() {
        assert_eq!(key_prefix("abc"), "");
        assert_eq!(key_prefix("node-appkey"), "no");
        assert_eq!(key_prefix(&"f".repeat(64)), "ffffffff");
    }

    #[test]
    fn hashes_compare_equal_only_when_every_byte_does() {
        let a = hash_key("a");
        let mut b = a;
        assert!(same_hash(&a, &b));
        b[31] ^= 1;
        assert!(!same_hash(&a, &b));
    }
}
