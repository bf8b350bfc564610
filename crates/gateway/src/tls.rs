//! The gateway's TLS certificate: a PEM certificate chain and private key, checked when they
//! are loaded (each file holds what it should, the key matches the certificate) and swapped
//! in place by [`ServerCert::reload`], so new handshakes use the new certificate while open
//! connections carry on with the one they began with.
//!
//! Errors name the file and what is wrong with it, never anything read from the key file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the TLS certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----){}", path.display(), detail(why))]
    NoCertificate { path: PathBuf, why: Option<&'static str> },
    #[error("the TLS certificate file {} does not hold a valid X.509 certificate: {why}", path.display())]
    BadCertificate { path: PathBuf, why: String },
    #[error("the TLS key file {} holds no unencrypted PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC){}", path.display(), detail(why))]
    NoKey { path: PathBuf, why: Option<&'static str> },
    #[error("the TLS key file {} holds a private key this server cannot use (RSA, ECDSA P-256/P-384 and Ed25519 are supported)", path.display())]
    UnsupportedKey { path: PathBuf },
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS settings: {0}")]
    Config(String),
}

fn detail(why: &Option<&'static str>) -> String {
    why.map(|w| format!(": {w}")).unwrap_or_default()
}

/// What is wrong with a PEM file, in words that quote nothing from it (it may be a key).
fn pem_problem(e: &pem::Error) -> Option<&'static str> {
    match e {
        pem::Error::NoItemsFound => None,
        pem::Error::MissingSectionEnd { .. } => Some("a PEM section has no END line"),
        pem::Error::IllegalSectionStart { .. } => Some("a PEM section has a malformed BEGIN line"),
        pem::Error::Base64Decode(_) => Some("a PEM section is not valid base64"),
        pem::Error::SectionTooLarge => Some("a PEM section is too large"),
        _ => Some("the file is not valid PEM"),
    }
}

/// The certificate and key the gateway serves, from two PEM files; cheap to share.
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert_path", &self.cert_path)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Reads and checks both files.
    pub async fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerCert>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = read(&provider, cert_path, key_path).await?;
        Ok(Arc::new(ServerCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(loaded),
        }))
    }

    /// Reads both files again; on success new handshakes use what they hold and the new
    /// fingerprint is returned. On failure the certificate in use stays.
    pub async fn reload(&self) -> Result<String, TlsError> {
        let loaded = read(&self.provider, &self.cert_path, &self.key_path).await?;
        let fingerprint = loaded.fingerprint.clone();
        *self.current.write().expect("certificate lock") = loaded;
        Ok(fingerprint)
    }

    /// SHA-256 of the leaf certificate in use, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn fingerprint(&self) -> String {
        self.current.read().expect("certificate lock").fingerprint.clone()
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The TLS settings of a listener: the current certificate at each handshake, TLS 1.2 and
    /// 1.3, ALPN `http/1.1` (the gateway serves HTTP/1.1 only).
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<ServerCert>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().expect("certificate lock").key.clone())
    }
}

async fn read(provider: &CryptoProvider, cert_path: &Path, key_path: &Path) -> Result<Loaded, TlsError> {
    let cert_pem = tokio::fs::read(cert_path).await.map_err(|source| TlsError::Read {
        what: "certificate",
        path: cert_path.to_path_buf(),
        source,
    })?;
    let key_pem = tokio::fs::read(key_path).await.map_err(|source| TlsError::Read {
        what: "key",
        path: key_path.to_path_buf(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::NoCertificate { path: cert_path.to_path_buf(), why: pem_problem(&e) })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path.to_path_buf(), why: None });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::NoKey { path: key_path.to_path_buf(), why: pem_problem(&e) })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| TlsError::UnsupportedKey { path: key_path.to_path_buf() })?;
    let fingerprint = fingerprint(&chain[0]);
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch { cert: cert_path.to_path_buf(), key: key_path.to_path_buf() })
        }
        Err(e) => return Err(TlsError::BadCertificate { path: cert_path.to_path_buf(), why: e.to_string() }),
    }
    Ok(Loaded { key: Arc::new(certified), fingerprint })
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}
