//! Identity service: owns the node key (and so the NodeId) and the app-keys that
//! guard the REST API. It answers `/local/identity` on the bus and gives the API
//! a fast in-memory lookup from app-key to its record. It must never expose the
//! secret key outside the process except to the net service that derives the
//! PeerId from it.

mod key;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use golem_bus::ServiceEndpoint;
use golem_model::identity::{AppKeyInfo, CreateAppKey, DropAppKey, GetIdentity, ListAppKeys};
use golem_model::{GolemError, NodeId};
use rand::RngCore;

pub use key::NodeKey;

use crate::store::{self, Store, StoreError};

const TREE: &str = "identity";
const APPKEY_PREFIX: &str = "appkey/";
/// Name under which `GOLEM_AUTOCONF_APPKEY` is registered.
pub const AUTOCONF_APPKEY_NAME: &str = "autoconfigured";
/// Role reported by `/me`; yagna reports `manager` for app-keys of the default identity.
const DEFAULT_ROLE: &str = "manager";

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

/// Handle to the identity service. Cheap to clone.
#[derive(Clone)]
pub struct IdentityService {
    inner: Arc<Inner>,
}

struct Inner {
    key: NodeKey,
    node_id: NodeId,
    tree: sled::Tree,
    /// App-key value → record, for the REST auth check on every request.
    by_key: RwLock<HashMap<String, Arc<AppKeyInfo>>>,
}

/// Load or create the node key in `data_dir`, load app-keys from `store`, and
/// register `autoconf_appkey` when given.
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
    let mut by_key = HashMap::new();
    for entry in tree.scan_prefix(APPKEY_PREFIX) {
        let (_, value) = entry.map_err(StoreError::from)?;
        let info: AppKeyInfo = store::decode(TREE, &value)?;
        by_key.insert(info.key.clone(), Arc::new(info));
    }
    let service = IdentityService {
        inner: Arc::new(Inner {
            key,
            node_id,
            tree,
            by_key: RwLock::new(by_key),
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

    /// The record of `appkey`, or None when it is not a registered key.
    pub fn authenticate(&self, appkey: &str) -> Option<Arc<AppKeyInfo>> {
        self.inner.by_key.read().ok()?.get(appkey).cloned()
    }

    fn store_record(&self, info: &AppKeyInfo) -> Result<(), GolemError> {
        let key = format!("{APPKEY_PREFIX}{}", info.name);
        self.inner
            .tree
            .insert(key, store::encode(info)?)
            .map_err(StoreError::from)?;
        self.inner.tree.flush().map_err(StoreError::from)?;
        Ok(())
    }

    fn find_by_name(&self, name: &str) -> Result<Option<AppKeyInfo>, GolemError> {
        match self
            .inner
            .tree
            .get(format!("{APPKEY_PREFIX}{name}"))
            .map_err(StoreError::from)?
        {
            Some(bytes) => Ok(Some(store::decode(TREE, &bytes)?)),
            None => Ok(None),
        }
    }

    fn insert(&self, name: &str, appkey: String) -> Result<AppKeyInfo, GolemError> {
        let info = AppKeyInfo {
            name: name.to_string(),
            key: appkey,
            role: DEFAULT_ROLE.to_string(),
            identity: self.inner.node_id,
            created: chrono::Utc::now(),
        };
        self.store_record(&info)?;
        if let Ok(mut by_key) = self.inner.by_key.write() {
            by_key.insert(info.key.clone(), Arc::new(info.clone()));
        }
        Ok(info)
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
            if existing.key == appkey {
                return Ok(existing);
            }
            self.drop_app_key(name)?;
        }
        self.insert(name, appkey.to_string())
    }

    pub fn list_app_keys(&self) -> Result<Vec<AppKeyInfo>, GolemError> {
        let mut keys = Vec::new();
        for entry in self.inner.tree.scan_prefix(APPKEY_PREFIX) {
            let (_, value) = entry.map_err(StoreError::from)?;
            keys.push(store::decode::<AppKeyInfo>(TREE, &value)?);
        }
        keys.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        Ok(keys)
    }

    pub fn drop_app_key(&self, name: &str) -> Result<(), GolemError> {
        let Some(existing) = self.find_by_name(name)? else {
            return Err(GolemError::not_found(format!("no app-key named {name:?}")));
        };
        self.inner
            .tree
            .remove(format!("{APPKEY_PREFIX}{name}"))
            .map_err(StoreError::from)?;
        self.inner.tree.flush().map_err(StoreError::from)?;
        if let Ok(mut by_key) = self.inner.by_key.write() {
            by_key.remove(&existing.key);
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
        let store = Store::open(dir).unwrap();
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
}
