//! Merchant accounts and their API keys.
//!
//! A secret key (`sk_test_…`) may do everything; a publishable key (`pk_test_…`) may only
//! create payment methods (what a browser does). Keys are stored as their SHA-256 digest (they
//! are 192-bit random, so a fast hash is enough) and the clear key is shown once, at creation.

use pay_core::{AccountId, ApiError, ApiKeyId, Entropy, SecretString, Timestamp};
use pay_store::{Db, Entity, StoreError, Table};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// A merchant account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// `acct_…`
    pub id: AccountId,
    /// Display name.
    pub name: String,
    /// Unix ms.
    pub created_ms: i64,
}

impl Entity for Account {
    const TABLE: Table = Table::Accounts;
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn account(&self) -> &str {
        self.id.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
}

/// Secret or publishable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// Full access.
    Secret,
    /// May only create payment methods.
    Publishable,
}

/// A stored API key: never the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// SHA-256 of the key, hex.
    pub digest: String,
    /// Public identifier (`key_…`).
    pub key_id: ApiKeyId,
    /// Owning account.
    pub account: AccountId,
    /// Kind.
    pub kind: KeyKind,
    /// Last four characters, for display (`sk_test_…abcd`).
    pub last4: String,
    /// Unix ms.
    pub created_ms: i64,
    /// When revoked (Unix ms).
    pub revoked_ms: Option<i64>,
}

impl Entity for ApiKeyRecord {
    const TABLE: Table = Table::ApiKeys;
    fn id(&self) -> &str {
        &self.digest
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        Some(self.key_id.to_string())
    }
    fn k2(&self) -> Option<String> {
        Some(match self.kind {
            KeyKind::Secret => "secret".to_owned(),
            KeyKind::Publishable => "publishable".to_owned(),
        })
    }
}

/// SHA-256 hex of a key.
pub fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A newly created key pair, shown once.
pub struct NewKeys {
    /// The account.
    pub account: AccountId,
    /// `sk_test_…`
    pub secret: SecretString,
    /// `pk_test_…`
    pub publishable: String,
}

/// Creates an account (if `account` is None) and a secret + publishable key pair for it.
pub async fn create_keys(
    db: &Db,
    entropy: &dyn Entropy,
    now: Timestamp,
    account: Option<AccountId>,
    name: &str,
) -> Result<NewKeys, StoreError> {
    let mut txn = db.txn();
    let account = match account {
        Some(a) => a,
        None => {
            let a = Account {
                id: AccountId::generate(entropy),
                name: name.to_owned(),
                created_ms: now.millis(),
            };
            txn.insert(&a);
            a.id
        }
    };
    let secret = format!("sk_test_{}", pay_core::ids::random_base62(entropy, 32));
    let publishable = format!("pk_test_{}", pay_core::ids::random_base62(entropy, 32));
    for (key, kind) in [(&secret, KeyKind::Secret), (&publishable, KeyKind::Publishable)] {
        txn.insert(&ApiKeyRecord {
            digest: digest(key),
            key_id: ApiKeyId::generate(entropy),
            account: account.clone(),
            kind,
            last4: key[key.len() - 4..].to_owned(),
            created_ms: now.millis(),
            revoked_ms: None,
        });
    }
    db.commit(txn).await?;
    Ok(NewKeys {
        account,
        secret: SecretString::new(secret),
        publishable,
    })
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account.
    pub account: AccountId,
    /// The key's public id.
    pub key_id: ApiKeyId,
    /// Secret or publishable.
    pub kind: KeyKind,
}

/// Resolves API keys to principals, caching hits for a short time so most requests do not
/// touch the database (a revoked key stops working within the cache lifetime).
pub struct KeyResolver {
    db: Db,
    ttl: Duration,
    cache: Mutex<BTreeMap<String, (Principal, Timestamp)>>,
}

const CACHE_MAX: usize = 10_000;

impl KeyResolver {
    /// A resolver over `db` caching for `ttl`.
    pub fn new(db: Db, ttl: Duration) -> KeyResolver {
        KeyResolver {
            db,
            ttl,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// The principal for `key`, or a 401 naming only the key's masked form.
    pub async fn resolve(&self, key: &str, now: Timestamp) -> Result<Principal, ApiError> {
        let masked = mask_key(key);
        if !(key.starts_with("sk_test_") || key.starts_with("pk_test_")) || key.len() > 128 {
            return Err(ApiError::unauthenticated(format!("Invalid API Key provided: {masked}")));
        }
        let d = digest(key);
        if let Ok(cache) = self.cache.lock() {
            if let Some((p, at)) = cache.get(&d) {
                if now.since(*at) < self.ttl {
                    return Ok(p.clone());
                }
            }
        }
        let rec = self
            .db
            .get::<ApiKeyRecord>(&d)
            .await
            .map_err(StoreError::into_api_error)?;
        match rec {
            Some(r) if r.value.revoked_ms.is_none() => {
                let p = Principal {
                    account: r.value.account,
                    key_id: r.value.key_id,
                    kind: r.value.kind,
                };
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(d, (p.clone(), now));
                }
                Ok(p)
            }
            Some(_) => Err(
                ApiError::unauthenticated(format!("The API key provided has been revoked: {masked}")).with_status(401),
            ),
            None => Err(ApiError::unauthenticated(format!("Invalid API Key provided: {masked}"))),
        }
    }
}

/// `sk_test_****abcd`: enough to recognise a key, useless to an attacker.
pub fn mask_key(key: &str) -> String {
    let prefix: String = key.chars().take(8).collect();
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if key.len() <= 12 {
        return "****".to_owned();
    }
    format!("{prefix}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pay_core::Env;
    use pay_store::memory::MemoryBackend;
    use std::sync::Arc;

    #[tokio::test]
    async fn keys_resolve_and_are_stored_hashed() {
        let (env, _) = Env::deterministic("api", 1, Timestamp::from_secs(1_000));
        let mem = Arc::new(MemoryBackend::new());
        let db = Db::new(mem.clone(), env.clone());
        let keys = create_keys(&db, env.entropy.as_ref(), env.now(), None, "Test")
            .await
            .unwrap();
        let r = KeyResolver::new(db, Duration::from_secs(30));
        let p = r.resolve(keys.secret.expose(), env.now()).await.unwrap();
        assert_eq!(p.kind, KeyKind::Secret);
        assert_eq!(p.account, keys.account);
        assert_eq!(
            r.resolve(&keys.publishable, env.now()).await.unwrap().kind,
            KeyKind::Publishable
        );
        let e = r.resolve("sk_test_nope_nope_nope", env.now()).await.unwrap_err();
        assert_eq!(e.status, 401);
        assert!(!e.message.contains("nope_nope_nope"));
        let dump = serde_json::to_string(&mem.dump()).unwrap();
        assert!(!dump.contains(keys.secret.expose().as_str()));
        assert!(!dump.contains(&keys.publishable));
    }
}
