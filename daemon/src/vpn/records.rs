//! A network as the `vpn` sled tree keeps it (key: the network id, value: a
//! JSON [`NetworkRecord`]): what survives a restart is the network, its owner,
//! the requestor's addresses and the member table; stacks and sockets do not.
//! The membership rules (which addresses are free, what is idempotent) live
//! here, on the record, so they are tested without a stack.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use golem_model::vpn::{Network, NetworkAddress, NetworkNode};
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};

use super::address::Subnet;
use crate::store::{self, StoreError};

pub const TREE: &str = "vpn";

/// The interface of a stack holds at most this many addresses
/// (smoltcp's `iface-max-addr-count-8`): the gateway and the added ones.
pub const MAX_OWN_ADDRESSES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRecord {
    pub id: String,
    /// The identity of the app-key that created it; nobody else sees it.
    pub owner: NodeId,
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The requestor's first address (its stack's, and the members' route).
    pub gateway: Ipv4Addr,
    /// Addresses of the requestor added after creation (`POST /addresses`,
    /// or `POST /nodes` with our own NodeId), in order; the first one is the
    /// source of outbound connections, since that is the address SDKs tell
    /// providers the requestor has.
    pub addresses: Vec<Ipv4Addr>,
    /// Member nodes by address (a node may have several).
    pub nodes: BTreeMap<Ipv4Addr, NodeId>,
}

/// What a membership change did, for the pushes to members.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing new (an idempotent repeat).
    Unchanged,
    /// The record changed: write it, tell the stack and the members.
    Changed,
}

impl NetworkRecord {
    pub fn new(id: String, owner: NodeId, subnet: Subnet, gateway: Ipv4Addr) -> NetworkRecord {
        NetworkRecord {
            id,
            owner,
            address: subnet.address,
            prefix: subnet.prefix,
            gateway,
            addresses: Vec::new(),
            nodes: BTreeMap::new(),
        }
    }

    pub fn subnet(&self) -> Subnet {
        Subnet::new(self.address, self.prefix)
    }

    pub fn to_network(&self) -> Network {
        let subnet = self.subnet();
        Network {
            id: self.id.clone(),
            ip: subnet.to_string(),
            mask: subnet.mask().to_string(),
            gateway: self.gateway.to_string(),
        }
    }

    /// The requestor's addresses: the gateway, then the added ones.
    pub fn own_addresses(&self) -> Vec<Ipv4Addr> {
        let mut addresses = vec![self.gateway];
        for address in &self.addresses {
            if !addresses.contains(address) {
                addresses.push(*address);
            }
        }
        addresses
    }

    /// The source address of outbound connections.
    pub fn source_address(&self) -> Ipv4Addr {
        self.addresses.first().copied().unwrap_or(self.gateway)
    }

    pub fn address_list(&self) -> Vec<NetworkAddress> {
        self.own_addresses()
            .into_iter()
            .map(|ip| NetworkAddress { ip: ip.to_string() })
            .collect()
    }

    pub fn node_list(&self) -> Vec<NetworkNode> {
        self.nodes
            .iter()
            .map(|(ip, node)| NetworkNode {
                id: node.to_string(),
                ip: ip.to_string(),
            })
            .collect()
    }

    /// The distinct member nodes.
    pub fn members(&self) -> Vec<NodeId> {
        let mut members: Vec<NodeId> = self.nodes.values().copied().collect();
        members.sort_by_key(|node| node.to_string());
        members.dedup();
        members
    }

    /// The IP -> NodeId table members get, the requestor's addresses included.
    pub fn routing_table(&self) -> BTreeMap<String, NodeId> {
        let mut table: BTreeMap<String, NodeId> = self
            .nodes
            .iter()
            .map(|(ip, node)| (ip.to_string(), *node))
            .collect();
        for ip in self.own_addresses() {
            table.insert(ip.to_string(), self.owner);
        }
        table
    }

    /// Add an address of the requestor; repeating one is fine, taking a
    /// member's is a 400 naming `ip`.
    pub fn add_own_address(&mut self, ip: Ipv4Addr) -> Result<Change, GolemError> {
        if self.own_addresses().contains(&ip) {
            return Ok(Change::Unchanged);
        }
        if let Some(node) = self.nodes.get(&ip) {
            return Err(GolemError::bad_request(format!(
                "invalid ip: {ip} is already taken by node {node} in network {}",
                self.id
            )));
        }
        if self.own_addresses().len() >= MAX_OWN_ADDRESSES {
            return Err(GolemError::bad_request(format!(
                "invalid ip: the requestor already has {MAX_OWN_ADDRESSES} addresses in network {}",
                self.id
            )));
        }
        self.addresses.push(ip);
        Ok(Change::Changed)
    }

    /// Add `node` at `ip`; repeating a mapping is fine, an address that is
    /// taken (by another node or by the requestor) is a 400 naming `ip`.
    pub fn add_node(&mut self, node: NodeId, ip: Ipv4Addr) -> Result<Change, GolemError> {
        if node == self.owner {
            return self.add_own_address(ip);
        }
        if self.own_addresses().contains(&ip) {
            return Err(GolemError::bad_request(format!(
                "invalid ip: {ip} is the requestor's own address in network {}",
                self.id
            )));
        }
        match self.nodes.get(&ip) {
            Some(existing) if *existing == node => Ok(Change::Unchanged),
            Some(existing) => Err(GolemError::bad_request(format!(
                "invalid ip: {ip} is already taken by node {existing} in network {}",
                self.id
            ))),
            None => {
                self.nodes.insert(ip, node);
                Ok(Change::Changed)
            }
        }
    }

    /// Remove every address of `node`; the addresses it had.
    pub fn remove_node(&mut self, node: NodeId) -> Vec<Ipv4Addr> {
        let removed: Vec<Ipv4Addr> = self
            .nodes
            .iter()
            .filter(|(_, member)| **member == node)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &removed {
            self.nodes.remove(ip);
        }
        removed
    }
}

/// The `vpn` tree: one record per network.
#[derive(Clone)]
pub struct Db {
    pub tree: sled::Tree,
}

impl Db {
    pub fn load(&self) -> Result<Vec<NetworkRecord>, StoreError> {
        let mut records = Vec::new();
        for item in self.tree.iter() {
            let (_, value) = item?;
            records.push(store::decode(TREE, &value)?);
        }
        Ok(records)
    }

    pub fn put(&self, record: &NetworkRecord) -> Result<(), StoreError> {
        self.tree
            .insert(record.id.as_bytes(), store::encode(record)?)?;
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.tree.remove(id.as_bytes())?;
        Ok(())
    }

    /// Flush what was written (before a change is acknowledged).
    pub async fn flush(tree: sled::Tree) -> Result<(), GolemError> {
        crate::store::flush_tree(tree)
            .await
            .map_err(|error| StoreError::from(error).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(digit: char) -> NodeId {
        format!("0x{}", digit.to_string().repeat(40))
            .parse()
            .unwrap_or_else(|error| panic!("{error:?}"))
    }

    fn record() -> NetworkRecord {
        NetworkRecord::new(
            "n1".into(),
            node('a'),
            Subnet::new(Ipv4Addr::new(192, 168, 0, 0), 24),
            Ipv4Addr::new(192, 168, 0, 1),
        )
    }

    #[test]
    fn adding_is_idempotent_and_taken_addresses_are_refused() {
        let mut record = record();
        let ip2 = Ipv4Addr::new(192, 168, 0, 2);
        assert_eq!(record.add_node(node('b'), ip2), Ok(Change::Changed));
        assert_eq!(record.add_node(node('b'), ip2), Ok(Change::Unchanged));
        let taken = record.add_node(node('c'), ip2).expect_err("taken");
        assert!(taken.message.starts_with("invalid ip"), "{}", taken.message);
        let own = record
            .add_node(node('c'), Ipv4Addr::new(192, 168, 0, 1))
            .expect_err("own");
        assert!(own.message.contains("own address"), "{}", own.message);
        // Our own NodeId is a local address, not a peer (golem-js adds itself).
        assert!(record.add_node(node('a'), ip2).is_err());
        assert_eq!(
            record.add_node(node('a'), Ipv4Addr::new(192, 168, 0, 1)),
            Ok(Change::Unchanged)
        );
        assert_eq!(
            record.add_node(node('a'), Ipv4Addr::new(192, 168, 0, 9)),
            Ok(Change::Changed)
        );
        assert_eq!(record.members(), vec![node('b')]);
        assert_eq!(record.source_address(), Ipv4Addr::new(192, 168, 0, 9));
        assert_eq!(
            record.routing_table().get("192.168.0.9").copied(),
            Some(node('a'))
        );
        assert_eq!(record.remove_node(node('b')), vec![ip2]);
        assert!(record.remove_node(node('b')).is_empty());
    }

    #[test]
    fn the_requestor_has_at_most_eight_addresses() {
        let mut record = record();
        for last in 2..=8 {
            record
                .add_own_address(Ipv4Addr::new(192, 168, 0, last))
                .expect("room");
        }
        let error = record
            .add_own_address(Ipv4Addr::new(192, 168, 0, 20))
            .expect_err("full");
        assert!(error.message.starts_with("invalid ip"), "{}", error.message);
    }
}
