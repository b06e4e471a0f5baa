//! TLS for external listeners: TLS 1.2 and 1.3 only, with rustls' modern cipher suites
//! (AES-GCM and ChaCha20-Poly1305 with ECDHE forward secrecy); no legacy protocol or weak
//! suite can be negotiated because rustls does not implement them.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed (the path is named, never the key).
    #[error("TLS file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from PEM certificate chain and private key files.
pub fn server_config_from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let file_err = |p: &Path, reason: String| TlsError::File {
        path: p.display().to_string(),
        reason,
    };
    let cert_pem = std::fs::read(cert_path).map_err(|e| file_err(cert_path, e.to_string()))?;
    let key_pem = std::fs::read(key_path).map_err(|e| file_err(key_path, e.to_string()))?;
    server_config_from_pem(&cert_pem, &key_pem).map_err(|e| match e {
        TlsError::File { reason, .. } => file_err(cert_path, reason),
        other => other,
    })
}

/// A server configuration from PEM bytes.
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(cert_pem))
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File {
            path: "certificate".into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: "certificate".into(),
            reason: "no certificate found".into(),
        });
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
        .map_err(|_| TlsError::File {
            path: "private key".into(),
            reason: "unreadable private key".into(),
        })?
        .ok_or_else(|| TlsError::File {
            path: "private key".into(),
            reason: "no private key found".into(),
        })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration trusting exactly the given PEM roots (tests, private CAs).
pub fn client_config_with_roots(root_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(root_pem)) {
        let cert = cert.map_err(|e| TlsError::File {
            path: "root certificate".into(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
