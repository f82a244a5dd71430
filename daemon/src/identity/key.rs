//! The node's secp256k1 key: created on first start, kept in the data dir with
//! mode 0600, and the source of the NodeId (its Ethereum address) and, later,
//! of the libp2p PeerId.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use golem_model::NodeId;
use k256::elliptic_curve::sec1::ToEncodedPoint;

use super::IdentityError;

pub struct NodeKey {
    secret: k256::SecretKey,
}

impl NodeKey {
    pub fn generate() -> Self {
        NodeKey {
            secret: k256::SecretKey::random(&mut rand::rngs::OsRng),
        }
    }

    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Self, IdentityError> {
        let secret = k256::SecretKey::from_slice(bytes)
            .map_err(|_| IdentityError::InvalidKey("not a valid secp256k1 secret".into()))?;
        Ok(NodeKey { secret })
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes().into()
    }

    pub fn node_id(&self) -> NodeId {
        let point = self.secret.public_key().to_encoded_point(false);
        let mut uncompressed = [0u8; 65];
        uncompressed.copy_from_slice(point.as_bytes());
        NodeId::from_uncompressed_public_key(&uncompressed)
    }

    /// Load the key at `path`, or create it (mode 0600) when the file is missing.
    pub fn load_or_create(path: &Path) -> Result<(NodeKey, bool), IdentityError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = Self::parse_file(&text).map_err(|message| {
                    IdentityError::InvalidKey(format!("{}: {message}", path.display()))
                })?;
                let mode = std::fs::metadata(path)
                    .map(|meta| meta.permissions().mode() & 0o777)
                    .unwrap_or(0o600);
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "identity key was readable by others; setting mode 0600");
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|source| IdentityError::KeyFile {
                            path: path.to_path_buf(),
                            source,
                        })?;
                }
                Ok((key, false))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = NodeKey::generate();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| IdentityError::KeyFile {
                        path: path.to_path_buf(),
                        source,
                    })?;
                writeln!(file, "{}", hex::encode(key.secret_bytes()))
                    .and_then(|_| file.sync_all())
                    .map_err(|source| IdentityError::KeyFile {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Ok((key, true))
            }
            Err(source) => Err(IdentityError::KeyFile {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn parse_file(text: &str) -> Result<NodeKey, String> {
        let digits = text.trim().trim_start_matches("0x");
        let bytes = hex::decode(digits).map_err(|error| format!("not hex: {error}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "expected 32 bytes".to_string())?;
        NodeKey::from_secret_bytes(&bytes).map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_private_key_gives_its_known_ethereum_address() {
        // The example account of the web3.js documentation.
        let secret =
            hex::decode("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
                .unwrap();
        let key = NodeKey::from_secret_bytes(&secret.try_into().unwrap()).unwrap();
        assert_eq!(
            key.node_id().to_string(),
            "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
        );
    }

    #[test]
    fn anvil_default_account_matches() {
        let secret =
            hex::decode("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
                .unwrap();
        let key = NodeKey::from_secret_bytes(&secret.try_into().unwrap()).unwrap();
        assert_eq!(
            key.node_id().to_string(),
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        );
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let (created, was_created) = NodeKey::load_or_create(&path).unwrap();
        assert!(was_created);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (loaded, was_created) = NodeKey::load_or_create(&path).unwrap();
        assert!(!was_created);
        assert_eq!(created.node_id(), loaded.node_id());
    }

    #[test]
    fn corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, "zz").unwrap();
        let error = NodeKey::load_or_create(&path).err().unwrap().to_string();
        assert!(
            error.contains("identity.key") && error.contains("not hex"),
            "{error}"
        );
    }
}
