//! KEK rotation under load (PCI DSS 3.6.4/3.6.5): cards are tokenized and charged without
//! pause while the key-encryption key is rotated twice; no request fails, every vault record
//! decrypts afterwards, the old KEKs wrap nothing and can be retired and destroyed, and the
//! records still decrypt after that. Then the whole database is searched for the raw bytes of
//! every data key in use (hex and base64): there must be none. Run on the software HSM here and
//! on SoftHSMv2 through PKCS#11 in `../key_rotation_pkcs11.rs` (its own process: the module reads
//! `SOFTHSM2_CONF` from the environment, which is set before it loads).

use crate::rotation_common::{rotation_under_load, tuning};
use integration::stack_on_postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rotation_under_load_on_the_software_hsm() {
    rotation_under_load(stack_on_postgres(tuning()).await).await;
}
