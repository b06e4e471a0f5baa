//! Shamir secret sharing over GF(256), for split knowledge and dual control of the software
//! HSM's master key (PCI DSS 3.6.1.2): the key is split into N custodian shares, any M of which
//! rebuild it, while M − 1 shares reveal nothing about it.
//!
//! A share's text form is `pay-share-v1-<index>-<hex bytes>-<checksum>`, where the checksum
//! (first 4 bytes of SHA-256 over index and bytes) catches a mistyped share before it is used.

use pay_core::Entropy;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Why shares were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// Threshold or share count out of range.
    #[error("need 1 <= threshold <= shares <= 255 (got threshold {threshold}, shares {shares})")]
    BadParameters {
        /// M.
        threshold: u8,
        /// N.
        shares: u8,
    },
    /// The text is not a share.
    #[error("not a share: {0}")]
    Malformed(String),
    /// The checksum does not match (a typo).
    #[error("share {0} fails its checksum (mistyped?)")]
    Checksum(u8),
    /// Two shares with one index but different content.
    #[error("conflicting shares with index {0}")]
    Conflict(u8),
    /// Shares of different lengths.
    #[error("shares have different lengths")]
    Length,
    /// No shares.
    #[error("no shares given")]
    Empty,
}

/// One custodian's share.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// The x coordinate (1–255).
    pub index: u8,
    /// One y byte per secret byte.
    pub bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share({}, [REDACTED])", self.index)
    }
}

fn checksum(index: u8, bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update([index]);
    h.update(bytes);
    hex::encode(&h.finalize()[..4])
}

impl Share {
    /// The text a custodian keeps.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "pay-share-v1-{}-{}-{}",
            self.index,
            hex::encode(&*self.bytes),
            checksum(self.index, &self.bytes)
        ))
    }

    /// Parses and checks a share's text.
    pub fn parse(text: &str) -> Result<Share, ShareError> {
        let t = text.trim();
        let rest = t
            .strip_prefix("pay-share-v1-")
            .ok_or_else(|| ShareError::Malformed("missing pay-share-v1- prefix".into()))?;
        let mut parts = rest.split('-');
        let (Some(idx), Some(hexbytes), Some(sum), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ShareError::Malformed("expected index, bytes and checksum".into()));
        };
        let index: u8 = idx.parse().map_err(|_| ShareError::Malformed("bad index".into()))?;
        if index == 0 {
            return Err(ShareError::Malformed("index 0 is not a share".into()));
        }
        let bytes = Zeroizing::new(hex::decode(hexbytes).map_err(|_| ShareError::Malformed("bad hex".into()))?);
        if checksum(index, &bytes) != sum {
            return Err(ShareError::Checksum(index));
        }
        Ok(Share { index, bytes })
    }
}

/// Multiplication in GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let hi = a & 0x80;
        a <<= 1;
        if hi != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

fn inv(a: u8) -> u8 {
    // a^254 = a^-1 in GF(256) (a != 0).
    let mut r = 1u8;
    let mut base = a;
    let mut e = 254u8;
    while e > 0 {
        if e & 1 != 0 {
            r = mul(r, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    r
}

/// Splits `secret` into `shares` shares, any `threshold` of which rebuild it.
pub fn split(secret: &[u8], threshold: u8, shares: u8, entropy: &dyn Entropy) -> Result<Vec<Share>, ShareError> {
    if threshold == 0 || shares < threshold {
        return Err(ShareError::BadParameters { threshold, shares });
    }
    let mut out: Vec<Share> = (1..=shares)
        .map(|x| Share {
            index: x,
            bytes: Zeroizing::new(Vec::with_capacity(secret.len())),
        })
        .collect();
    let mut coeffs = Zeroizing::new(vec![0u8; threshold as usize]);
    for &s in secret {
        coeffs[0] = s;
        entropy.fill_bytes(&mut coeffs[1..]);
        for share in out.iter_mut() {
            // Horner's rule at x = index.
            let mut y = 0u8;
            for c in coeffs.iter().rev() {
                y = mul(y, share.index) ^ c;
            }
            share.bytes.push(y);
        }
    }
    Ok(out)
}

/// Rebuilds the secret from shares (Lagrange interpolation at 0). With fewer shares than the
/// threshold the result is a different, meaningless value; callers check the secret (the
/// keystore refuses a wrong master key).
pub fn combine(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>, ShareError> {
    let first = shares.first().ok_or(ShareError::Empty)?;
    let len = first.bytes.len();
    let mut uniq: Vec<&Share> = vec![];
    for s in shares {
        if s.bytes.len() != len {
            return Err(ShareError::Length);
        }
        match uniq.iter().find(|u| u.index == s.index) {
            Some(u) if u.bytes != s.bytes => return Err(ShareError::Conflict(s.index)),
            Some(_) => {}
            None => uniq.push(s),
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len]);
    for (i, si) in uniq.iter().enumerate() {
        // Lagrange basis polynomial at 0: prod_{j != i} x_j / (x_j - x_i); subtraction is XOR.
        let mut num = 1u8;
        let mut den = 1u8;
        for (j, sj) in uniq.iter().enumerate() {
            if i != j {
                num = mul(num, sj.index);
                den = mul(den, sj.index ^ si.index);
            }
        }
        let l = mul(num, inv(den));
        for (b, y) in secret.iter_mut().zip(si.bytes.iter()) {
            *b ^= mul(*y, l);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pay_core::SeededEntropy;
    use proptest::prelude::*;

    #[test]
    fn field_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
    }

    #[test]
    fn text_round_trip_and_typos() {
        let e = SeededEntropy::new(1, "t");
        let shares = split(b"0123456789abcdef0123456789abcdef", 2, 3, &e).unwrap();
        let text = shares[0].to_text();
        assert_eq!(Share::parse(&text).unwrap(), shares[0]);
        let mut typo = text.to_string();
        let i = typo.len() - 12;
        let c = if &typo[i..i + 1] == "a" { "b" } else { "a" };
        typo.replace_range(i..i + 1, c);
        assert!(matches!(
            Share::parse(&typo),
            Err(ShareError::Checksum(_)) | Err(ShareError::Malformed(_))
        ));
        assert!(!format!("{:?}", shares[0]).contains(&hex::encode(&*shares[0].bytes)));
    }

    proptest! {
        #[test]
        fn any_threshold_subset_rebuilds_and_fewer_do_not(secret in proptest::collection::vec(any::<u8>(), 16..48), m in 2u8..5, extra in 0u8..3, seed in any::<u64>(), pick in any::<u64>()) {
            let n = m + extra;
            let e = SeededEntropy::new(seed, "split");
            let shares = split(&secret, m, n, &e).unwrap();
            // A pseudo-random subset of exactly m shares.
            let mut idx: Vec<usize> = (0..n as usize).collect();
            let mut p = pick;
            for i in (1..idx.len()).rev() {
                idx.swap(i, (p % (i as u64 + 1)) as usize);
                p /= i as u64 + 1;
            }
            let subset: Vec<Share> = idx[..m as usize].iter().map(|i| shares[*i].clone()).collect();
            prop_assert_eq!(&*combine(&subset).unwrap(), &secret);
            let fewer: Vec<Share> = subset[..m as usize - 1].to_vec();
            prop_assert_ne!(&*combine(&fewer).unwrap(), &secret);
        }

        #[test]
        fn duplicate_and_conflicting_shares(secret in proptest::collection::vec(any::<u8>(), 8..16)) {
            let e = SeededEntropy::new(7, "split");
            let shares = split(&secret, 2, 3, &e).unwrap();
            let dup = vec![shares[0].clone(), shares[0].clone(), shares[1].clone()];
            prop_assert_eq!(&*combine(&dup).unwrap(), &secret);
            let mut bad = shares[0].clone();
            bad.bytes[0] ^= 1;
            prop_assert_eq!(combine(&[shares[0].clone(), bad]), Err(ShareError::Conflict(1)));
        }
    }
}
