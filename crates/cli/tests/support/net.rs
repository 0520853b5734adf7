//! Network namespaces for fault tests: every node in a namespace of its
//! own, joined by one bridge; links between nodes are cut with static ARP
//! entries that point them at nowhere (iptables is not installed here),
//! while the root namespace (the test, a shared PostgreSQL) still reaches
//! every node. Needs root (`ip netns`).

use std::process::Command;

/// The namespaces, veth pairs and bridge of one test; removed on drop.
pub struct Net {
    tag: String,
    nodes: usize,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// Namespaces for `nodes` nodes (1-based), each with its address on one
    /// bridge; the root namespace reaches them all at [`Net::host`].
    pub fn new(nodes: usize) -> Net {
        remove_stale();
        let tag = format!("{:x}", std::process::id() % 0xfffff);
        let net = Net { tag, nodes };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["addr", "add", "10.77.0.254/24", "dev", &br]);
        ip(&["link", "set", &br, "up"]);
        for i in 1..=nodes {
            let (ns, host_end, ns_end) = (net.ns(i), net.veth(i, 'h'), net.veth(i, 'n'));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end]);
            ip(&["link", "set", &host_end, "master", &br, "up"]);
            ip(&["link", "set", &ns_end, "netns", &ns]);
            let addr = format!("{}/24", net.addr(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &ns_end]);
            ip(&["-n", &ns, "link", "set", &ns_end, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn bridge(&self) -> String {
        format!("cbr{}", self.tag)
    }
    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("cart-{}-{i}", self.tag)
    }
    fn veth(&self, i: usize, end: char) -> String {
        format!("c{}{i}{end}", self.tag)
    }
    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// The root namespace's address on the bridge (where a shared
    /// PostgreSQL listens).
    pub fn host(&self) -> &'static str {
        "10.77.0.254"
    }

    /// Cuts node `i` off from every other node (both directions); the root
    /// namespace still reaches it.
    pub fn isolate(&self, i: usize) {
        for j in (1..=self.nodes).filter(|j| *j != i) {
            for (from, to) in [(i, j), (j, i)] {
                let dev = self.veth(from, 'n');
                ip(&[
                    "-n",
                    &self.ns(from),
                    "neigh",
                    "replace",
                    &self.addr(to),
                    "lladdr",
                    "02:00:00:00:00:99",
                    "nud",
                    "permanent",
                    "dev",
                    &dev,
                ]);
            }
        }
    }
}

impl Net {
    /// Undoes [`Net::isolate`]: node `i` reaches the others again.
    pub fn heal(&self, i: usize) {
        for j in (1..=self.nodes).filter(|j| *j != i) {
            for (from, to) in [(i, j), (j, i)] {
                let dev = self.veth(from, 'n');
                let _ = Command::new("ip")
                    .args(["-n", &self.ns(from), "neigh", "del", &self.addr(to), "dev", &dev])
                    .output();
            }
        }
    }
}

/// Removes what an earlier run killed mid-test left (same subnet, so it
/// would shadow this run's bridge): namespaces `cart-*`, bridges `cbr*`.
fn remove_stale() {
    let list = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in list(&["netns", "list"]).lines() {
        if let Some(ns) = line.split_whitespace().next().filter(|n| n.starts_with("cart-")) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
    for line in list(&["-o", "link", "show", "type", "bridge"]).lines() {
        if let Some(name) = line.split(':').nth(1).map(str::trim).filter(|n| n.starts_with("cbr")) {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).output();
            let _ = Command::new("ip").args(["link", "del", &self.veth(i, 'h')]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge()]).output();
    }
}
