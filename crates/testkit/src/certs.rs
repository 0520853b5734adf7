//! Certificates made at test time: a CA per test cluster and node
//! certificates it signs, written as PEM files the way a Kubernetes Secret
//! mounts them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// The three PEM files of one node.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// The node's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA's certificate.
    pub ca: PathBuf,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        TestCa { issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate") }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `name` (also its DNS name) and its key, PEM.
    pub fn issue(&self, name: &str) -> (String, String) {
        self.issue_for(&[name])
    }

    /// A certificate naming every one of `names` (DNS names or IP
    /// addresses; the first is its common name) and its key, PEM.
    pub fn issue_for(&self, names: &[&str]) -> (String, String) {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("node params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("node"));
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &self.issuer).expect("node certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `name`'s certificate, key and this CA into `dir` (created),
    /// replacing what is there.
    pub fn write_node(&self, dir: &Path, name: &str) -> NodeFiles {
        std::fs::create_dir_all(dir).expect("cert dir");
        let (cert, key) = self.issue(name);
        let files = NodeFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        };
        std::fs::write(&files.cert, cert).expect("write cert");
        std::fs::write(&files.key, key).expect("write key");
        std::fs::write(&files.ca, self.pem()).expect("write ca");
        files
    }
}
