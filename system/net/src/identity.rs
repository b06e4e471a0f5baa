//! Internal service authentication.
//!
//! Every call between services carries an `X-Service-Token`: claims naming the calling service
//! (`iss`), the callee (`aud`), issue and expiry times, signed with the caller's P-256 key
//! (ECDSA, SHA-256). The callee checks the signature against its directory of service public
//! keys, the audience, and the validity window (with leeway for clock skew), and each route
//! names which callers it accepts — e.g. only `payments` may ask the tokenizer to forward a
//! card to the acquirer.
//!
//! Tokens are short-lived (60 s by default) and reused for many calls: signing once per
//! minute per audience, and caching verified tokens, keeps the cost off the request path.

use crate::respond::api_error_response;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use pay_core::{ApiError, Entropy, EntropyRng, Env, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Header that carries the service token.
pub const SERVICE_TOKEN_HEADER: &str = "x-service-token";

/// Why a service identity was refused or could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No token on a route that requires one.
    #[error("missing service token")]
    Missing,
    /// The token is not in the expected format.
    #[error("malformed service token")]
    Malformed,
    /// The issuer is not in the directory.
    #[error("unknown calling service `{0}`")]
    UnknownService(String),
    /// The signature does not verify.
    #[error("service token signature invalid")]
    BadSignature,
    /// The token was made for another service.
    #[error("service token is for `{0}`, not this service")]
    WrongAudience(String),
    /// Outside the validity window.
    #[error("service token expired or not yet valid")]
    Expired,
    /// The caller is authenticated but not allowed on this route.
    #[error("service `{0}` may not call this endpoint")]
    NotAllowed(String),
    /// A key file could not be read or parsed (the path is named, never the content).
    #[error("cannot load service key {0}")]
    KeyFile(String),
}

/// The signed claims of a service token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Calling service.
    pub iss: String,
    /// Called service.
    pub aud: String,
    /// Issued at, Unix milliseconds.
    pub iat: i64,
    /// Expires at, Unix milliseconds.
    pub exp: i64,
}

/// A service's private signing key. Never printed.
pub struct ServiceKey {
    name: String,
    key: SigningKey,
}

impl ServiceKey {
    /// A fresh key for `name` drawn from `entropy` (dev mode and the simulator).
    pub fn generate(name: &str, entropy: &dyn Entropy) -> ServiceKey {
        ServiceKey {
            name: name.to_owned(),
            key: SigningKey::random(&mut EntropyRng(entropy)),
        }
    }

    /// Loads a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(name: &str, pem: &str) -> Result<ServiceKey, IdentityError> {
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| IdentityError::KeyFile(format!("for service `{name}`: not a P-256 PKCS#8 PEM key")))?;
        Ok(ServiceKey {
            name: name.to_owned(),
            key,
        })
    }

    /// The key as PKCS#8 PEM (for `paymentd keys init-service-keys`).
    pub fn to_pkcs8_pem(&self) -> Result<pay_core::SecretString, IdentityError> {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| IdentityError::KeyFile("encode failed".into()))?;
        Ok(pay_core::SecretString::new(pem.to_string()))
    }

    /// The service name this key signs for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        *self.key.verifying_key()
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> Result<String, IdentityError> {
        self.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| IdentityError::KeyFile("encode failed".into()))
    }
}

/// The public keys of every service, by name.
#[derive(Clone, Default)]
pub struct ServiceDirectory {
    keys: BTreeMap<String, VerifyingKey>,
}

impl ServiceDirectory {
    /// An empty directory.
    pub fn new() -> ServiceDirectory {
        ServiceDirectory::default()
    }
    /// Adds or replaces `name`'s public key.
    pub fn insert(&mut self, name: &str, key: VerifyingKey) {
        self.keys.insert(name.to_owned(), key);
    }
    /// Adds `name`'s key from SPKI PEM.
    pub fn insert_pem(&mut self, name: &str, pem: &str) -> Result<(), IdentityError> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| IdentityError::KeyFile(format!("public key of `{name}`: not a P-256 SPKI PEM")))?;
        self.insert(name, key);
        Ok(())
    }
    /// The key of `name`.
    pub fn get(&self, name: &str) -> Option<&VerifyingKey> {
        self.keys.get(name)
    }
    /// Service names present.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// Issues tokens for outgoing calls, reusing each until shortly before it expires.
pub struct TokenIssuer {
    key: Arc<ServiceKey>,
    env: Env,
    ttl: Duration,
    cache: Mutex<BTreeMap<String, (String, Timestamp)>>,
}

impl TokenIssuer {
    /// An issuer signing with `key`, tokens valid for `ttl`.
    pub fn new(key: Arc<ServiceKey>, env: Env, ttl: Duration) -> TokenIssuer {
        TokenIssuer {
            key,
            env,
            ttl,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// The name of the service this issuer speaks for.
    pub fn service(&self) -> &str {
        self.key.name()
    }

    /// A token for calling `audience`.
    pub fn token_for(&self, audience: &str) -> String {
        let now = self.env.now();
        // Renew when less than a third of the lifetime remains.
        let renew_margin = self.ttl / 3;
        if let Ok(cache) = self.cache.lock() {
            if let Some((tok, exp)) = cache.get(audience) {
                if now.plus(renew_margin) < *exp {
                    return tok.clone();
                }
            }
        }
        let exp = now.plus(self.ttl);
        let claims = Claims {
            iss: self.key.name.clone(),
            aud: audience.to_owned(),
            iat: now.millis(),
            exp: exp.millis(),
        };
        // Serializing a struct of strings and integers cannot fail.
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let sig: Signature = self.key.key.sign(payload.as_bytes());
        let token = format!("{payload}.{}", B64.encode(sig.to_bytes()));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(audience.to_owned(), (token.clone(), exp));
        }
        token
    }
}

/// Verifies incoming tokens for one service.
pub struct TokenVerifier {
    me: String,
    directory: ServiceDirectory,
    env: Env,
    leeway: Duration,
    verified: Mutex<BTreeMap<String, (String, i64)>>,
}

/// Verified tokens remembered at most (each is re-verified after eviction).
const VERIFIED_CACHE_MAX: usize = 1024;

impl TokenVerifier {
    /// A verifier for service `me`, accepting clock differences up to `leeway`.
    pub fn new(me: &str, directory: ServiceDirectory, env: Env, leeway: Duration) -> TokenVerifier {
        TokenVerifier {
            me: me.to_owned(),
            directory,
            env,
            leeway,
            verified: Mutex::new(BTreeMap::new()),
        }
    }

    /// Checks `token` and returns the calling service's name.
    pub fn verify(&self, token: &str) -> Result<String, IdentityError> {
        let now = self.env.now().millis();
        let leeway = i64::try_from(self.leeway.as_millis()).unwrap_or(i64::MAX);
        if let Ok(cache) = self.verified.lock() {
            if let Some((caller, exp)) = cache.get(token) {
                if now <= exp.saturating_add(leeway) {
                    return Ok(caller.clone());
                }
                return Err(IdentityError::Expired);
            }
        }
        let (payload, sig) = token.split_once('.').ok_or(IdentityError::Malformed)?;
        let claims_bytes = B64.decode(payload).map_err(|_| IdentityError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&claims_bytes).map_err(|_| IdentityError::Malformed)?;
        let key = self
            .directory
            .get(&claims.iss)
            .ok_or_else(|| IdentityError::UnknownService(claims.iss.chars().take(32).collect()))?;
        let sig_bytes = B64.decode(sig).map_err(|_| IdentityError::Malformed)?;
        let sig = Signature::from_slice(&sig_bytes).map_err(|_| IdentityError::Malformed)?;
        key.verify(payload.as_bytes(), &sig)
            .map_err(|_| IdentityError::BadSignature)?;
        if claims.aud != self.me {
            return Err(IdentityError::WrongAudience(claims.aud.chars().take(32).collect()));
        }
        if now < claims.iat.saturating_sub(leeway) || now > claims.exp.saturating_add(leeway) {
            return Err(IdentityError::Expired);
        }
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.retain(|_, (_, exp)| now <= exp.saturating_add(leeway));
                if cache.len() >= VERIFIED_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(token.to_owned(), (claims.iss.clone(), claims.exp));
        }
        Ok(claims.iss)
    }
}

/// The authenticated calling service, inserted into request extensions by [`require_caller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// State for the [`require_caller`] middleware: the verifier and the services allowed.
#[derive(Clone)]
pub struct CallerPolicy {
    /// Verifies tokens.
    pub verifier: Arc<TokenVerifier>,
    /// Services allowed on the routes this policy guards.
    pub allowed: &'static [&'static str],
}

/// Axum middleware: rejects requests without a valid token from an allowed service (401/403),
/// otherwise inserts [`Caller`] and continues. Use with `axum::middleware::from_fn_with_state`.
pub async fn require_caller(State(policy): State<CallerPolicy>, mut req: Request, next: Next) -> Response {
    let token = req.headers().get(SERVICE_TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let result = match token {
        None => Err(IdentityError::Missing),
        Some(t) => policy.verifier.verify(t),
    };
    match result {
        Ok(caller) if policy.allowed.contains(&caller.as_str()) => {
            req.extensions_mut().insert(Caller(caller));
            next.run(req).await
        }
        Ok(caller) => api_error_response(&ApiError::forbidden(
            "service_not_allowed",
            IdentityError::NotAllowed(caller).to_string(),
        )),
        Err(e) => api_error_response(&ApiError::unauthenticated(format!(
            "Internal service authentication failed: {e}."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pay_core::SeededEntropy;

    fn setup() -> (TokenIssuer, TokenVerifier, Arc<pay_core::ManualClock>) {
        let (env, clock) = Env::deterministic("t", 3, Timestamp::from_secs(1_000_000));
        let e = SeededEntropy::new(3, "keys");
        let payments = ServiceKey::generate("payments", &e);
        let mut dir = ServiceDirectory::new();
        dir.insert("payments", payments.verifying_key());
        let issuer = TokenIssuer::new(Arc::new(payments), env.clone(), Duration::from_secs(60));
        let verifier = TokenVerifier::new("tokenizer", dir, env, Duration::from_secs(30));
        (issuer, verifier, clock)
    }

    #[test]
    fn valid_token_names_the_caller_and_is_reused() {
        let (issuer, verifier, _) = setup();
        let t = issuer.token_for("tokenizer");
        assert_eq!(verifier.verify(&t).unwrap(), "payments");
        assert_eq!(issuer.token_for("tokenizer"), t);
    }

    #[test]
    fn wrong_audience_tamper_and_expiry_are_refused() {
        let (issuer, verifier, clock) = setup();
        assert!(matches!(
            verifier.verify(&issuer.token_for("acquirer")),
            Err(IdentityError::WrongAudience(_))
        ));
        let t = issuer.token_for("tokenizer");
        let (payload, sig) = t.split_once('.').unwrap();
        let mut claims: Claims = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        claims.iss = "payments".into();
        claims.exp += 3_600_000;
        let forged = format!("{}.{sig}", B64.encode(serde_json::to_vec(&claims).unwrap()));
        assert_eq!(verifier.verify(&forged), Err(IdentityError::BadSignature));
        assert_eq!(verifier.verify("garbage"), Err(IdentityError::Malformed));
        clock.advance(Duration::from_secs(120));
        assert_eq!(verifier.verify(&t), Err(IdentityError::Expired));
        // A fresh token after the old one expired works again.
        assert_eq!(verifier.verify(&issuer.token_for("tokenizer")).unwrap(), "payments");
    }

    #[test]
    fn unknown_service_is_refused() {
        let (_, verifier, _) = setup();
        let (env, _) = Env::deterministic("x", 9, Timestamp::from_secs(1_000_000));
        let rogue = TokenIssuer::new(
            Arc::new(ServiceKey::generate("payments", &SeededEntropy::new(9, "rogue"))),
            env,
            Duration::from_secs(60),
        );
        assert_eq!(
            verifier.verify(&rogue.token_for("tokenizer")),
            Err(IdentityError::BadSignature)
        );
    }

    #[test]
    fn pem_round_trip() {
        let e = SeededEntropy::new(5, "pem");
        let k = ServiceKey::generate("api", &e);
        let pem = k.to_pkcs8_pem().unwrap();
        let k2 = ServiceKey::from_pkcs8_pem("api", pem.expose()).unwrap();
        assert_eq!(k.verifying_key(), k2.verifying_key());
        let mut dir = ServiceDirectory::new();
        dir.insert_pem("api", &k.public_pem().unwrap()).unwrap();
        assert!(ServiceKey::from_pkcs8_pem("api", "not pem").is_err());
    }
}
