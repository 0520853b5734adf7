//! Server certificate checks that rustls's WebPKI verifier does not offer
//! on its own: the chain without the host name, or nothing at all. Shared
//! by PostgreSQL's TLS (libpq's `require` and `verify-ca`) and the
//! cluster's mutual TLS (a cluster CA's certificates name pods, not the
//! addresses peers dial). The store is the lowest crate both reach.

use std::sync::Arc;

use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, CertificateError, DigitallySignedStruct, SignatureScheme};

/// Accepts a server's certificate that chains to the verifier's roots
/// (in date, usable, signing the handshake) whatever names it holds, or,
/// without a chain verifier, any certificate that signs the handshake.
#[derive(Debug)]
pub struct WithoutName {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl WithoutName {
    /// The chain is checked by `verifier`; names are not.
    pub fn chain(verifier: Arc<WebPkiServerVerifier>, provider: &CryptoProvider) -> Self {
        WithoutName {
            chain: Some(verifier),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Nothing is checked but the handshake signature: encrypted, not
    /// authenticated (libpq's `require` without a root).
    pub fn nothing(provider: &CryptoProvider) -> Self {
        WithoutName { chain: None, algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for WithoutName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        // The name is checked last, after the chain, validity and usage.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
