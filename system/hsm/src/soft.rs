//! The software HSM: keys in memory, optionally persisted to a keystore file encrypted with
//! AES-256-GCM under a 256-bit master key.
//!
//! The master key comes from a file, or — for split knowledge and dual control — is rebuilt
//! from custodian shares submitted one by one ([`SoftHsm::open_sealed`],
//! [`SoftHsm::submit_unseal_share`]); until then every operation answers [`HsmError::Sealed`].
//! Key material is zeroized when dropped and never printed. All randomness comes from the
//! entropy passed in, so the simulator's HSM replays under a seed.

use crate::shamir::{self, Share};
use crate::{DataKey, Hsm, HsmError, KeyId, KeyInfo, KeyPurpose, KeyState, Sealed, WrappedKey};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer;
use pay_core::{Clock, Entropy, EntropyRng, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// The 256-bit key that encrypts the keystore file. Never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate(entropy: &dyn Entropy) -> MasterKey {
        let mut k = [0u8; 32];
        entropy.fill_bytes(&mut k);
        MasterKey(Zeroizing::new(k))
    }
    /// From 64 hex characters.
    pub fn from_hex(text: &str) -> Result<MasterKey, HsmError> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| HsmError::Keystore("the master key must be 64 hex characters".into()))?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| HsmError::Keystore("the master key must be 32 bytes (64 hex characters)".into()))?;
        Ok(MasterKey(Zeroizing::new(arr)))
    }
    /// From a file holding 64 hex characters.
    pub fn from_file(path: &Path) -> Result<MasterKey, HsmError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| HsmError::Keystore(format!("cannot read master key file {}: {e}", path.display())))?,
        );
        MasterKey::from_hex(&text)
    }
    /// As 64 hex characters (for writing the file at `init`).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(*self.0))
    }
    /// Splits into custodian shares.
    pub fn split(&self, threshold: u8, shares: u8, entropy: &dyn Entropy) -> Result<Vec<Share>, HsmError> {
        shamir::split(&*self.0, threshold, shares, entropy).map_err(|e| HsmError::InvalidInput(e.to_string()))
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    info: KeyInfo,
    material: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Keystore {
    format: u32,
    keys: Vec<StoredKey>,
}

struct Key {
    info: KeyInfo,
    material: Option<Zeroizing<Vec<u8>>>,
}

enum Lock {
    Open(MasterKey),
    Ephemeral,
    Sealed { threshold: u8, shares: Vec<Share> },
}

struct State {
    keys: BTreeMap<KeyId, Key>,
    lock: Lock,
}

/// Progress of unsealing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnsealProgress {
    /// Distinct shares received.
    pub received: usize,
    /// Shares needed.
    pub threshold: u8,
    /// True once the keystore is open.
    pub unsealed: bool,
}

/// The software HSM.
pub struct SoftHsm {
    state: Mutex<State>,
    path: Option<PathBuf>,
    entropy: Arc<dyn Entropy>,
    clock: Arc<dyn Clock>,
}

const MAGIC: &[u8] = b"PAYHSM1\n";
const STORE_AAD: &[u8] = b"pay-hsm keystore v1";

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn decrypt_store(master: &MasterKey, data: &[u8]) -> Result<Keystore, HsmError> {
    let body = data
        .strip_prefix(MAGIC)
        .ok_or_else(|| HsmError::Keystore("not a keystore file (bad header)".into()))?;
    if body.len() < 12 + 16 {
        return Err(HsmError::Keystore("keystore file is truncated".into()));
    }
    let cipher = Aes256Gcm::new_from_slice(&*master.0).map_err(|_| HsmError::Keystore("bad master key".into()))?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&body[..12]),
                Payload {
                    msg: &body[12..],
                    aad: STORE_AAD,
                },
            )
            .map_err(|_| {
                HsmError::Keystore("cannot decrypt the keystore: wrong master key or corrupted file".into())
            })?,
    );
    serde_json::from_slice(&plain).map_err(|_| HsmError::Keystore("keystore content is corrupted".into()))
}

fn to_keys(store: Keystore) -> Result<BTreeMap<KeyId, Key>, HsmError> {
    let mut keys = BTreeMap::new();
    for k in store.keys {
        let material = match k.material {
            Some(h) => {
                Some(Zeroizing::new(hex::decode(h).map_err(|_| {
                    HsmError::Keystore("keystore content is corrupted".into())
                })?))
            }
            None => None,
        };
        keys.insert(k.info.id.clone(), Key { info: k.info, material });
    }
    Ok(keys)
}

impl SoftHsm {
    /// An in-memory HSM with no keys (dev mode and the simulator).
    pub fn new_ephemeral(entropy: Arc<dyn Entropy>, clock: Arc<dyn Clock>) -> SoftHsm {
        SoftHsm {
            state: Mutex::new(State {
                keys: BTreeMap::new(),
                lock: Lock::Ephemeral,
            }),
            path: None,
            entropy,
            clock,
        }
    }

    /// Opens (or creates, if missing) the keystore at `path` with `master`.
    pub fn open(
        path: &Path,
        master: MasterKey,
        entropy: Arc<dyn Entropy>,
        clock: Arc<dyn Clock>,
    ) -> Result<SoftHsm, HsmError> {
        let keys = match std::fs::read(path) {
            Ok(data) => to_keys(decrypt_store(&master, &data)?)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(HsmError::Keystore(format!("cannot read {}: {e}", path.display()))),
        };
        let h = SoftHsm {
            state: Mutex::new(State {
                keys,
                lock: Lock::Open(master),
            }),
            path: Some(path.to_owned()),
            entropy,
            clock,
        };
        h.persist(&lock(&h.state))?;
        Ok(h)
    }

    /// Opens the keystore at `path` sealed: nothing works until `threshold` custodian shares
    /// of the master key have been submitted.
    pub fn open_sealed(
        path: &Path,
        threshold: u8,
        entropy: Arc<dyn Entropy>,
        clock: Arc<dyn Clock>,
    ) -> Result<SoftHsm, HsmError> {
        if !path.exists() {
            return Err(HsmError::Keystore(format!(
                "no keystore at {} (initialise it first)",
                path.display()
            )));
        }
        if threshold == 0 {
            return Err(HsmError::InvalidInput("the unseal threshold must be at least 1".into()));
        }
        Ok(SoftHsm {
            state: Mutex::new(State {
                keys: BTreeMap::new(),
                lock: Lock::Sealed {
                    threshold,
                    shares: vec![],
                },
            }),
            path: Some(path.to_owned()),
            entropy,
            clock,
        })
    }

    /// Submits one custodian share. When enough have arrived the master key is rebuilt and the
    /// keystore opened; a wrong set of shares is refused and the collected shares discarded.
    pub fn submit_unseal_share(&self, share_text: &str) -> Result<UnsealProgress, HsmError> {
        let share = Share::parse(share_text).map_err(|e| HsmError::InvalidInput(e.to_string()))?;
        let mut st = lock(&self.state);
        let (threshold, shares) = match &mut st.lock {
            Lock::Sealed { threshold, shares } => (*threshold, shares),
            _ => {
                return Ok(UnsealProgress {
                    received: 0,
                    threshold: 0,
                    unsealed: true,
                })
            }
        };
        if !shares.iter().any(|s| s.index == share.index) {
            shares.push(share);
        }
        let received = shares.len();
        if received < threshold as usize {
            return Ok(UnsealProgress {
                received,
                threshold,
                unsealed: false,
            });
        }
        let secret = shamir::combine(shares).map_err(|e| HsmError::InvalidInput(e.to_string()));
        let attempt = secret.and_then(|s| {
            let arr: [u8; 32] = s
                .as_slice()
                .try_into()
                .map_err(|_| HsmError::Keystore("shares do not form a 32-byte master key".into()))?;
            let master = MasterKey(Zeroizing::new(arr));
            let path = self
                .path
                .clone()
                .ok_or_else(|| HsmError::Keystore("no keystore path".into()))?;
            let data =
                std::fs::read(&path).map_err(|e| HsmError::Keystore(format!("cannot read {}: {e}", path.display())))?;
            Ok((to_keys(decrypt_store(&master, &data)?)?, master))
        });
        match attempt {
            Ok((keys, master)) => {
                st.keys = keys;
                st.lock = Lock::Open(master);
                Ok(UnsealProgress {
                    received,
                    threshold,
                    unsealed: true,
                })
            }
            Err(e) => {
                if let Lock::Sealed { shares, .. } = &mut st.lock {
                    shares.clear();
                }
                Err(e)
            }
        }
    }

    /// `(sealed, shares received, threshold)`: the unseal progress, for status endpoints.
    pub fn seal_progress(&self) -> (bool, usize, u8) {
        match &lock(&self.state).lock {
            Lock::Sealed { threshold, shares } => (true, shares.len(), *threshold),
            _ => (false, 0, 0),
        }
    }

    /// True until unsealed.
    pub fn is_sealed(&self) -> bool {
        matches!(lock(&self.state).lock, Lock::Sealed { .. })
    }

    fn persist(&self, st: &State) -> Result<(), HsmError> {
        let (Some(path), Lock::Open(master)) = (&self.path, &st.lock) else {
            return Ok(());
        };
        let store = Keystore {
            format: 1,
            keys: st
                .keys
                .values()
                .map(|k| StoredKey {
                    info: k.info.clone(),
                    material: k.material.as_ref().map(|m| hex::encode(&**m)),
                })
                .collect(),
        };
        let plain = Zeroizing::new(serde_json::to_vec(&store).map_err(|e| HsmError::Keystore(e.to_string()))?);
        let cipher = Aes256Gcm::new_from_slice(&*master.0).map_err(|_| HsmError::Keystore("bad master key".into()))?;
        let mut iv = [0u8; 12];
        self.entropy.fill_bytes(&mut iv);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &plain,
                    aad: STORE_AAD,
                },
            )
            .map_err(|_| HsmError::Keystore("encryption failed".into()))?;
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &out).map_err(|e| HsmError::Keystore(format!("cannot write {}: {e}", tmp.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
        }
        std::fs::rename(&tmp, path).map_err(|e| HsmError::Keystore(format!("cannot replace {}: {e}", path.display())))
    }

    fn with_open<R>(&self, f: impl FnOnce(&mut State) -> Result<R, HsmError>) -> Result<R, HsmError> {
        let mut st = lock(&self.state);
        if let Lock::Sealed { .. } = st.lock {
            return Err(HsmError::Sealed);
        }
        f(&mut st)
    }

    fn material<'a>(
        st: &'a State,
        id: &KeyId,
        purpose: KeyPurpose,
        op: &'static str,
        need_active: bool,
    ) -> Result<&'a [u8], HsmError> {
        let k = st.keys.get(id).ok_or_else(|| HsmError::KeyNotFound(id.to_string()))?;
        if k.info.purpose != purpose {
            return Err(HsmError::WrongPurpose {
                key: id.to_string(),
                actual: k.info.purpose,
                expected: purpose,
            });
        }
        let allowed = if need_active {
            k.info.state == KeyState::Active
        } else {
            k.info.state.can_read()
        };
        if !allowed {
            return Err(HsmError::WrongState {
                key: id.to_string(),
                state: k.info.state,
                operation: op,
            });
        }
        k.material
            .as_deref()
            .map(|m| m.as_slice())
            .ok_or_else(|| HsmError::WrongState {
                key: id.to_string(),
                state: k.info.state,
                operation: op,
            })
    }

    fn wrap(kek: &[u8], data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let kek = aes_kw::KekAes256::try_from(kek).map_err(|_| HsmError::InvalidInput("bad KEK length".into()))?;
        kek.wrap_with_padding_vec(data)
            .map_err(|_| HsmError::InvalidInput("key wrap failed".into()))
    }

    fn unwrap(kek: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let kek = aes_kw::KekAes256::try_from(kek).map_err(|_| HsmError::InvalidInput("bad KEK length".into()))?;
        kek.unwrap_with_padding_vec(data)
            .map(Zeroizing::new)
            .map_err(|_| HsmError::Integrity)
    }
}

fn data_key_from(bytes: &[u8]) -> Result<DataKey, HsmError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| HsmError::Integrity)?;
    Ok(DataKey::from_bytes(arr))
}

#[async_trait]
impl Hsm for SoftHsm {
    async fn generate_key(&self, purpose: KeyPurpose, label: &str) -> Result<KeyInfo, HsmError> {
        let now: Timestamp = self.clock.now();
        let mut material = Zeroizing::new(vec![0u8; 32]);
        if purpose == KeyPurpose::Signing {
            let sk = p256::SecretKey::random(&mut EntropyRng(self.entropy.as_ref()));
            material.copy_from_slice(&sk.to_bytes());
        } else {
            self.entropy.fill_bytes(&mut material);
        }
        self.with_open(|st| {
            let version = st
                .keys
                .values()
                .filter(|k| k.info.purpose == purpose)
                .map(|k| k.info.version)
                .max()
                .unwrap_or(0)
                + 1;
            let id = KeyId(format!("{}-{version}", purpose.name()));
            let info = KeyInfo {
                id: id.clone(),
                purpose,
                version,
                state: KeyState::Active,
                label: label.to_owned(),
                created_at: now,
            };
            st.keys.insert(
                id,
                Key {
                    info: info.clone(),
                    material: Some(material),
                },
            );
            self.persist(st)?;
            Ok(info)
        })
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>, HsmError> {
        self.with_open(|st| Ok(st.keys.values().map(|k| k.info.clone()).collect()))
    }

    async fn current_key(&self, purpose: KeyPurpose) -> Result<KeyInfo, HsmError> {
        self.with_open(|st| {
            st.keys
                .values()
                .filter(|k| k.info.purpose == purpose && k.info.state == KeyState::Active)
                .max_by_key(|k| k.info.version)
                .map(|k| k.info.clone())
                .ok_or(HsmError::NoActiveKey(purpose.name()))
        })
    }

    async fn set_key_state(&self, id: &KeyId, state: KeyState) -> Result<KeyInfo, HsmError> {
        self.with_open(|st| {
            let k = st
                .keys
                .get_mut(id)
                .ok_or_else(|| HsmError::KeyNotFound(id.to_string()))?;
            if !k.info.state.can_become(state) {
                return Err(HsmError::IllegalTransition {
                    key: id.to_string(),
                    from: k.info.state,
                    to: state,
                });
            }
            k.info.state = state;
            if state == KeyState::Destroyed {
                k.material = None;
            }
            let info = k.info.clone();
            self.persist(st)?;
            Ok(info)
        })
    }

    async fn generate_data_key(&self, kek: &KeyId) -> Result<(DataKey, WrappedKey), HsmError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        self.entropy.fill_bytes(&mut *raw);
        self.with_open(|st| {
            let k = Self::material(st, kek, KeyPurpose::Kek, "wrap", true)?;
            let bytes = Self::wrap(k, &*raw)?;
            Ok((
                DataKey::from_bytes(*raw),
                WrappedKey {
                    kek: kek.clone(),
                    mechanism: "aes-kwp".into(),
                    bytes,
                },
            ))
        })
    }

    async fn unwrap_data_key(&self, wrapped: &WrappedKey) -> Result<DataKey, HsmError> {
        if wrapped.mechanism != "aes-kwp" {
            return Err(HsmError::MechanismUnsupported(wrapped.mechanism.clone()));
        }
        self.with_open(|st| {
            let k = Self::material(st, &wrapped.kek, KeyPurpose::Kek, "unwrap", false)?;
            let raw = Self::unwrap(k, &wrapped.bytes)?;
            data_key_from(&raw)
        })
    }

    async fn rewrap(&self, wrapped: &WrappedKey, new_kek: &KeyId) -> Result<WrappedKey, HsmError> {
        if wrapped.mechanism != "aes-kwp" {
            return Err(HsmError::MechanismUnsupported(wrapped.mechanism.clone()));
        }
        self.with_open(|st| {
            let old = Self::material(st, &wrapped.kek, KeyPurpose::Kek, "unwrap", false)?;
            let raw = Self::unwrap(old, &wrapped.bytes)?;
            let new = Self::material(st, new_kek, KeyPurpose::Kek, "wrap", true)?;
            Ok(WrappedKey {
                kek: new_kek.clone(),
                mechanism: "aes-kwp".into(),
                bytes: Self::wrap(new, &raw)?,
            })
        })
    }

    async fn encrypt(&self, key: &KeyId, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, HsmError> {
        if aad.is_empty() {
            return Err(HsmError::InvalidInput("associated data must not be empty".into()));
        }
        let mut iv = [0u8; 12];
        self.entropy.fill_bytes(&mut iv);
        self.with_open(|st| {
            let k = Self::material(st, key, KeyPurpose::Kek, "encrypt", true)?;
            let cipher = Aes256Gcm::new_from_slice(k).map_err(|_| HsmError::InvalidInput("bad key length".into()))?;
            let ciphertext = cipher
                .encrypt(Nonce::from_slice(&iv), Payload { msg: plaintext, aad })
                .map_err(|_| HsmError::InvalidInput("encryption failed".into()))?;
            Ok(Sealed {
                iv: iv.to_vec(),
                ciphertext,
            })
        })
    }

    async fn decrypt(&self, key: &KeyId, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if aad.is_empty() {
            return Err(HsmError::InvalidInput("associated data must not be empty".into()));
        }
        if sealed.iv.len() != 12 {
            return Err(HsmError::InvalidInput("IV must be 12 bytes".into()));
        }
        self.with_open(|st| {
            let k = Self::material(st, key, KeyPurpose::Kek, "decrypt", false)?;
            let cipher = Aes256Gcm::new_from_slice(k).map_err(|_| HsmError::InvalidInput("bad key length".into()))?;
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
        })
    }

    async fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError> {
        self.with_open(|st| {
            let k = Self::material(st, key, KeyPurpose::Fingerprint, "hmac", false)?;
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(k)
                .map_err(|_| HsmError::InvalidInput("bad key length".into()))?;
            mac.update(data);
            Ok(mac.finalize().into_bytes().into())
        })
    }

    async fn sign(&self, key: &KeyId, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.with_open(|st| {
            let k = Self::material(st, key, KeyPurpose::Signing, "sign", true)?;
            let sk =
                p256::ecdsa::SigningKey::from_slice(k).map_err(|_| HsmError::Keystore("corrupt signing key".into()))?;
            let sig: p256::ecdsa::Signature = sk.sign(message);
            Ok(sig.to_bytes().to_vec())
        })
    }

    async fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, HsmError> {
        self.with_open(|st| {
            let k = Self::material(st, key, KeyPurpose::Signing, "read the public key of", false)?;
            let sk =
                p256::ecdsa::SigningKey::from_slice(k).map_err(|_| HsmError::Keystore("corrupt signing key".into()))?;
            Ok(sk.verifying_key().to_encoded_point(false).as_bytes().to_vec())
        })
    }
}
