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
use pay_hsm::{DataKey, Hsm, HsmError, KeyId, KeyInfo, KeyPurpose, KeyState, Sealed, WrappedKey};
use pay_store::{Db, Entity, Index, ListQuery, StoreError, Table};
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
    kek: KeyId,
    key: Arc<DataKey>,
    since: Timestamp,
    uses: u32,
}

/// An unwrapped data key held in memory: dropped after a bounded lifetime or number of uses.
struct Cached {
    key: Arc<DataKey>,
    at: Timestamp,
    uses: u32,
}

/// Key-management failures (rotation, state changes, status).
#[derive(Debug, thiserror::Error)]
pub enum KeyAdminError {
    /// The HSM refused or failed.
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A KEK still wraps data keys, so it may not be retired or destroyed yet.
    #[error("{kek} still protects {data_keys} data key(s); rotate (re-wrap) first")]
    StillInUse {
        /// The KEK.
        kek: String,
        /// Data keys it wraps.
        data_keys: u64,
    },
    /// The key is not a KEK.
    #[error("{0} is not a key-encryption key")]
    NotAKek(String),
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationReport {
    /// The new active KEK.
    pub new_kek: KeyId,
    /// The KEKs that were active before and are now decrypt-only.
    pub previous: Vec<KeyId>,
    /// Data keys re-wrapped under the new KEK.
    pub rewrapped: u64,
    /// Database batches committed.
    pub batches: u64,
}

/// A key version and how much it protects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStatus {
    /// The key.
    pub key: KeyInfo,
    /// Data keys wrapped by it (KEKs only).
    pub data_keys: u64,
}

/// The tokenizer's view of its keys: HSM-backed fingerprints and envelope encryption with a
/// bounded-use current data key and a short-lived cache of unwrapped ones.
pub struct KeyRing {
    db: Db,
    env: Env,
    hsm: Arc<dyn Hsm>,
    current: tokio::sync::Mutex<Option<Current>>,
    unwrapped: std::sync::Mutex<BTreeMap<String, Cached>>,
    max_uses: u32,
    max_age: Duration,
    cache_ttl: Duration,
    cache_max_uses: u32,
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
            cache_max_uses: config.unwrapped_cache_max_uses.max(1),
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

    /// Encrypts under the current data key (making a new one when it is used up, old, or
    /// wrapped by a KEK that is no longer the current one).
    pub async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<(DataKeyId, Sealed), ApiError> {
        let now = self.env.now();
        // When the HSM cannot say which KEK is current, a still-fresh data key keeps serving.
        let kek = self.hsm.current_key(KeyPurpose::Kek).await.ok().map(|k| k.id);
        let (id, key) = {
            let mut cur = self.current.lock().await;
            let fresh = cur.as_ref().is_some_and(|c| {
                c.uses < self.max_uses && now.since(c.since) < self.max_age && kek.as_ref().is_none_or(|k| *k == c.kek)
            });
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
        // A rotation may retire the KEK between reading it and wrapping with it: read again.
        let mut attempt = 0;
        let (kek, key, wrapped) = loop {
            let kek = self.hsm.current_key(KeyPurpose::Kek).await.map_err(hsm_error)?;
            match self.hsm.generate_data_key(&kek.id).await {
                Ok((key, wrapped)) => break (kek, key, wrapped),
                Err(HsmError::WrongState { .. }) if attempt < 3 => attempt += 1,
                Err(e) => return Err(hsm_error(e)),
            }
        };
        let id = DataKeyId::generate(self.env.entropy.as_ref());
        let record = DataKeyRecord {
            id: id.clone(),
            wrapped,
            created_ms: now.millis(),
        };
        let mut txn = self.db.txn();
        txn.insert(&record);
        self.db.commit(txn).await.map_err(StoreError::into_api_error)?;
        // If a rotation began meanwhile, its scan may already have passed this row: move it to
        // the new KEK ourselves (a concurrent rotation doing the same wins the version race).
        let kek_now = match self.hsm.current_key(KeyPurpose::Kek).await {
            Ok(k) => k,
            // Cannot tell: keep the row as it is (`rewrap_all` picks up anything left behind).
            Err(_) => kek.clone(),
        };
        let kek_id = if kek_now.id != kek.id {
            match self.hsm.rewrap(&record.wrapped, &kek_now.id).await {
                Ok(w) => {
                    let mut txn = self.db.txn();
                    txn.update(1, &DataKeyRecord { wrapped: w, ..record });
                    match self.db.commit(txn).await {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into_api_error()),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not re-wrap a new data key after a rotation"),
            }
            kek_now.id
        } else {
            kek.id
        };
        let key = Arc::new(key);
        self.cache(&id, key.clone(), now);
        Ok(Current {
            id,
            kek: kek_id,
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
        let (ttl, max_uses) = (self.cache_ttl, self.cache_max_uses);
        c.retain(|_, e| now.since(e.at) < ttl && e.uses < max_uses);
        if c.len() >= UNWRAPPED_CACHE_MAX {
            c.clear();
        }
        c.insert(id.to_string(), Cached { key, at: now, uses: 0 });
    }

    /// Unwrapped data keys held in memory right now (for tests and metrics).
    pub fn cached_data_keys(&self) -> usize {
        match self.unwrapped.lock() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    async fn data_key(&self, id: &DataKeyId) -> Result<Arc<DataKey>, ApiError> {
        let now = self.env.now();
        if let Ok(mut c) = self.unwrapped.lock() {
            let hit = match c.get_mut(id.as_str()) {
                Some(e) if now.since(e.at) < self.cache_ttl && e.uses < self.cache_max_uses => {
                    e.uses += 1;
                    Some(e.key.clone())
                }
                Some(_) => {
                    c.remove(id.as_str());
                    None
                }
                None => None,
            };
            if let Some(k) = hit {
                return Ok(k);
            }
        }
        let rec = self
            .db
            .get::<DataKeyRecord>(id.as_str())
            .await
            .map_err(StoreError::into_api_error)?
            .ok_or_else(|| ApiError::internal("A vault record refers to a missing data key."))?;
        let key = match self.hsm.unwrap_data_key(&rec.value.wrapped).await {
            Ok(k) => k,
            // Re-wrapped by a rotation between the read and the unwrap: read it again.
            Err(HsmError::WrongState { .. }) => {
                let rec = self
                    .db
                    .get::<DataKeyRecord>(id.as_str())
                    .await
                    .map_err(StoreError::into_api_error)?
                    .ok_or_else(|| ApiError::internal("A vault record refers to a missing data key."))?;
                self.hsm.unwrap_data_key(&rec.value.wrapped).await.map_err(hsm_error)?
            }
            Err(e) => return Err(hsm_error(e)),
        };
        let key = Arc::new(key);
        self.cache(id, key.clone(), now);
        Ok(key)
    }

    /// Rotates the key-encryption key online: creates a new KEK version (new data keys use it
    /// at once), makes the previously active KEKs decrypt-only, and re-wraps every data key
    /// under the new KEK in batches of `batch`, each batch one database transaction. Card
    /// records never change and stay readable throughout: a data key is readable under its old
    /// KEK until its row is re-wrapped, and under the new one after.
    pub async fn rotate_kek(&self, batch: u32) -> Result<RotationReport, KeyAdminError> {
        let previous: Vec<KeyId> = self
            .hsm
            .list_keys()
            .await?
            .into_iter()
            .filter(|k| k.purpose == KeyPurpose::Kek && k.state == KeyState::Active)
            .map(|k| k.id)
            .collect();
        let new = self.hsm.generate_key(KeyPurpose::Kek, "kek").await?;
        *self.current.lock().await = None;
        for k in &previous {
            self.hsm.set_key_state(k, KeyState::DecryptOnly).await?;
        }
        let (rewrapped, batches) = self.rewrap_all(&new.id, batch).await?;
        tracing::info!(new_kek = %new.id, rewrapped, batches, "KEK rotated");
        Ok(RotationReport {
            new_kek: new.id,
            previous,
            rewrapped,
            batches,
        })
    }

    /// Re-wraps every data key not yet under `to` (resumes an interrupted rotation).
    pub async fn rewrap_all(&self, to: &KeyId, batch: u32) -> Result<(u64, u64), KeyAdminError> {
        let batch = batch.clamp(1, 1000);
        let mut rewrapped = 0u64;
        let mut batches = 0u64;
        let sources: Vec<KeyId> = self
            .hsm
            .list_keys()
            .await?
            .into_iter()
            .filter(|k| k.purpose == KeyPurpose::Kek && k.id != *to && k.state.can_read())
            .map(|k| k.id)
            .collect();
        for from in sources {
            loop {
                let rows = self.db.find::<DataKeyRecord>(None, Index::K1, &from.0, batch).await?;
                if rows.is_empty() {
                    break;
                }
                let mut txn = self.db.txn();
                for row in &rows {
                    let w = self.hsm.rewrap(&row.value.wrapped, to).await?;
                    txn.update(
                        row.version,
                        &DataKeyRecord {
                            wrapped: w,
                            ..row.value.clone()
                        },
                    );
                }
                match self.db.commit(txn).await {
                    Ok(_) => {
                        rewrapped += rows.len() as u64;
                        batches += 1;
                    }
                    // A concurrent writer moved one of them: read the batch again.
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok((rewrapped, batches))
    }

    /// How many data keys `kek` wraps.
    pub async fn data_keys_under(&self, kek: &KeyId) -> Result<u64, KeyAdminError> {
        let mut n = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .db
                .list::<DataKeyRecord>(ListQuery {
                    table: Table::DataKeys,
                    account: String::new(),
                    filter: Some((Index::K1, kek.to_string())),
                    created_gte: None,
                    created_lt: None,
                    starting_after: after.clone(),
                    ending_before: None,
                    limit: 100,
                })
                .await?;
            n += page.items.len() as u64;
            match page.items.last() {
                Some(last) if page.has_more => after = Some(last.value.id.to_string()),
                _ => return Ok(n),
            }
        }
    }

    /// Every key version in the HSM, with the number of data keys each KEK wraps.
    pub async fn status(&self) -> Result<Vec<KeyStatus>, KeyAdminError> {
        let mut out = vec![];
        for key in self.hsm.list_keys().await? {
            let data_keys = if key.purpose == KeyPurpose::Kek && key.state != KeyState::Destroyed {
                self.data_keys_under(&key.id).await?
            } else {
                0
            };
            out.push(KeyStatus { key, data_keys });
        }
        Ok(out)
    }

    /// Moves a KEK along its lifecycle. Retiring or destroying one that still wraps data keys
    /// is refused (those cards would become unreadable).
    pub async fn set_kek_state(&self, kek: &KeyId, state: KeyState) -> Result<KeyInfo, KeyAdminError> {
        let info = self
            .hsm
            .list_keys()
            .await?
            .into_iter()
            .find(|k| k.id == *kek)
            .ok_or_else(|| HsmError::KeyNotFound(kek.to_string()))?;
        if info.purpose != KeyPurpose::Kek {
            return Err(KeyAdminError::NotAKek(kek.to_string()));
        }
        if matches!(state, KeyState::Retired | KeyState::Destroyed) {
            let data_keys = self.data_keys_under(kek).await?;
            if data_keys > 0 {
                return Err(KeyAdminError::StillInUse {
                    kek: kek.to_string(),
                    data_keys,
                });
            }
        }
        let info = self.hsm.set_key_state(kek, state).await?;
        if state != KeyState::Active {
            *self.current.lock().await = None;
        }
        Ok(info)
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
