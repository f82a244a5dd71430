//! The requestor's Net API (`/net-api/v1`): virtual networks between the
//! requestor and the providers it rents, their member nodes and addresses,
//! and the WebSocket address that carries one TCP connection into a member.

use golem_model::vpn::{Network, NetworkAddress, NetworkNode, NewNetwork};

use crate::{ClientError, GolemClient};

const NET_API: &str = "/net-api/v1";

impl GolemClient {
    /// `POST /net`: a new network of this app-key's identity.
    pub async fn create_network(&self, network: &NewNetwork) -> Result<Network, ClientError> {
        self.post(&format!("{NET_API}/net"), network).await
    }

    /// `GET /net-api/v2/net/status`: the node's network facts (NodeId, listen
    /// addresses, connected peers, relay state) as the daemon reports them.
    pub async fn net_status(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/net-api/v2/net/status").await
    }

    /// `GET /net`.
    pub async fn networks(&self) -> Result<Vec<Network>, ClientError> {
        self.get(&format!("{NET_API}/net")).await
    }

    /// `DELETE /net/{id}`: the network and its connections end.
    pub async fn delete_network(&self, network_id: &str) -> Result<(), ClientError> {
        self.delete(&format!("{NET_API}/net/{network_id}")).await
    }

    /// `POST /net/{id}/addresses`: an address of the requestor in the network.
    pub async fn add_network_address(&self, network_id: &str, ip: &str) -> Result<(), ClientError> {
        let address = NetworkAddress { ip: ip.to_string() };
        self.post_no_reply(
            &format!("{NET_API}/net/{network_id}/addresses"),
            Some(&address),
        )
        .await
    }

    /// `POST /net/{id}/nodes`: node `node_id` is a member at `ip`.
    pub async fn add_network_node(
        &self,
        network_id: &str,
        node_id: &str,
        ip: &str,
    ) -> Result<(), ClientError> {
        let node = NetworkNode {
            id: node_id.to_string(),
            ip: ip.to_string(),
        };
        self.post_no_reply(&format!("{NET_API}/net/{network_id}/nodes"), Some(&node))
            .await
    }

    /// `DELETE /net/{id}/nodes/{nodeId}`.
    pub async fn remove_network_node(
        &self,
        network_id: &str,
        node_id: &str,
    ) -> Result<(), ClientError> {
        self.delete(&format!("{NET_API}/net/{network_id}/nodes/{node_id}"))
            .await
    }

    /// The WebSocket URL of a TCP connection to `ip:port` in the network
    /// (`ws://…/net-api/v1/net/{id}/tcp/{ip}/{port}`), and the app-key to
    /// send as `Authorization: Bearer`.
    pub fn tcp_socket_url(&self, network_id: &str, ip: &str, port: u16) -> (String, &str) {
        let base = self
            .base_url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        (
            format!("{base}{NET_API}/net/{network_id}/tcp/{ip}/{port}"),
            &self.app_key,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcp_socket_url_is_the_websocket_form_of_the_api_url() {
        let client = GolemClient::new("http://127.0.0.1:7465/", "key");
        let (url, key) = client.tcp_socket_url("abc", "192.168.0.2", 80);
        assert_eq!(
            url,
            "ws://127.0.0.1:7465/net-api/v1/net/abc/tcp/192.168.0.2/80"
        );
        assert_eq!(key, "key");
        let secure = GolemClient::new("https://node.example", "k");
        assert!(secure
            .tcp_socket_url("n", "10.0.0.2", 1)
            .0
            .starts_with("wss://node.example/"));
    }
}
