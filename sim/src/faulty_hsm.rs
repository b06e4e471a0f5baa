//! The simulator's HSM: a software HSM whose every operation first passes the `hsm.call`
//! fault point, so scenarios can make the HSM unavailable.

use crate::world::{ActiveFaults, Shared};
use async_trait::async_trait;
use pay_hsm::{DataKey, Hsm, HsmError, KeyId, KeyInfo, KeyPurpose, KeyState, Sealed, WrappedKey};
use std::sync::Arc;
use zeroize::Zeroizing;

/// An HSM that fails while the run's faults say it is unavailable.
pub struct FaultyHsm {
    inner: Arc<dyn Hsm>,
    shared: Arc<Shared>,
}

impl FaultyHsm {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Hsm>, shared: Arc<Shared>) -> FaultyHsm {
        FaultyHsm { inner, shared }
    }

    fn gate(&self, op: &str) -> Result<(), HsmError> {
        let unavailable = {
            let f: ActiveFaults = crate::world::lock(&self.shared.faults).clone();
            f.hsm_unavailable
        };
        if unavailable {
            self.shared
                .trace("hsm", "fault", format!("hsm.call {op} -> unavailable"));
            return Err(HsmError::Unavailable("injected outage".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Hsm for FaultyHsm {
    async fn generate_key(&self, purpose: KeyPurpose, label: &str) -> Result<KeyInfo, HsmError> {
        self.gate("generate_key")?;
        self.inner.generate_key(purpose, label).await
    }
    async fn list_keys(&self) -> Result<Vec<KeyInfo>, HsmError> {
        self.gate("list_keys")?;
        self.inner.list_keys().await
    }
    async fn current_key(&self, purpose: KeyPurpose) -> Result<KeyInfo, HsmError> {
        self.gate("current_key")?;
        self.inner.current_key(purpose).await
    }
    async fn set_key_state(&self, id: &KeyId, state: KeyState) -> Result<KeyInfo, HsmError> {
        self.gate("set_key_state")?;
        self.inner.set_key_state(id, state).await
    }
    async fn generate_data_key(&self, kek: &KeyId) -> Result<(DataKey, WrappedKey), HsmError> {
        self.gate("generate_data_key")?;
        self.inner.generate_data_key(kek).await
    }
    async fn unwrap_data_key(&self, wrapped: &WrappedKey) -> Result<DataKey, HsmError> {
        self.gate("unwrap_data_key")?;
        self.inner.unwrap_data_key(wrapped).await
    }
    async fn rewrap(&self, wrapped: &WrappedKey, new_kek: &KeyId) -> Result<WrappedKey, HsmError> {
        self.gate("rewrap")?;
        self.inner.rewrap(wrapped, new_kek).await
    }
    async fn encrypt(&self, key: &KeyId, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, HsmError> {
        self.gate("encrypt")?;
        self.inner.encrypt(key, plaintext, aad).await
    }
    async fn decrypt(&self, key: &KeyId, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.gate("decrypt")?;
        self.inner.decrypt(key, sealed, aad).await
    }
    async fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError> {
        self.gate("hmac_sha256")?;
        self.inner.hmac_sha256(key, data).await
    }
    async fn sign(&self, key: &KeyId, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.gate("sign")?;
        self.inner.sign(key, message).await
    }
    async fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, HsmError> {
        self.gate("public_key")?;
        self.inner.public_key(key).await
    }
}
