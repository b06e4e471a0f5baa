//! Hardware security module access: the [`Hsm`] trait and its backends.
//!
//! Keys that protect card data never leave the HSM: key-encryption keys (KEKs) wrap the data
//! keys that encrypt card numbers (envelope encryption), an HMAC key computes card
//! fingerprints, and P-256 keys sign. Backends: [`soft::SoftHsm`] (software, keystore file
//! encrypted under a master key, optionally reconstructed from custodian shares) and the
//! PKCS#11 backend for AWS CloudHSM or SoftHSMv2.
//!
//! The trait is async because a hardware module is a blocking FFI call (often over the
//! network); the software backend computes inline, which keeps it usable under the
//! simulator's paused clock.

#![warn(missing_docs)]

pub mod pkcs11;
pub mod shamir;
pub mod soft;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use pay_core::{Entropy, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

pub use pkcs11::{KeyProtection, Pin, Pkcs11Config, Pkcs11Error, Pkcs11Hsm, TokenSelector, WrapChoice, WrapMechanism};
pub use soft::{MasterKey, SoftHsm, UnsealProgress};

/// A key's identifier inside the HSM (`kek-3`, `fingerprint-1`, `signing-payments-1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPurpose {
    /// AES-256 key-encryption key: wraps data keys.
    Kek,
    /// HMAC-SHA256 key: card fingerprints.
    Fingerprint,
    /// P-256 signing key.
    Signing,
}

impl KeyPurpose {
    /// Lowercase name, used in key ids.
    pub fn name(self) -> &'static str {
        match self {
            KeyPurpose::Kek => "kek",
            KeyPurpose::Fingerprint => "fingerprint",
            KeyPurpose::Signing => "signing",
        }
    }
}

/// A key version's lifecycle state (PCI DSS 3.6/3.7).
///
/// `active` → `decrypt_only` → `retired` → `destroyed`; `active` may also go straight to
/// `retired`. Only an active key wraps, encrypts or signs; an active or decrypt-only key
/// unwraps and decrypts; a retired key does nothing but still exists (it can be audited);
/// a destroyed key's material is gone for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// In use for everything.
    Active,
    /// Kept to read old data (after rotation).
    DecryptOnly,
    /// No longer used.
    Retired,
    /// Material destroyed.
    Destroyed,
}

impl KeyState {
    /// True when moving from `self` to `to` is allowed.
    pub fn can_become(self, to: KeyState) -> bool {
        use KeyState::*;
        matches!(
            (self, to),
            (Active, DecryptOnly) | (Active, Retired) | (DecryptOnly, Retired) | (Retired, Destroyed)
        )
    }
    /// May unwrap, decrypt and compute HMACs.
    pub fn can_read(self) -> bool {
        matches!(self, KeyState::Active | KeyState::DecryptOnly)
    }
}

/// Facts about a key version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Identifier.
    pub id: KeyId,
    /// Purpose.
    pub purpose: KeyPurpose,
    /// Version within its purpose (1, 2, …).
    pub version: u32,
    /// Lifecycle state.
    pub state: KeyState,
    /// Label given at creation.
    pub label: String,
    /// When created.
    pub created_at: Timestamp,
}

/// A 256-bit data-encryption key in memory: zeroized on drop, never printed.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> DataKey {
        DataKey(Zeroizing::new(b))
    }
    /// The key bytes (for the software AEAD only).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// A data key wrapped by a KEK, as stored beside the data it protects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The KEK that wrapped it.
    pub kek: KeyId,
    /// How: `aes-kwp` (RFC 5649 key wrap with padding) or `aes-gcm`.
    pub mechanism: String,
    /// The wrapped bytes, base64.
    #[serde(with = "b64")]
    pub bytes: Vec<u8>,
}

/// AES-256-GCM output: the 12-byte IV and the ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The IV.
    #[serde(with = "b64")]
    pub iv: Vec<u8>,
    /// Ciphertext and 16-byte tag.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// HSM failures. Messages name keys and settings, never key material or PINs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HsmError {
    /// The keystore is sealed: unseal it with custodian shares first.
    #[error("the HSM is sealed; submit unseal shares first")]
    Sealed,
    /// The module cannot be reached right now.
    #[error("the HSM is unavailable: {0}")]
    Unavailable(String),
    /// No such key.
    #[error("no key {0}")]
    KeyNotFound(String),
    /// No key of this purpose is active.
    #[error("no active {0} key")]
    NoActiveKey(&'static str),
    /// The key's state or purpose does not allow the operation.
    #[error("key {key} ({state:?}) may not be used to {operation}")]
    WrongState {
        /// Key.
        key: String,
        /// Its state.
        state: KeyState,
        /// The refused operation.
        operation: &'static str,
    },
    /// A state change that the lifecycle forbids.
    #[error("key {key} cannot go from {from:?} to {to:?}")]
    IllegalTransition {
        /// Key.
        key: String,
        /// Current state.
        from: KeyState,
        /// Requested state.
        to: KeyState,
    },
    /// The key is of another purpose.
    #[error("key {key} is a {actual:?} key, not a {expected:?} key")]
    WrongPurpose {
        /// Key.
        key: String,
        /// Its purpose.
        actual: KeyPurpose,
        /// The purpose needed.
        expected: KeyPurpose,
    },
    /// Authentication of ciphertext failed (wrong key, AAD or tampering).
    #[error("decryption failed: the data or its associated data was altered, or the key is wrong")]
    Integrity,
    /// Bad input (empty AAD, wrong lengths).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The module lacks a required mechanism.
    #[error("mechanism not supported by the module: {0}")]
    MechanismUnsupported(String),
    /// The keystore file could not be read, written or decrypted.
    #[error("keystore: {0}")]
    Keystore(String),
    /// A PKCS#11 module error.
    #[error("PKCS#11: {0}")]
    Module(String),
}

/// The operations the platform needs from an HSM.
#[async_trait]
pub trait Hsm: Send + Sync + 'static {
    /// Creates a new key version of `purpose`; it becomes the current one.
    async fn generate_key(&self, purpose: KeyPurpose, label: &str) -> Result<KeyInfo, HsmError>;
    /// Every key version.
    async fn list_keys(&self) -> Result<Vec<KeyInfo>, HsmError>;
    /// The newest active key of `purpose`.
    async fn current_key(&self, purpose: KeyPurpose) -> Result<KeyInfo, HsmError>;
    /// Moves a key along its lifecycle (destroying erases the material).
    async fn set_key_state(&self, id: &KeyId, state: KeyState) -> Result<KeyInfo, HsmError>;
    /// A fresh random data key, and the same key wrapped by `kek`.
    async fn generate_data_key(&self, kek: &KeyId) -> Result<(DataKey, WrappedKey), HsmError>;
    /// Unwraps a data key.
    async fn unwrap_data_key(&self, wrapped: &WrappedKey) -> Result<DataKey, HsmError>;
    /// Re-wraps a data key under another KEK without exposing it outside the HSM boundary.
    async fn rewrap(&self, wrapped: &WrappedKey, new_kek: &KeyId) -> Result<WrappedKey, HsmError>;
    /// AES-256-GCM under an HSM-resident key; the HSM chooses the IV and returns it.
    /// `aad` must not be empty.
    async fn encrypt(&self, key: &KeyId, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, HsmError>;
    /// Reverses [`Hsm::encrypt`].
    async fn decrypt(&self, key: &KeyId, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError>;
    /// HMAC-SHA256 under an HSM-resident key.
    async fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError>;
    /// ECDSA P-256 (SHA-256) signature, 64 bytes `r || s`.
    async fn sign(&self, key: &KeyId, message: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// The SEC1 uncompressed public key of a signing key.
    async fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, HsmError>;
}

/// Verifies a 64-byte P-256 signature against a SEC1 public key (pure software).
pub fn verify_p256(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), HsmError> {
    use p256::ecdsa::signature::Verifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
        .map_err(|_| HsmError::InvalidInput("not a P-256 public key".into()))?;
    let sig = p256::ecdsa::Signature::from_slice(signature)
        .map_err(|_| HsmError::InvalidInput("not a 64-byte P-256 signature".into()))?;
    vk.verify(message, &sig).map_err(|_| HsmError::Integrity)
}

/// Encrypts with a data key in software (AES-256-GCM, random IV from `entropy`).
pub fn seal_with_data_key(
    key: &DataKey,
    plaintext: &[u8],
    aad: &[u8],
    entropy: &dyn Entropy,
) -> Result<Sealed, HsmError> {
    if aad.is_empty() {
        return Err(HsmError::InvalidInput("associated data must not be empty".into()));
    }
    let cipher =
        Aes256Gcm::new_from_slice(key.expose()).map_err(|_| HsmError::InvalidInput("bad key length".into()))?;
    let mut iv = [0u8; 12];
    entropy.fill_bytes(&mut iv);
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&iv), Payload { msg: plaintext, aad })
        .map_err(|_| HsmError::InvalidInput("encryption failed".into()))?;
    Ok(Sealed {
        iv: iv.to_vec(),
        ciphertext,
    })
}

/// Decrypts what [`seal_with_data_key`] produced.
pub fn open_with_data_key(key: &DataKey, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    if sealed.iv.len() != 12 {
        return Err(HsmError::InvalidInput("IV must be 12 bytes".into()));
    }
    let cipher =
        Aes256Gcm::new_from_slice(key.expose()).map_err(|_| HsmError::InvalidInput("bad key length".into()))?;
    cipher
        .decrypt(
            Nonce::from_slice(&sealed.iv),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| HsmError::Integrity)
}
