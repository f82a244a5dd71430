//! Node identities and app-keys: the [`NodeId`] (an Ethereum address derived from
//! the node's secp256k1 key), the `/me` DTO and the identity service's bus messages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bus::BusMessage;

/// A node's identity: the 20-byte Ethereum address of its secp256k1 public key.
/// Displayed and serialized as `0x` + 40 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 20]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {input:?}: expected 0x followed by 40 hex digits")]
pub struct ParseNodeIdError {
    input: String,
}

impl NodeId {
    pub const fn from_bytes(bytes: [u8; 20]) -> Self {
        NodeId(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The Ethereum address of a secp256k1 public key given in SEC1 uncompressed
    /// form (`0x04 || x || y`): the last 20 bytes of keccak-256 over `x || y`.
    pub fn from_uncompressed_public_key(public_key: &[u8; 65]) -> Self {
        use sha3::{Digest, Keccak256};
        let hash = Keccak256::digest(&public_key[1..]);
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(&hash[12..]);
        NodeId(bytes)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseNodeIdError {
            input: input.to_string(),
        };
        let digits = input
            .strip_prefix("0x")
            .or_else(|| input.strip_prefix("0X"))
            .ok_or_else(error)?;
        if digits.len() != 40 {
            return Err(error());
        }
        let mut bytes = [0u8; 20];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let pair = digits.get(index * 2..index * 2 + 2).ok_or_else(error)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| error())?;
        }
        Ok(NodeId(bytes))
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Reply of `GET /me`: yapapi reads only `identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeResponse {
    pub identity: NodeId,
    pub name: String,
    pub role: String,
}

/// Reply of `GET /local-api/v1/bus` (our own route, loopback callers only):
/// where the daemon's bus socket is, for the node's own agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BusInfo {
    pub bus_socket: String,
    pub node_id: NodeId,
}

/// An app-key as listed by `app-key list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppKeyInfo {
    pub name: String,
    /// The key itself only where it was just created; the daemon stores a
    /// hash, so a listing shows the masked prefix (`key_prefix` + `…`) here.
    pub key: String,
    /// The first characters of the key, to tell keys apart in a listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    pub role: String,
    pub identity: NodeId,
    pub created: chrono::DateTime<chrono::Utc>,
}

/// Bus endpoint of the daemon's identity service.
pub const IDENTITY_SERVICE: &str = "/local/identity";

/// Ask for the node's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetIdentity;
impl BusMessage for GetIdentity {
    const NAME: &'static str = "GetIdentity";
    type Reply = NodeId;
}

/// Create an app-key named `name`; fails with Conflict when the name is taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateAppKey {
    pub name: String,
}
impl BusMessage for CreateAppKey {
    const NAME: &'static str = "CreateAppKey";
    type Reply = AppKeyInfo;
}

/// List every app-key, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListAppKeys;
impl BusMessage for ListAppKeys {
    const NAME: &'static str = "ListAppKeys";
    type Reply = Vec<AppKeyInfo>;
}

/// Remove the app-key named `name`; NotFound when there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropAppKey {
    pub name: String,
}
impl BusMessage for DropAppKey {
    const NAME: &'static str = "DropAppKey";
    type Reply = ();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_parses_and_prints_lowercase() {
        let id: NodeId = "0x2C7536E3605D9C16a7a3D7b1898e529396a65c23"
            .parse()
            .unwrap();
        assert_eq!(id.to_string(), "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23");
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"0x2c7536e3605d9c16a7a3d7b1898e529396a65c23\""
        );
    }

    #[test]
    fn node_id_rejects_bad_input() {
        for bad in [
            "",
            "0x",
            "2c7536e3605d9c16a7a3d7b1898e529396a65c23",
            "0x2c75",
            "0xzz7536e3605d9c16a7a3d7b1898e529396a65c23",
            "0x2c7536e3605d9c16a7a3d7b1898e529396a65c2300",
        ] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?} parsed");
        }
    }
}
