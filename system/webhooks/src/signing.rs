//! Webhook signatures, both schemes on every delivery:
//!
//! * **Stripe**: `Stripe-Signature: t=<unix>,v1=<hex>` where the hex is HMAC-SHA256 of
//!   `"<t>.<body>"` keyed by the whole `whsec_…` string — what `stripe.Webhook.construct_event`
//!   checks. One `v1=` per active secret, so a rotated-out secret keeps verifying for 24 h.
//! * **Standard Webhooks**: `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64>` where the base64 is HMAC-SHA256 of `"<id>.<t>.<body>"`
//!   keyed by the base64-decoded part of the secret after `whsec_` — what the `standardwebhooks`
//!   libraries check. Several signatures are separated by spaces.
//!
//! Secrets are `whsec_` + base64 of 32 random bytes, so both schemes can use the same secret.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use pay_core::{Entropy, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of webhook signing secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a signature did not verify (receiver side; used by tests and the CLI's checker).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The header is missing or malformed.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("timestamp outside the tolerance")]
    Stale,
    /// No signature matches.
    #[error("no matching signature")]
    Mismatch,
    /// The secret is not `whsec_` + base64.
    #[error("invalid secret format")]
    BadSecret,
}

/// A new signing secret from `entropy`.
pub fn generate_secret(entropy: &dyn Entropy) -> SecretString {
    let mut raw = [0u8; 32];
    entropy.fill_bytes(&mut raw);
    SecretString::new(format!("{SECRET_PREFIX}{}", B64.encode(raw)))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn standard_key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).ok_or(SignatureError::BadSecret)?;
    B64.decode(b64).map_err(|_| SignatureError::BadSecret)
}

/// The `Stripe-Signature` header value for `body` sent at `t` (Unix seconds), one `v1` per
/// secret.
pub fn stripe_signature_header(secrets: &[&SecretString], t: i64, body: &[u8]) -> String {
    let mut out = format!("t={t}");
    let ts = t.to_string();
    for s in secrets {
        let sig = hmac(s.expose().as_bytes(), &[ts.as_bytes(), b".", body]);
        out.push_str(",v1=");
        out.push_str(&hex::encode(sig));
    }
    out
}

/// The `webhook-signature` header value (Standard Webhooks) for message `id` sent at `t`.
pub fn standard_signature_header(
    secrets: &[&SecretString],
    id: &str,
    t: i64,
    body: &[u8],
) -> Result<String, SignatureError> {
    let ts = t.to_string();
    let mut sigs = vec![];
    for s in secrets {
        let key = standard_key(s.expose())?;
        let sig = hmac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
        sigs.push(format!("v1,{}", B64.encode(sig)));
    }
    Ok(sigs.join(" "))
}

/// Verifies a `Stripe-Signature` header as Stripe's libraries do: some `v1` must match and `t`
/// must be within `tolerance_secs` of `now`.
pub fn verify_stripe(
    header: &str,
    body: &[u8],
    secret: &SecretString,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = vec![];
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.trim().parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(hex::decode(v.trim()).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = hmac(secret.expose().as_bytes(), &[t.to_string().as_bytes(), b".", body]);
    if !v1.iter().any(|s| bool::from(s.as_slice().ct_eq(&expected))) {
        return Err(SignatureError::Mismatch);
    }
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// Verifies Standard Webhooks headers.
pub fn verify_standard(
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    secret: &SecretString,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let t: i64 = timestamp.trim().parse().map_err(|_| SignatureError::Malformed)?;
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let key = standard_key(secret.expose())?;
    let expected = hmac(&key, &[id.as_bytes(), b".", t.to_string().as_bytes(), b".", body]);
    for sig in signature.split(' ') {
        if let Some(b64) = sig.strip_prefix("v1,") {
            if let Ok(raw) = B64.decode(b64) {
                if bool::from(raw.as_slice().ct_eq(&expected)) {
                    return Ok(());
                }
            }
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification's reference libraries.
        let secret = SecretString::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let body = br#"{"test": 2432232314}"#;
        let sig = standard_signature_header(&[&secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        verify_standard(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            &sig,
            body,
            &secret,
            1614265330,
            300,
        )
        .unwrap();
    }

    #[test]
    fn stripe_header_verifies_and_rejects_tampering_and_staleness() {
        let s = generate_secret(&pay_core::SeededEntropy::new(1, "t"));
        assert!(s.expose().starts_with("whsec_"));
        let body = br#"{"id":"evt_1"}"#;
        let h = stripe_signature_header(&[&s], 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        verify_stripe(&h, body, &s, 1_700_000_100, 300).unwrap();
        assert_eq!(
            verify_stripe(&h, b"{\"id\":\"evt_2\"}", &s, 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_stripe(&h, body, &s, 1_700_000_400, 300),
            Err(SignatureError::Stale)
        );
        let other = generate_secret(&pay_core::SeededEntropy::new(2, "t"));
        assert_eq!(
            verify_stripe(&h, body, &other, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_stripe("garbage", body, &s, 1_700_000_000, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn rotation_signs_with_every_active_secret() {
        let old = generate_secret(&pay_core::SeededEntropy::new(1, "old"));
        let new = generate_secret(&pay_core::SeededEntropy::new(1, "new"));
        let body = b"{}";
        let h = stripe_signature_header(&[&new, &old], 10, body);
        verify_stripe(&h, body, &old, 10, 300).unwrap();
        verify_stripe(&h, body, &new, 10, 300).unwrap();
        let std = standard_signature_header(&[&new, &old], "msg_1", 10, body).unwrap();
        assert_eq!(std.split(' ').count(), 2);
        verify_standard("msg_1", "10", &std, body, &old, 10, 300).unwrap();
        verify_standard("msg_1", "10", &std, body, &new, 10, 300).unwrap();
        assert_eq!(
            verify_standard("msg_2", "10", &std, body, &new, 10, 300),
            Err(SignatureError::Mismatch),
            "the message id is signed"
        );
    }
}
