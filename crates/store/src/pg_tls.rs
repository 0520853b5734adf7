//! TLS to PostgreSQL, from the URL's `sslmode` and `sslrootcert` as libpq
//! reads them (tokio-postgres parses neither `verify-full` nor
//! `sslrootcert`, so they are taken out of the URL here):
//!
//! - `disable` (and no `sslmode`): plaintext;
//! - `prefer`: TLS when the server offers it, unverified, else plaintext;
//! - `require`: TLS, and the server's certificate is not checked, as in
//!   libpq, unless `sslrootcert` names a CA file: then it must chain to it;
//! - `verify-ca`: as `require` with `sslrootcert` (which it needs);
//! - `verify-full`: TLS, a certificate chaining to `sslrootcert` (or the
//!   system's roots) and naming the host connected to.
//!
//! rustls with ring; no OpenSSL.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_postgres::config::SslMode;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::StoreError;
use crate::tls_verify::WithoutName;

/// How the connection is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// Plaintext.
    Disable,
    /// TLS if offered, without checking the certificate.
    Prefer,
    /// TLS; the certificate is checked only against `root` when given.
    Require {
        /// A CA file the server's certificate must chain to.
        root: Option<PathBuf>,
    },
    /// TLS with a certificate that chains to `root` (system roots when
    /// `None`) and names the host.
    VerifyFull {
        /// The CA file, as `sslrootcert`.
        root: Option<PathBuf>,
    },
}

/// The URL without `sslmode` and `sslrootcert`, and what they asked for.
pub fn split_url(url: &str) -> Result<(String, PgTls), StoreError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => return Ok((url.to_owned(), PgTls::Disable)),
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => root = Some(PathBuf::from(percent_decode(v))),
            _ => kept.push(pair),
        }
    }
    let tls = match mode.as_deref() {
        None | Some("disable") => PgTls::Disable,
        Some("prefer" | "allow") => PgTls::Prefer,
        Some("require") => PgTls::Require { root },
        Some("verify-full") => PgTls::VerifyFull { root },
        Some("verify-ca") if root.is_some() => PgTls::Require { root },
        Some("verify-ca") => {
            return Err(StoreError::Invalid("sslmode=verify-ca needs sslrootcert".into()));
        }
        Some(other) => {
            return Err(StoreError::Invalid(format!(
                "sslmode={other} is not supported: use disable, prefer, require or verify-full"
            )));
        }
    };
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, tls))
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = v.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl PgTls {
    /// tokio-postgres's mode for this setting.
    pub fn ssl_mode(&self) -> SslMode {
        match self {
            PgTls::Disable => SslMode::Disable,
            PgTls::Prefer => SslMode::Prefer,
            PgTls::Require { .. } | PgTls::VerifyFull { .. } => SslMode::Require,
        }
    }

    /// The rustls configuration for this setting (`None` for plaintext).
    pub fn client_config(&self) -> Result<Option<ClientConfig>, StoreError> {
        let provider = Arc::new(ring::default_provider());
        let builder = || {
            ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| StoreError::Invalid(format!("TLS: {e}")))
        };
        let verifier: Arc<dyn ServerCertVerifier> = match self {
            PgTls::Disable => return Ok(None),
            PgTls::Prefer | PgTls::Require { root: None } => {
                Arc::new(WithoutName::nothing(&provider))
            }
            PgTls::Require { root: Some(root) } => {
                Arc::new(WithoutName::chain(webpki(roots(Some(root))?, &provider)?, &provider))
            }
            PgTls::VerifyFull { root } => webpki(roots(root.as_ref())?, &provider)?,
        };
        let config =
            builder()?.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        Ok(Some(config))
    }
}

fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| StoreError::Invalid(format!("TLS roots: {e}")))
}

/// The CAs in `path`, or the system's when `None`.
fn roots(path: Option<&PathBuf>) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = match path {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .map_err(|e| StoreError::Invalid(format!("sslrootcert {}: {e}", path.display())))?,
        None => rustls_native_certs::load_native_certs().certs,
    };
    for cert in certs {
        let _ = store.add(cert);
    }
    if store.is_empty() {
        return Err(StoreError::Invalid("no CA certificate to verify PostgreSQL with".into()));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_leave_the_url() {
        let (url, tls) = split_url("postgres://u@h/db").unwrap();
        assert_eq!((url.as_str(), tls), ("postgres://u@h/db", PgTls::Disable));
        let (url, tls) = split_url(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(tls, PgTls::VerifyFull { root: Some("/etc/ca.pem".into()) });
        let (url, tls) = split_url("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!((url.as_str(), tls), ("postgres://u@h/db", PgTls::Require { root: None }));
        assert!(split_url("postgres://u@h/db?sslmode=verify-sometimes").is_err());
    }
}
