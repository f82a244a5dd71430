//! Classification of bus addresses into local, public and remote (`/net/<node>/...`).

pub use golem_model::bus::net_address;
use golem_model::{GolemError, NodeId};

/// A parsed bus address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address<'a> {
    /// `/local/...`: only callers inside this node.
    Local(&'a str),
    /// `/public/...`: callers inside this node and remote nodes.
    Public(&'a str),
    /// `/net/<node>/<rest>`: deliver `<rest>` (which must be public) to `node`.
    Remote { node: NodeId, rest: &'a str },
}

impl<'a> Address<'a> {
    pub fn parse(text: &'a str) -> Result<Address<'a>, GolemError> {
        if text.starts_with("/local/") {
            return Ok(Address::Local(text));
        }
        if text.starts_with("/public/") {
            return Ok(Address::Public(text));
        }
        if let Some(after_net) = text.strip_prefix("/net/") {
            let (node_text, rest_without_slash) = after_net.split_once('/').ok_or_else(|| {
                GolemError::bad_request(format!(
                    "bus address {text:?} names no service after the node id"
                ))
            })?;
            let node = node_text
                .parse::<NodeId>()
                .map_err(|error| GolemError::bad_request(error.to_string()))?;
            let rest = &after_net[node_text.len()..];
            if !rest_without_slash.starts_with("public/") {
                return Err(GolemError::forbidden(format!(
                    "bus address {text:?}: only /public/ services of other nodes can be called"
                )));
            }
            return Ok(Address::Remote { node, rest });
        }
        Err(GolemError::bad_request(format!(
            "bus address {text:?} must start with /local/, /public/ or /net/<nodeId>/"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golem_model::ErrorCode;

    #[test]
    fn classifies_addresses() {
        assert_eq!(
            Address::parse("/local/identity").unwrap(),
            Address::Local("/local/identity")
        );
        assert_eq!(
            Address::parse("/public/market").unwrap(),
            Address::Public("/public/market")
        );
        let remote =
            Address::parse("/net/0x2c7536e3605d9c16a7a3d7b1898e529396a65c23/public/market")
                .unwrap();
        match remote {
            Address::Remote { node, rest } => {
                assert_eq!(
                    node.to_string(),
                    "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
                );
                assert_eq!(rest, "/public/market");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refuses_remote_local_and_garbage() {
        let error =
            Address::parse("/net/0x2c7536e3605d9c16a7a3d7b1898e529396a65c23/local/identity")
                .unwrap_err();
        assert_eq!(error.code, ErrorCode::Forbidden);
        assert_eq!(
            Address::parse("identity").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            Address::parse("/net/0x12/public/x").unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
}
