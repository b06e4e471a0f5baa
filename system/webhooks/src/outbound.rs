//! Outbound HTTP(S) to merchant URLs, behind an SSRF guard.
//!
//! Merchants choose webhook URLs, so a URL must never let them reach the platform's own network:
//! in serve mode every host name is resolved here, every address it resolves to must be public
//! (or inside a configured allow list), and the connection goes to the checked address (no
//! second lookup an attacker could rebind). `paymentd dev` allows loopback so a local receiver
//! works out of the box; the simulator's hosts are names on the simulated network.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use pay_net::Transport;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why a delivery could not get an HTTP status from the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OutboundError {
    /// The URL is not an absolute http(s) URL.
    #[error("invalid URL: {0}")]
    BadUrl(String),
    /// The address is internal and not allow-listed.
    #[error("refused: {0} is not a public address")]
    Forbidden(String),
    /// Name resolution failed.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// Connecting, TLS or HTTP failed.
    #[error("connection failed: {0}")]
    Connect(String),
    /// No answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A CIDR block (`10.1.0.0/16`, `fd00::/8`, or a single address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, an IPv6 block, or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has an invalid prefix length"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// True when `ip` is inside the block.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, canonical(*ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// True for addresses a merchant URL must not reach: loopback, private, link-local (cloud
/// metadata), carrier-grade NAT, unspecified, multicast, broadcast, documentation and unique
/// local IPv6 ranges, and IPv4-mapped forms of them.
pub fn is_internal(ip: &IpAddr) -> bool {
    match canonical(*ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x0064 && seg[1] == 0xff9b)
        }
    }
}

/// Which destinations deliveries may reach.
#[derive(Debug, Clone)]
pub struct SsrfPolicy {
    /// Resolve names and check every address (serve mode). When false, names are passed to
    /// the transport unchecked (dev and the simulator) and only IP literals are checked.
    pub resolve: bool,
    /// Allow internal addresses at all (dev: loopback receivers).
    pub allow_internal: bool,
    /// Internal blocks allowed anyway (e.g. a partner VPN range).
    pub allow_list: Vec<Cidr>,
}

impl SsrfPolicy {
    /// Serve mode: only public addresses, plus `allow_list`.
    pub fn strict(allow_list: Vec<Cidr>) -> SsrfPolicy {
        SsrfPolicy {
            resolve: true,
            allow_internal: false,
            allow_list,
        }
    }

    /// Dev mode and the simulator: anything goes.
    pub fn permissive() -> SsrfPolicy {
        SsrfPolicy {
            resolve: false,
            allow_internal: true,
            allow_list: vec![],
        }
    }

    /// Whether `ip` may be contacted.
    pub fn allows(&self, ip: &IpAddr) -> bool {
        self.allow_internal || !is_internal(ip) || self.allow_list.iter().any(|c| c.contains(ip))
    }
}

/// What an endpoint answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
}

/// A target parsed from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https`?
    pub tls: bool,
    /// Host name or IP literal (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query.
    pub path: String,
}

/// Validates a merchant URL (absolute http/https, a host, at most 2048 characters, no
/// credentials).
pub fn parse_target(url: &str) -> Result<Target, OutboundError> {
    if url.len() > 2048 {
        return Err(OutboundError::BadUrl("longer than 2048 characters".into()));
    }
    let u = url::Url::parse(url).map_err(|e| OutboundError::BadUrl(e.to_string()))?;
    let tls = match u.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(OutboundError::BadUrl(format!(
                "scheme {other} (expected http or https)"
            )))
        }
    };
    if !u.username().is_empty() || u.password().is_some() {
        return Err(OutboundError::BadUrl("credentials in the URL".into()));
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(OutboundError::BadUrl("no host".into())),
    };
    let port = u.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    let mut path = u.path().to_owned();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(Target { tls, host, port, path })
}

/// Sends webhook POSTs.
#[derive(Clone)]
pub struct Outbound {
    transport: Arc<dyn Transport>,
    tls: Arc<rustls::ClientConfig>,
    policy: SsrfPolicy,
}

impl Outbound {
    /// Deliveries over `transport`, verifying TLS servers against `tls`'s roots.
    pub fn new(transport: Arc<dyn Transport>, tls: Arc<rustls::ClientConfig>, policy: SsrfPolicy) -> Outbound {
        Outbound { transport, tls, policy }
    }

    /// TLS settings trusting the public web PKI (Mozilla's roots) plus `extra_roots_pem`.
    pub fn web_pki(extra_roots_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = extra_roots_pem {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| format!("bad CA file: {e}"))?;
                roots.add(cert).map_err(|e| format!("bad CA certificate: {e}"))?;
            }
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }

    /// The SSRF policy in force.
    pub fn policy(&self) -> &SsrfPolicy {
        &self.policy
    }

    /// Checks `target` against the policy; returns the address to connect to.
    pub async fn admit(&self, target: &Target) -> Result<String, OutboundError> {
        if let Ok(ip) = target.host.parse::<IpAddr>() {
            return if self.policy.allows(&ip) {
                Ok(target.host.clone())
            } else {
                Err(OutboundError::Forbidden(target.host.clone()))
            };
        }
        if !self.policy.resolve {
            return Ok(target.host.clone());
        }
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|_| OutboundError::Resolve(target.host.clone()))?
            .map(|a| a.ip())
            .collect();
        if addrs.is_empty() {
            return Err(OutboundError::Resolve(target.host.clone()));
        }
        // Every address must be allowed: a name resolving to one public and one internal
        // address would otherwise be a way in.
        if let Some(bad) = addrs.iter().find(|a| !self.policy.allows(a)) {
            return Err(OutboundError::Forbidden(format!("{} ({bad})", target.host)));
        }
        Ok(addrs[0].to_string())
    }

    /// POSTs `body` with `headers` to `url`; any HTTP status is an answer.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, OutboundError> {
        let target = parse_target(url)?;
        match tokio::time::timeout(timeout, self.post_inner(&target, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(OutboundError::Timeout(timeout)),
        }
    }

    async fn post_inner(
        &self,
        target: &Target,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer, OutboundError> {
        let addr = self.admit(target).await?;
        let io = self
            .transport
            .connect(&addr, target.port)
            .await
            .map_err(|e| OutboundError::Connect(e.to_string()))?;
        let host_header = if (target.tls && target.port == 443) || (!target.tls && target.port == 80) {
            target.host.clone()
        } else if target.host.contains(':') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(target.path.as_str())
            .header(http::header::HOST, host_header);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| OutboundError::BadUrl(e.to_string()))?;
        if target.tls {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|_| OutboundError::BadUrl(format!("invalid TLS server name {}", target.host)))?;
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, io)
                .await
                .map_err(|e| OutboundError::Connect(format!("TLS: {e}")))?;
            send(TokioIo::new(stream), req).await
        } else {
            send(TokioIo::new(io), req).await
        }
    }
}

async fn send<T>(io: T, req: http::Request<Full<Bytes>>) -> Result<Answer, OutboundError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| OutboundError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| OutboundError::Connect(e.to_string()))?;
    let status = resp.status().as_u16();
    // Read (and discard) at most 64 KiB of the answer so the connection closes cleanly.
    let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
    Ok(Answer { status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(is_internal(&ip), "{a} must be internal");
            assert!(!SsrfPolicy::strict(vec![]).allows(&ip));
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "172.32.0.1"] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(!is_internal(&ip), "{a} is public");
        }
    }

    #[test]
    fn allow_list_and_cidrs() {
        let p = SsrfPolicy::strict(vec![Cidr::parse("10.20.0.0/16").unwrap()]);
        assert!(p.allows(&"10.20.3.4".parse().unwrap()));
        assert!(!p.allows(&"10.21.3.4".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(&"fd12::1".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4").unwrap().contains(&"1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
        assert!(SsrfPolicy::permissive().allows(&"127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn urls_are_validated() {
        let t = parse_target("https://example.com/hooks?x=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "example.com", 443, "/hooks?x=1")
        );
        let t = parse_target("http://[::1]:8080/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert!(parse_target("ftp://example.com/").is_err());
        assert!(parse_target("https://user:pw@example.com/").is_err());
        assert!(parse_target("/relative").is_err());
        assert!(parse_target(&format!("https://example.com/{}", "a".repeat(2100))).is_err());
    }

    #[tokio::test]
    async fn strict_policy_refuses_loopback_names_and_literals() {
        let o = Outbound::new(
            Arc::new(pay_net::TcpTransport),
            Outbound::web_pki(None).unwrap(),
            SsrfPolicy::strict(vec![]),
        );
        let lit = parse_target("http://127.0.0.1:9/x").unwrap();
        assert!(matches!(o.admit(&lit).await, Err(OutboundError::Forbidden(_))));
        let name = parse_target("http://localhost:9/x").unwrap();
        assert!(matches!(o.admit(&name).await, Err(OutboundError::Forbidden(_))));
        let r = o
            .post(
                "http://127.0.0.1:9/x",
                &[],
                Bytes::from_static(b"{}"),
                Duration::from_secs(2),
            )
            .await;
        assert!(matches!(r, Err(OutboundError::Forbidden(_))));
    }
}
