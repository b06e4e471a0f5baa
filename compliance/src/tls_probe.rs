//! Probing a TLS listener the way an assessor's scanner does (PCI DSS 4.2.1).
//!
//! rustls cannot speak TLS 1.0/1.1 or offer weak suites, so refusals are tested with raw
//! ClientHello messages written byte by byte, and the server's first record is classified: a
//! ServerHello means the offer was accepted, an alert or a closed connection means refused.
//! Acceptance of strong offers is tested both with a raw TLS 1.2 hello (which shows the probe
//! can see an acceptance at all) and with a real rustls handshake per protocol version.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the server answered to a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloOutcome {
    /// A ServerHello: the offer was accepted, with the server's chosen version and suite.
    Accepted {
        /// Negotiated legacy version field of the ServerHello (0x0303 for TLS 1.2).
        version: u16,
        /// Chosen cipher suite.
        suite: u16,
    },
    /// A TLS alert (level, description).
    Alert(u8, u8),
    /// The server closed the connection without answering.
    Closed,
    /// Something that is not TLS.
    Garbage(Vec<u8>),
}

impl HelloOutcome {
    /// Whether the server accepted the offer.
    pub fn accepted(&self) -> bool {
        matches!(self, HelloOutcome::Accepted { .. })
    }
    /// Human description for evidence.
    pub fn describe(&self) -> String {
        match self {
            HelloOutcome::Accepted { version, suite } => {
                format!("ServerHello (version 0x{version:04x}, suite {})", suite_name(*suite))
            }
            HelloOutcome::Alert(level, desc) => {
                format!("alert level {level} description {} ({desc})", alert_name(*desc))
            }
            HelloOutcome::Closed => "connection closed without a ServerHello".to_owned(),
            HelloOutcome::Garbage(b) => format!("non-TLS answer {}", hex::encode(b)),
        }
    }
}

/// Names of TLS alert descriptions that matter here.
pub fn alert_name(d: u8) -> &'static str {
    match d {
        40 => "handshake_failure",
        47 => "illegal_parameter",
        50 => "decode_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        109 => "missing_extension",
        _ => "other",
    }
}

/// Weak cipher suites an assessor checks are refused: NULL, EXPORT, RC4, DES/3DES, anonymous
/// key exchange, and static-RSA CBC suites (no forward secrecy).
pub const WEAK_SUITES: &[(u16, &str)] = &[
    (0x0001, "TLS_RSA_WITH_NULL_MD5"),
    (0x0002, "TLS_RSA_WITH_NULL_SHA"),
    (0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5"),
    (0x0004, "TLS_RSA_WITH_RC4_128_MD5"),
    (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
    (0x0009, "TLS_RSA_WITH_DES_CBC_SHA"),
    (0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x0018, "TLS_DH_anon_WITH_RC4_128_MD5"),
    (0x001b, "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA"),
    (0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    (0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA"),
    (0xc012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"),
    (0xc008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA"),
];

/// Strong TLS 1.2 suites (ECDHE with AEAD).
pub const STRONG_TLS12_SUITES: &[(u16, &str)] = &[
    (0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];

/// The name of a suite id (from the tables above), or its hex.
pub fn suite_name(id: u16) -> String {
    WEAK_SUITES
        .iter()
        .chain(STRONG_TLS12_SUITES)
        .find(|(s, _)| *s == id)
        .map(|(_, n)| (*n).to_owned())
        .unwrap_or_else(|| format!("0x{id:04x}"))
}

/// Builds a ClientHello record offering `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1, 0x0303
/// TLS 1.2) and exactly `suites`, with the extensions a TLS 1.2 server needs for ECDHE.
pub fn client_hello(version: u16, suites: &[u16], sni: Option<&str>) -> Vec<u8> {
    let mut body = vec![];
    body.extend_from_slice(&version.to_be_bytes());
    // A fixed "random": the probe needs no secrecy, and a fixed value keeps it reproducible.
    body.extend((0u8..32).map(|i| i.wrapping_mul(7).wrapping_add(3)));
    body.push(0); // session id
    let suites_len = u16::try_from(suites.len() * 2).unwrap_or(u16::MAX);
    body.extend_from_slice(&suites_len.to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = vec![];
    if let Some(host) = sni {
        let name = host.as_bytes();
        let n = u16::try_from(name.len()).unwrap_or(0);
        let mut sn = vec![];
        sn.extend_from_slice(&(n + 3).to_be_bytes());
        sn.push(0);
        sn.extend_from_slice(&n.to_be_bytes());
        sn.extend_from_slice(&name[..usize::from(n)]);
        push_ext(&mut ext, 0x0000, &sn);
    }
    // supported_groups: x25519, secp256r1, secp384r1
    push_ext(&mut ext, 0x000a, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    // ec_point_formats: uncompressed
    push_ext(&mut ext, 0x000b, &[1, 0]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256,
    // ecdsa_secp384r1_sha384, rsa_pss_rsae_sha384, rsa_pkcs1_sha384, ed25519
    push_ext(
        &mut ext,
        0x000d,
        &[
            0, 14, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03, 0x08, 0x05, 0x05, 0x01, 0x08, 0x07,
        ],
    );
    // extended_master_secret and renegotiation_info (empty), as real clients send.
    push_ext(&mut ext, 0x0017, &[]);
    push_ext(&mut ext, 0xff01, &[0]);
    let ext_len = u16::try_from(ext.len()).unwrap_or(0);
    body.extend_from_slice(&ext_len.to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    let len = u32::try_from(body.len()).unwrap_or(0).to_be_bytes();
    hs.extend_from_slice(&len[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16];
    // Record-layer version: TLS 1.0 for compatibility, as every client does for its first record.
    rec.extend_from_slice(&0x0301u16.to_be_bytes());
    rec.extend_from_slice(&u16::try_from(hs.len()).unwrap_or(0).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn push_ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&u16::try_from(data.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(data);
}

/// Classifies the first bytes a server sent back.
pub fn classify(answer: &[u8]) -> HelloOutcome {
    if answer.is_empty() {
        return HelloOutcome::Closed;
    }
    match answer {
        [0x15, _, _, _, _, level, desc, ..] => HelloOutcome::Alert(*level, *desc),
        // handshake record, ServerHello: type(1) len(3) version(2) random(32) sid_len(1) sid suite(2)
        [0x16, _, _, _, _, 0x02, _, _, _, v0, v1, rest @ ..] if rest.len() > 32 => {
            let sid_len = usize::from(rest[32]);
            match rest.get(33 + sid_len..35 + sid_len) {
                Some([a, b]) => HelloOutcome::Accepted {
                    version: u16::from_be_bytes([*v0, *v1]),
                    suite: u16::from_be_bytes([*a, *b]),
                },
                _ => HelloOutcome::Garbage(answer.iter().take(16).copied().collect()),
            }
        }
        _ => HelloOutcome::Garbage(answer.iter().take(16).copied().collect()),
    }
}

/// Errors of the probe itself (not of the server's answer).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Could not connect.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// Could not send.
    #[error("cannot send to {0}: {1}")]
    Io(String, String),
    /// A rustls setup error.
    #[error("TLS client setup: {0}")]
    Setup(String),
}

/// Sends `hello` to `addr` and classifies the answer.
pub async fn send_hello(addr: &str, hello: &[u8]) -> Result<HelloOutcome, ProbeError> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| ProbeError::Connect(addr.to_owned(), "timed out".into()))?
        .map_err(|e| ProbeError::Connect(addr.to_owned(), e.to_string()))?;
    s.write_all(hello)
        .await
        .map_err(|e| ProbeError::Io(addr.to_owned(), e.to_string()))?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    // Read until we have a whole first record header + enough to classify, or the peer closes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got < 64 {
        match tokio::time::timeout_at(deadline, s.read(&mut buf[got..])).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => got += n,
            // A reset after an alert is a refusal too.
            Ok(Err(_)) => break,
        }
        if got >= 7 && buf[0] == 0x15 {
            break;
        }
    }
    Ok(classify(&buf[..got]))
}

/// A certificate verifier that accepts any certificate: the TLS probe checks protocol
/// versions and suites, not the certificate chain (that is a separate control).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client config for probing: one protocol version, any certificate.
pub fn probe_client_config(
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<Arc<rustls::ClientConfig>, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .map_err(|e| ProbeError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A full handshake with rustls at one protocol version; returns the negotiated version and
/// suite names, or the handshake error text.
pub async fn handshake(
    addr: &str,
    host: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<Result<(String, String), String>, ProbeError> {
    let cfg = probe_client_config(version)?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Connect(addr.to_owned(), e.to_string()))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| ProbeError::Setup(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    match tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await {
        Err(_) => Ok(Err("handshake timed out".into())),
        Ok(Err(e)) => Ok(Err(e.to_string())),
        Ok(Ok(stream)) => {
            let (_, conn) = stream.get_ref();
            let v = conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "unknown".into());
            let s = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_else(|| "unknown".into());
            Ok(Ok((v, s)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_is_well_formed() {
        let h = client_hello(0x0303, &[0xc02b, 0xc02f], Some("localhost"));
        assert_eq!(h[0], 0x16);
        let rec_len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        assert_eq!(rec_len, h.len() - 5);
        assert_eq!(h[5], 1, "ClientHello");
        let hs_len = (usize::from(h[6]) << 16) | (usize::from(h[7]) << 8) | usize::from(h[8]);
        assert_eq!(hs_len, h.len() - 9);
        assert_eq!(&h[9..11], &[3, 3]);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(&[]), HelloOutcome::Closed);
        assert_eq!(classify(&[0x15, 3, 3, 0, 2, 2, 70]), HelloOutcome::Alert(2, 70));
        let mut sh = vec![0x16, 3, 3, 0, 80, 2, 0, 0, 76, 3, 3];
        sh.extend([0u8; 32]);
        sh.push(0);
        sh.extend([0xc0, 0x2b, 0]);
        assert_eq!(
            classify(&sh),
            HelloOutcome::Accepted {
                version: 0x0303,
                suite: 0xc02b
            }
        );
        assert!(matches!(classify(b"HTTP/1.1 400 Bad"), HelloOutcome::Garbage(_)));
    }
}
