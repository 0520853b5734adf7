//! Where candidate members come from. Discovery only proposes hosts;
//! membership admits them after a successful ping.

use async_trait::async_trait;

use crate::node::NodeAddr;

/// A source of candidate peers, polled periodically.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// The hosts currently known to this source.
    async fn peers(&self) -> Result<Vec<NodeAddr>, String>;
}

/// A fixed list (`--peers a,b,c`).
pub struct StaticPeers(pub Vec<NodeAddr>);

#[async_trait]
impl Discovery for StaticPeers {
    async fn peers(&self) -> Result<Vec<NodeAddr>, String> {
        Ok(self.0.clone())
    }
}

/// A DNS name (typically a Kubernetes headless service) re-resolved on every
/// poll; each address found is a peer on the default (or given) ports.
pub struct DnsPeers {
    /// Name to resolve.
    pub name: String,
    /// CartActor port of the peers.
    pub grpc_port: u16,
    /// ControlPlane port of the peers.
    pub control_port: u16,
}

#[async_trait]
impl Discovery for DnsPeers {
    async fn peers(&self) -> Result<Vec<NodeAddr>, String> {
        let found = tokio::net::lookup_host((self.name.as_str(), self.grpc_port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.name))?;
        let mut peers: Vec<NodeAddr> = found
            .filter(|a| a.is_ipv4())
            .map(|a| NodeAddr {
                host: a.ip().to_string(),
                grpc_port: self.grpc_port,
                control_port: self.control_port,
            })
            .collect();
        peers.sort();
        peers.dedup();
        Ok(peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dns_resolves_localhost_to_peers() {
        let dns = DnsPeers { name: "localhost".into(), grpc_port: 4001, control_port: 4002 };
        let peers = dns.peers().await.unwrap();
        assert!(peers.contains(&"127.0.0.1:4001:4002".parse().unwrap()), "{peers:?}");
        let missing =
            DnsPeers { name: "no-such-host.invalid".into(), grpc_port: 1, control_port: 2 };
        assert!(missing.peers().await.is_err());
    }
}
