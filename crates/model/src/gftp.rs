//! gftp wire messages: file transfer between nodes over the bus, the way the
//! original's gftp works. A published file is bound at `/public/gftp/<name>`
//! (`<name>` is the file's sha3-256 in lowercase hex) and read with
//! [`GetMetadata`] and [`GetChunk`]; an upload slot (`<name>` random) takes
//! [`UploadChunk`]s and one [`UploadFinished`] carrying the sha3 the receiver
//! verifies. Other nodes reach both through `/net/<nodeId>/public/gftp/<name>`,
//! and the user-facing address is the URL `gftp://<nodeId>/<name>` ([`GftpUrl`]).
//!
//! Chunk bytes travel as standard padded base64 text (the bus carries JSON).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bus::BusMessage;
use crate::NodeId;

/// Prefix of every gftp address; a file is at `/public/gftp/<name>`.
pub const GFTP_SERVICE: &str = "/public/gftp";

/// Largest chunk a publisher serves in one [`GetChunk`] (fits the net's 4 MiB
/// message limit once base64-encoded).
pub const MAX_CHUNK_SIZE: u64 = 2 * 1024 * 1024;

/// Longest accepted file name in a gftp address or URL.
pub const MAX_NAME_LEN: usize = 128;

/// The bus address of the gftp file `name` on this node.
pub fn file_address(name: &str) -> String {
    format!("{GFTP_SERVICE}/{name}")
}

/// Ask a published file for its size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMetadata {}
impl BusMessage for GetMetadata {
    const NAME: &'static str = "GetMetadata";
    type Reply = GftpMetadata;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GftpMetadata {
    pub file_size: u64,
}

/// Read `size` bytes at `offset` of a published file (fewer at its end; at
/// most [`MAX_CHUNK_SIZE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetChunk {
    pub offset: u64,
    pub size: u64,
}
impl BusMessage for GetChunk {
    const NAME: &'static str = "GetChunk";
    type Reply = GftpChunk;
}

/// A piece of a file: `content` is the base64 (standard, padded) of the bytes
/// that start at `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GftpChunk {
    pub offset: u64,
    pub content: String,
}

/// Write one chunk into an upload slot (chunks may arrive in any order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadChunk {
    pub chunk: GftpChunk,
}
impl BusMessage for UploadChunk {
    const NAME: &'static str = "UploadChunk";
    type Reply = ();
}

/// End an upload. With `hash` (sha3-256, lowercase hex, of the whole file) the
/// receiver checks the file and answers BadRequest on a mismatch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadFinished {
    #[serde(default)]
    pub hash: Option<String>,
}
impl BusMessage for UploadFinished {
    const NAME: &'static str = "UploadFinished";
    type Reply = ();
}

/// `gftp://<nodeId>/<name>`: file `name` served by the node `node_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GftpUrl {
    pub node_id: NodeId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gftp url {url:?}: {reason}")]
pub struct GftpUrlError {
    pub url: String,
    pub reason: String,
}

impl GftpUrl {
    pub fn new(node_id: NodeId, name: impl Into<String>) -> GftpUrl {
        GftpUrl {
            node_id,
            name: name.into(),
        }
    }

    /// The address of this file as seen from any node of the network.
    pub fn remote_address(&self) -> String {
        crate::bus::net_address(self.node_id, &file_address(&self.name))
    }

    /// Whether the name is a sha3-256 (64 lowercase hex digits), as the names
    /// of published files are; upload slots have random names.
    pub fn is_content_hash(&self) -> bool {
        is_sha3_hex(&self.name)
    }
}

/// 64 lowercase hex digits.
pub fn is_sha3_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// A file name usable in an address: 1..=128 ASCII letters, digits, `-` and `_`
/// (golem-js names its files by UUID); never `/` or `.`, so a name cannot
/// leave its address.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

impl fmt::Display for GftpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gftp://{}/{}", self.node_id, self.name)
    }
}

impl FromStr for GftpUrl {
    type Err = GftpUrlError;

    fn from_str(text: &str) -> Result<GftpUrl, GftpUrlError> {
        let error = |reason: &str| GftpUrlError {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let rest = text
            .strip_prefix("gftp://")
            .ok_or_else(|| error("it must start with gftp://"))?;
        let (node, name) = rest
            .split_once('/')
            .ok_or_else(|| error("expected gftp://<nodeId>/<name>"))?;
        let node_id = node
            .parse::<NodeId>()
            .map_err(|_| error("the host is not a node id (0x followed by 40 hex digits)"))?;
        if !is_valid_name(name) {
            return Err(error(
                "the name must be 1 to 128 ASCII letters, digits, - or _ (a sha3 hash for published files)",
            ));
        }
        Ok(GftpUrl::new(node_id, name))
    }
}

impl Serialize for GftpUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GftpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NODE: &str = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23";

    #[test]
    fn urls_round_trip_and_name_their_address() {
        let hash = "a".repeat(64);
        let text = format!("gftp://{NODE}/{hash}");
        let url: GftpUrl = text.parse().unwrap();
        assert_eq!(url.to_string(), text);
        assert!(url.is_content_hash());
        assert_eq!(
            url.remote_address(),
            format!("/net/{NODE}/public/gftp/{hash}")
        );
        let json = serde_json::to_string(&url).unwrap();
        assert_eq!(serde_json::from_str::<GftpUrl>(&json).unwrap(), url);
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "http://x/y".to_string(),
            format!("gftp://{NODE}"),
            format!("gftp://{NODE}/"),
            format!("gftp://{NODE}/../local/identity"),
            format!("gftp://{NODE}/a/b"),
            "gftp://0x12/abc".to_string(),
            format!("gftp://{NODE}/{}", "a".repeat(129)),
        ] {
            assert!(bad.parse::<GftpUrl>().is_err(), "{bad} accepted");
        }
        let random: GftpUrl = format!("gftp://{NODE}/Abc123").parse().unwrap();
        assert!(!random.is_content_hash());
    }

    #[test]
    fn messages_have_the_original_shape() {
        assert_eq!(
            serde_json::to_value(GetMetadata {}).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(GftpMetadata { file_size: 3 }).unwrap(),
            serde_json::json!({"fileSize": 3})
        );
        let finished: UploadFinished = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(finished.hash, None);
    }
}
