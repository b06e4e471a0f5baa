//! Steps for strong cryptography on the public listener (PCI DSS 4.2.1).

use crate::tls_probe::{self, HelloOutcome};
use crate::world::{PciWorld, TlsEndpoint};
use cucumber::{given, then, when};

type StepResult = Result<(), String>;

/// Starts a listener with the exact TLS configuration `paymentd serve` builds for its public
/// listener (`pay_net::tls::server_config_from_pem`), served by `pay_net::server::serve`.
async fn embedded_tls_listener() -> Result<TlsEndpoint, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .map_err(|e| e.to_string())?
        .self_signed(&key)
        .map_err(|e| e.to_string())?;
    let cfg = pay_net::tls::server_config_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .map_err(|e| e.to_string())?;
    use pay_net::Transport;
    let listener = pay_net::TcpTransport
        .bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let opts = pay_net::ServeOptions {
        tls: Some(cfg),
        ..pay_net::ServeOptions::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = pay_net::server::serve(listener, app, opts, async move {
            let _ = rx.await;
        })
        .await;
    });
    Ok(TlsEndpoint {
        addr: addr.to_string(),
        host: "localhost".into(),
        _stop: Some(tx),
    })
}

#[given("the public TLS listener")]
async fn the_listener(w: &mut PciWorld) -> StepResult {
    let ctx = w.ctx()?;
    let ep = match &ctx.spec {
        crate::target::TargetSpec::Embedded { .. } => {
            let ep = embedded_tls_listener().await?;
            w.note(format!(
                "embedded: a listener on {} with the TLS configuration paymentd serve uses for its public listener (pay_net::tls::server_config_from_pem)",
                ep.addr
            ));
            ep
        }
        crate::target::TargetSpec::Deployed(d) => {
            let rest = d.base_url.strip_prefix("https://").ok_or_else(|| {
                format!(
                    "PCI DSS 4.2.1 violated: the public API {} is not served over TLS",
                    d.base_url
                )
            })?;
            let authority = rest.split('/').next().unwrap_or_default();
            let host = authority.split(':').next().unwrap_or_default().to_owned();
            let addr = if authority.contains(':') {
                authority.to_owned()
            } else {
                format!("{authority}:443")
            };
            w.note(format!("deployed: probing {addr}"));
            TlsEndpoint {
                addr,
                host,
                _stop: None,
            }
        }
    };
    w.tls = Some(ep);
    Ok(())
}

fn endpoint(w: &PciWorld) -> Result<(String, String), String> {
    let ep = w
        .tls
        .as_ref()
        .ok_or("no TLS listener: use `Given the public TLS listener`")?;
    Ok((ep.addr.clone(), ep.host.clone()))
}

fn sni(host: &str) -> Option<&str> {
    // SNI carries DNS names only, never IP literals.
    (host.parse::<std::net::IpAddr>().is_err()).then_some(host)
}

#[when(expr = "a client offers only {word} {word}")]
async fn offers_version(w: &mut PciWorld, proto: String, ver: String) -> StepResult {
    let version = match (proto.as_str(), ver.as_str()) {
        ("TLS", "1.0") => 0x0301,
        ("TLS", "1.1") => 0x0302,
        ("TLS", "1.2") => 0x0303,
        ("SSL", "3.0") => 0x0300,
        _ => return Err(format!("unknown protocol {proto} {ver}")),
    };
    let (addr, host) = endpoint(w)?;
    // Every suite a TLS 1.0/1.1 client would offer, strong and weak.
    let suites: Vec<u16> = tls_probe::STRONG_TLS12_SUITES
        .iter()
        .chain(tls_probe::WEAK_SUITES)
        .map(|(s, _)| *s)
        .chain([0xc013, 0xc014, 0xc009, 0xc00a])
        .collect();
    let out = tls_probe::send_hello(&addr, &tls_probe::client_hello(version, &suites, sni(&host)))
        .await
        .map_err(|e| e.to_string())?;
    w.note(format!(
        "raw ClientHello offering only {proto} {ver} → {}",
        out.describe()
    ));
    w.tls_outcome = Some((out.describe(), out.accepted()));
    Ok(())
}

#[when(expr = "a client offers TLS 1.2 with only the cipher suite {word}")]
async fn offers_suite(w: &mut PciWorld, name: String) -> StepResult {
    let id = tls_probe::WEAK_SUITES
        .iter()
        .chain(tls_probe::STRONG_TLS12_SUITES)
        .find(|(_, n)| *n == name)
        .map(|(s, _)| *s)
        .ok_or_else(|| format!("unknown suite {name}"))?;
    let (addr, host) = endpoint(w)?;
    let out = tls_probe::send_hello(&addr, &tls_probe::client_hello(0x0303, &[id], sni(&host)))
        .await
        .map_err(|e| e.to_string())?;
    w.note(format!(
        "raw TLS 1.2 ClientHello offering only {name} → {}",
        out.describe()
    ));
    w.tls_outcome = Some((out.describe(), out.accepted()));
    Ok(())
}

#[when("a client offers TLS 1.2 with forward-secret AEAD cipher suites")]
async fn offers_strong(w: &mut PciWorld) -> StepResult {
    let (addr, host) = endpoint(w)?;
    let suites: Vec<u16> = tls_probe::STRONG_TLS12_SUITES.iter().map(|(s, _)| *s).collect();
    let out = tls_probe::send_hello(&addr, &tls_probe::client_hello(0x0303, &suites, sni(&host)))
        .await
        .map_err(|e| e.to_string())?;
    w.note(format!(
        "raw TLS 1.2 ClientHello offering ECDHE+AEAD suites → {}",
        out.describe()
    ));
    if let HelloOutcome::Accepted { suite, .. } = out {
        if !tls_probe::STRONG_TLS12_SUITES.iter().any(|(s, _)| *s == suite) {
            return Err(format!("the server chose a suite that was not offered: 0x{suite:04x}"));
        }
    }
    w.tls_outcome = Some((out.describe(), out.accepted()));
    Ok(())
}

#[then("the listener refuses the handshake")]
async fn refuses(w: &mut PciWorld) -> StepResult {
    match &w.tls_outcome {
        Some((d, false)) => {
            let d = d.clone();
            w.note(format!("refused: {d}"));
            Ok(())
        }
        Some((d, true)) => Err(format!("PCI DSS 4.2.1 violated: the listener accepted the offer: {d}")),
        None => Err("no handshake was attempted".into()),
    }
}

#[then("the listener accepts the handshake")]
async fn accepts(w: &mut PciWorld) -> StepResult {
    match &w.tls_outcome {
        Some((_, true)) => Ok(()),
        Some((d, false)) => Err(format!("the listener refused a strong offer: {d}")),
        None => Err("no handshake was attempted".into()),
    }
}

#[then(expr = "a full TLS {word} handshake succeeds")]
async fn full_handshake(w: &mut PciWorld, ver: String) -> StepResult {
    let version = match ver.as_str() {
        "1.2" => &rustls::version::TLS12,
        "1.3" => &rustls::version::TLS13,
        _ => return Err(format!("rustls speaks TLS 1.2 and 1.3, not {ver}")),
    };
    let (addr, host) = endpoint(w)?;
    match tls_probe::handshake(&addr, &host, version)
        .await
        .map_err(|e| e.to_string())?
    {
        Ok((v, s)) => {
            w.note(format!(
                "rustls handshake pinned to TLS {ver} → negotiated {v} with {s}"
            ));
            Ok(())
        }
        Err(e) => Err(format!("a TLS {ver} handshake failed: {e}")),
    }
}
