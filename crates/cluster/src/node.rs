//! Node addresses: a host and its CartActor and ControlPlane ports.

use std::fmt;
use std::str::FromStr;

/// Default CartActor port.
pub const DEFAULT_GRPC_PORT: u16 = 1337;
/// Default ControlPlane port.
pub const DEFAULT_CONTROL_PORT: u16 = 1338;

/// Where a node is reached. Written `host`, `host:grpc` or
/// `host:grpc:control`; omitted ports are the defaults, so the plan's bare
/// host names work and several nodes can share one IP in tests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Host name or IPv4 address.
    pub host: String,
    /// CartActor port.
    pub grpc_port: u16,
    /// ControlPlane port.
    pub control_port: u16,
}

impl NodeAddr {
    /// The URI of the node's CartActor endpoint; both services are served
    /// there, so one channel per host carries all node-to-node calls.
    pub fn grpc_uri(&self) -> String {
        format!("http://{}:{}", self.host, self.grpc_port)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if (self.grpc_port, self.control_port) != (DEFAULT_GRPC_PORT, DEFAULT_CONTROL_PORT) {
            write!(f, ":{}", self.grpc_port)?;
            if self.control_port != DEFAULT_CONTROL_PORT {
                write!(f, ":{}", self.control_port)?;
            }
        }
        Ok(())
    }
}

impl FromStr for NodeAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {p:?} in {s:?}"));
        let host = parts.first().copied().unwrap_or_default();
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid_host {
            return Err(format!("bad host in {s:?}: use host[:grpc_port[:control_port]]"));
        }
        let (grpc_port, control_port) = match parts.as_slice() {
            [_] => (DEFAULT_GRPC_PORT, DEFAULT_CONTROL_PORT),
            [_, g] => (port(g)?, DEFAULT_CONTROL_PORT),
            [_, g, c] => (port(g)?, port(c)?),
            _ => {
                return Err(format!("bad node address {s:?}: use host[:grpc_port[:control_port]]"));
            }
        };
        Ok(NodeAddr { host: host.to_owned(), grpc_port, control_port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_all_forms() {
        for (text, printed) in [
            ("cart-0", "cart-0"),
            ("10.0.0.7:1337", "10.0.0.7"),
            ("127.0.0.1:4001", "127.0.0.1:4001"),
            ("127.0.0.1:4001:4002", "127.0.0.1:4001:4002"),
            ("h:1337:9", "h:1337:9"),
        ] {
            let addr: NodeAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), printed);
            assert_eq!(printed.parse::<NodeAddr>().unwrap(), addr);
        }
        assert!("".parse::<NodeAddr>().is_err());
        assert!("a:b".parse::<NodeAddr>().is_err());
        assert!("a:1:2:3".parse::<NodeAddr>().is_err());
        assert!("a b".parse::<NodeAddr>().is_err());
    }
}
