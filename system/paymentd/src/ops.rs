//! Operator procedures shared by the `paymentd` commands and by tools that act as an operator
//! (`pcicheck`): creating a software-HSM keystore whose master key exists only as custodian
//! shares (`paymentd keys split-master`) and verifying the audit log (`paymentd audit verify`).

use crate::wiring::ensure_hsm_keys;
use pay_core::Env;
use pay_hsm::shamir::Share;
use pay_hsm::{MasterKey, SoftHsm};
use std::path::Path;

/// Why a custodian keystore could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustodyError {
    /// The keystore path is taken (a new master key would orphan its keys).
    #[error("{0} exists: give --master-key-file to split its master key, or choose a new path")]
    Exists(String),
    /// The HSM refused (keystore not writable, bad share parameters).
    #[error("keystore: {0}")]
    Hsm(String),
}

/// Creates a software-HSM keystore at `keystore` under a fresh random master key, with its
/// first KEK and fingerprint key, and returns the master key split into `shares` custodian
/// shares of which `threshold` unseal it. The master key itself is written nowhere.
pub async fn create_split_keystore(
    keystore: &Path,
    threshold: u8,
    shares: u8,
    env: &Env,
) -> Result<Vec<Share>, CustodyError> {
    if keystore.exists() {
        return Err(CustodyError::Exists(keystore.display().to_string()));
    }
    let master = MasterKey::generate(env.entropy.as_ref());
    // Check the parameters before anything is written.
    let parts = master
        .split(threshold, shares, env.entropy.as_ref())
        .map_err(|e| CustodyError::Hsm(e.to_string()))?;
    let copy = MasterKey::from_hex(&master.to_hex()).map_err(|e| CustodyError::Hsm(e.to_string()))?;
    let h = SoftHsm::open(keystore, copy, env.entropy.clone(), env.clock.clone())
        .map_err(|e| CustodyError::Hsm(e.to_string()))?;
    ensure_hsm_keys(&h).await.map_err(CustodyError::Hsm)?;
    Ok(parts)
}

/// Verifies the audit log at `path` (hash chain, sequence, checkpoint signatures, optionally
/// pinned to `trusted_keys`) and says what `paymentd audit verify` prints: the summary on
/// success, the first broken line otherwise.
pub fn verify_audit_log(path: &Path, trusted_keys: &[String]) -> Result<String, pay_audit::Broken> {
    let v = pay_audit::verify(path, trusted_keys)?;
    let mut out = format!(
        "audit log OK: {} lines, {} events, {} signed checkpoints, {} events after the last checkpoint",
        v.lines, v.events, v.checkpoints, v.unsigned_tail
    );
    for k in v.keys {
        out.push_str(&format!("\ncheckpoint key: {k}"));
    }
    Ok(out)
}
