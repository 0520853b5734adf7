//! Mutual TLS between nodes: every gRPC connection, in and out, is TLS 1.2+
//! with a certificate on both sides signed by the cluster's CA.
//!
//! The cluster CA is the membership credential: any holder of a certificate
//! it signed is a node. So the CA must be dedicated to the cluster (a
//! cert-manager `Issuer` of its own, or SPIRE), and a server's certificate
//! is checked for its chain, not for a host name: pods are reached by IP,
//! and their certificates name the pod or service, which the caller cannot
//! know in advance.
//!
//! The PEM files (certificate chain, private key, CA bundle) are read again
//! every [`RELOAD_INTERVAL`] and, when their bytes changed, the next
//! connections use the new ones: a rotated Kubernetes Secret takes effect
//! without a restart. A rotation that does not parse keeps the old
//! configuration and logs an error.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use cart_grain::OwnedTask;
use cart_store::tls_verify::WithoutName;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::codegen::http::Uri;

/// How often the PEM files are checked for a rotation.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Longest a peer may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once on one listener; further connections are
/// closed at once (a flood of half-open handshakes cannot hold the port).
pub const MAX_HANDSHAKES: usize = 128;

/// Where the node's TLS material is (PEM files, as a Kubernetes Secret or
/// cert-manager mounts them).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate, optionally followed by intermediates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster CA: the certificates that sign every node's.
    pub ca: PathBuf,
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds no usable PEM data of the expected kind.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The certificates and key do not make a TLS configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The contents of the three files, and what was built from them.
struct Loaded {
    bytes: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// The node's current TLS configuration for both directions.
pub struct ClusterTls {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Reads and checks the files; fails with what is wrong.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let loaded = build(read_all(&files)?, &files)?;
        Ok(Arc::new(ClusterTls { files, current: RwLock::new(Arc::new(loaded)) }))
    }

    /// Reads the files again; when they changed, later connections use
    /// them. Returns whether they changed. On an error the current
    /// configuration stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let bytes = read_all(&self.files)?;
        if bytes == self.loaded().bytes {
            return Ok(false);
        }
        let loaded = build(bytes, &self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// Checks the files for a rotation every `every`, while the handle lives.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> OwnedTask {
        let tls = Arc::clone(self);
        OwnedTask::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match tls.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %tls.files.cert.display(), "cluster TLS certificates reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cluster TLS files changed but cannot be used; keeping the previous ones")
                    }
                }
            }
        })
    }

    fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Accepts TLS connections with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.loaded().server))
    }

    /// Opens TLS connections with the current configuration.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.loaded().client))
    }
}

fn read_all(files: &TlsFiles) -> Result<[Vec<u8>; 3], TlsError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsError::Read { path: path.clone(), source })
    };
    Ok([read(&files.cert)?, read(&files.key)?, read(&files.ca)?])
}

fn build(bytes: [Vec<u8>; 3], files: &TlsFiles) -> Result<Loaded, TlsError> {
    let pem = |path: &PathBuf, why: String| TlsError::Pem { path: path.clone(), why };
    let certs = certificates(&bytes[0]).map_err(|why| pem(&files.cert, why))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes[1])
        .map_err(|e| pem(&files.key, format!("no private key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates(&bytes[2]).map_err(|why| pem(&files.ca, why))? {
        roots.add(ca).map_err(|e| pem(&files.ca, format!("not a CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(ring::default_provider());
    let config = |e: rustls::Error| TlsError::Config(e.to_string());

    let clients =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_client_cert_verifier(clients)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(config)?;
    server.alpn_protocols = vec![b"h2".to_vec()];

    let servers = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut client = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .dangerous()
        // Chain, validity and usage; not names (see the module docs).
        .with_custom_certificate_verifier(Arc::new(WithoutName::chain(servers, &provider)))
        .with_client_auth_cert(certs, key)
        .map_err(config)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded { bytes, server: Arc::new(server), client: Arc::new(client) })
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certs)
}

/// The TLS connections accepted on `listener`: handshakes run concurrently
/// (at most [`MAX_HANDSHAKES`], each within [`HANDSHAKE_TIMEOUT`]); a peer
/// without a certificate from the cluster CA never gets a stream. The
/// accepting task lives as long as the returned stream.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ClusterTls>,
) -> impl futures_util::Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>>
+ Send
+ 'static {
    let (accepted, rx) = mpsc::channel(MAX_HANDSHAKES);
    let task = OwnedTask::spawn(accept(listener, tls, accepted));
    futures_util::stream::unfold((rx, task), |(mut rx, task)| async move {
        let stream = rx.recv().await?;
        Some((Ok(stream), (rx, task)))
    })
}

async fn accept(
    listener: TcpListener,
    tls: Arc<ClusterTls>,
    accepted: mpsc::Sender<tokio_rustls::server::TlsStream<TcpStream>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let mut handshakes = JoinSet::new();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!(error = %e, "cannot accept a cluster connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while handshakes.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!(crate::families::TLS_REFUSED.name, "reason" => "busy").increment(1);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, accepted) = (tls.acceptor(), accepted.clone());
        handshakes.spawn(async move {
            let reason = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = accepted.send(stream).await;
                    drop(slot);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "cluster TLS handshake refused");
                    "handshake"
                }
                Err(_) => "timeout",
            };
            metrics::counter!(crate::families::TLS_REFUSED.name, "reason" => reason).increment(1);
            drop(slot);
        });
    }
}

/// Connects to peers over TLS (a connector for tonic's `Endpoint`).
#[derive(Clone)]
pub struct TlsConnect(pub Arc<ClusterTls>);

impl tower::Service<Uri> for TlsConnect {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.0.connector();
        Box::pin(async move {
            let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
            let host = uri.host().ok_or_else(|| invalid("peer URI without a host"))?.to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("peer URI without a port"))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid("peer host is not a DNS name or IP address"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(connector.connect(name, tcp).await?))
        })
    }
}
