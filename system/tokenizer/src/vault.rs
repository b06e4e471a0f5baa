//! Vault records and envelope encryption.
//!
//! Each card number is encrypted with AES-256-GCM under a *data key*, bound by its AAD to the
//! token and account (a ciphertext moved to another record does not decrypt). Data keys are
//! random 256-bit keys made by the HSM and stored only wrapped by the HSM's current
//! key-encryption key (KEK); the KEK never leaves the HSM. A data key encrypts a bounded number
//! of cards for a bounded time; unwrapped data keys are cached in memory briefly. KEK rotation
//! re-wraps the data-key rows; card rows never change.

use crate::TokenizerConfig;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use pay_core::{AccountId, ApiError, CardBrand, CardSummary, DataKeyId, Env, Timestamp, VaultTokenId};
use pay_hsm::{DataKey, Hsm, HsmError, KeyPurpose, Sealed, WrappedKey};
use pay_store::{Db, Entity, StoreError, Table};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// A vaulted card.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultCard {
    /// `tok_…`
    pub token: VaultTokenId,
    /// Merchant.
    pub account: AccountId,
    /// The data key that encrypts the number.
    pub data_key: DataKeyId,
    /// AES-GCM IV, base64.
    pub iv: String,
    /// AES-GCM ciphertext and tag of the digits, base64.
    pub ciphertext: String,
    /// Network.
    pub brand: CardBrand,
    /// First six digits.
    pub bin: String,
    /// Last four digits.
    pub last4: String,
    /// Number of digits.
    pub pan_len: usize,
    /// Expiry month.
    pub exp_month: u32,
    /// Expiry year.
    pub exp_year: i32,
    /// Keyed HMAC fingerprint.
    pub fingerprint: String,
    /// Issuing country.
    pub country: Option<String>,
    /// Funding.
    pub funding: String,
    /// Unix ms.
    pub created_ms: i64,
}

impl std::fmt::Debug for VaultCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultCard")
            .field("token", &self.token)
            .field("brand", &self.brand)
            .field("last4", &self.last4)
            .finish_non_exhaustive()
    }
}

/// The index value of an expiry month (`exp:202612`), for retention purges.
pub fn expiry_key(year: i32, month: u32) -> String {
    format!("exp:{year:04}{month:02}")
}

/// Associated data binding a ciphertext to its record.
pub fn aad(account: &AccountId, token: &VaultTokenId) -> Vec<u8> {
    format!("vault:v1:{account}:{token}").into_bytes()
}

impl VaultCard {
    /// A vault record for a card sealed under a data key.
    pub fn new(
        token: VaultTokenId,
        account: AccountId,
        s: &CardSummary,
        pan_len: usize,
        sealed: (DataKeyId, Sealed),
        now: Timestamp,
    ) -> VaultCard {
        let (data_key, sealed) = sealed;
        VaultCard {
            token,
            account,
            data_key,
            iv: B64.encode(&sealed.iv),
            ciphertext: B64.encode(&sealed.ciphertext),
            brand: s.brand,
            bin: s.bin.clone(),
            last4: s.last4.clone(),
            pan_len,
            exp_month: s.exp_month,
            exp_year: s.exp_year,
            fingerprint: s.fingerprint.clone(),
            country: s.country.clone(),
            funding: s.funding.clone(),
            created_ms: now.millis(),
        }
    }

    /// What may be shown.
    pub fn summary(&self) -> CardSummary {
        CardSummary {
            brand: self.brand,
            bin: self.bin.clone(),
            last4: self.last4.clone(),
            exp_month: self.exp_month,
            exp_year: self.exp_year,
            fingerprint: self.fingerprint.clone(),
            country: self.country.clone(),
            funding: self.funding.clone(),
        }
    }
}

impl Entity for VaultCard {
    const TABLE: Table = Table::VaultCards;
    fn id(&self) -> &str {
        self.token.as_str()
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        Some(self.fingerprint.clone())
    }
    fn k2(&self) -> Option<String> {
        Some(expiry_key(self.exp_year, self.exp_month))
    }
}

/// A data key as stored: wrapped by a KEK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataKeyRecord {
    /// `dk_…`
    pub id: DataKeyId,
    /// The wrapped key (names its KEK).
    pub wrapped: WrappedKey,
    /// Unix ms.
    pub created_ms: i64,
}

impl Entity for DataKeyRecord {
    const TABLE: Table = Table::DataKeys;
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn account(&self) -> &str {
        ""
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        Some(self.wrapped.kek.to_string())
    }
    fn k2(&self) -> Option<String> {
        Some("active".to_owned())
    }
}

struct Current {
    id: DataKeyId,
    key: Arc<DataKey>,
    since: Timestamp,
    uses: u32,
}

/// The tokenizer's view of its keys: HSM-backed fingerprints and envelope encryption with a
/// bounded-use current data key and a short-lived cache of unwrapped ones.
pub struct KeyRing {
    db: Db,
    env: Env,
    hsm: Arc<dyn Hsm>,
    current: tokio::sync::Mutex<Option<Current>>,
    unwrapped: std::sync::Mutex<BTreeMap<String, (Arc<DataKey>, Timestamp)>>,
    max_uses: u32,
    max_age: Duration,
    cache_ttl: Duration,
}

fn hsm_error(e: HsmError) -> ApiError {
    match e {
        HsmError::Sealed => {
            ApiError::unavailable("The vault is sealed: card operations are refused until it is unsealed.")
        }
        HsmError::Unavailable(_) => ApiError::unavailable("The key store is temporarily unavailable."),
        other => {
            tracing::error!(error = %other, "HSM operation failed");
            ApiError::internal("A key management operation failed.")
        }
    }
}

const UNWRAPPED_CACHE_MAX: usize = 1024;

impl KeyRing {
    /// A key ring over `hsm`, storing wrapped data keys in `db`.
    pub fn new(db: Db, env: Env, hsm: Arc<dyn Hsm>, config: &TokenizerConfig) -> KeyRing {
        KeyRing {
            db,
            env,
            hsm,
            current: tokio::sync::Mutex::new(None),
            unwrapped: std::sync::Mutex::new(BTreeMap::new()),
            max_uses: config.data_key_max_uses,
            max_age: config.data_key_max_age,
            cache_ttl: config.unwrapped_cache_ttl,
        }
    }

    /// The HSM.
    pub fn hsm(&self) -> &Arc<dyn Hsm> {
        &self.hsm
    }

    /// The keyed fingerprint of a card number: HMAC-SHA256 under the HSM's fingerprint key,
    /// first 8 bytes as 16 hex characters (like Stripe's 16-character fingerprints).
    pub async fn fingerprint(&self, digits: &str) -> Result<String, ApiError> {
        let key = self.hsm.current_key(KeyPurpose::Fingerprint).await.map_err(hsm_error)?;
        let mac = self
            .hsm
            .hmac_sha256(&key.id, digits.as_bytes())
            .await
            .map_err(hsm_error)?;
        Ok(hex::encode(&mac[..8]))
    }

    /// Encrypts under the current data key (making a new one when it is used up or old).
    pub async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<(DataKeyId, Sealed), ApiError> {
        let now = self.env.now();
        let (id, key) = {
            let mut cur = self.current.lock().await;
            let fresh = cur
                .as_ref()
                .is_some_and(|c| c.uses < self.max_uses && now.since(c.since) < self.max_age);
            if !fresh {
                *cur = Some(self.new_data_key(now).await?);
            }
            let c = cur.as_mut().ok_or_else(|| ApiError::internal("no current data key"))?;
            c.uses += 1;
            (c.id.clone(), c.key.clone())
        };
        let sealed = pay_hsm::seal_with_data_key(&key, plaintext, aad, self.env.entropy.as_ref()).map_err(hsm_error)?;
        Ok((id, sealed))
    }

    async fn new_data_key(&self, now: Timestamp) -> Result<Current, ApiError> {
        let kek = self.hsm.current_key(KeyPurpose::Kek).await.map_err(hsm_error)?;
        let (key, wrapped) = self.hsm.generate_data_key(&kek.id).await.map_err(hsm_error)?;
        let id = DataKeyId::generate(self.env.entropy.as_ref());
        let mut txn = self.db.txn();
        txn.insert(&DataKeyRecord {
            id: id.clone(),
            wrapped,
            created_ms: now.millis(),
        });
        self.db.commit(txn).await.map_err(StoreError::into_api_error)?;
        let key = Arc::new(key);
        self.cache(&id, key.clone(), now);
        Ok(Current {
            id,
            key,
            since: now,
            uses: 0,
        })
    }

    fn cache(&self, id: &DataKeyId, key: Arc<DataKey>, now: Timestamp) {
        let mut c = match self.unwrapped.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let ttl = self.cache_ttl;
        c.retain(|_, (_, at)| now.since(*at) < ttl);
        if c.len() >= UNWRAPPED_CACHE_MAX {
            c.clear();
        }
        c.insert(id.to_string(), (key, now));
    }

    async fn data_key(&self, id: &DataKeyId) -> Result<Arc<DataKey>, ApiError> {
        let now = self.env.now();
        if let Ok(c) = self.unwrapped.lock() {
            if let Some((k, at)) = c.get(id.as_str()) {
                if now.since(*at) < self.cache_ttl {
                    return Ok(k.clone());
                }
            }
        }
        let rec = self
            .db
            .get::<DataKeyRecord>(id.as_str())
            .await
            .map_err(StoreError::into_api_error)?
            .ok_or_else(|| ApiError::internal("A vault record refers to a missing data key."))?;
        let key = Arc::new(self.hsm.unwrap_data_key(&rec.value.wrapped).await.map_err(hsm_error)?);
        self.cache(id, key.clone(), now);
        Ok(key)
    }

    /// Decrypts a vaulted card's digits.
    pub async fn decrypt(&self, card: &VaultCard) -> Result<Zeroizing<String>, ApiError> {
        let key = self.data_key(&card.data_key).await?;
        let corrupt = || ApiError::internal("A vault record could not be decrypted.");
        let sealed = Sealed {
            iv: B64.decode(&card.iv).map_err(|_| corrupt())?,
            ciphertext: B64.decode(&card.ciphertext).map_err(|_| corrupt())?,
        };
        let plain =
            pay_hsm::open_with_data_key(&key, &sealed, &aad(&card.account, &card.token)).map_err(|_| corrupt())?;
        let s = String::from_utf8(plain.to_vec()).map_err(|_| corrupt())?;
        Ok(Zeroizing::new(s))
    }
}
