//! The rotation-under-load scenario of `stack/key_rotation.rs` on SoftHSMv2 through PKCS#11. A
//! process of its own: the module reads `SOFTHSM2_CONF` from the environment when it first
//! loads, so the variable is set while no other test thread runs.

mod rotation_common;

use integration::stack_on_postgres_with_hsm;
use rotation_common::{rotation_under_load, tuning};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rotation_under_load_on_pkcs11_softhsm2() {
    use pay_hsm::pkcs11::softhsm2;
    let Some(module) = softhsm2::find_module().filter(|m| m.exists()) else {
        if std::env::var("PAY_HSM_SKIP_PKCS11").is_ok_and(|v| v == "1") {
            eprintln!("PAY_HSM_SKIP_PKCS11=1: skipping");
            return;
        }
        panic!("SoftHSMv2 is not installed: apt-get install softhsm2 (or PAY_HSM_SKIP_PKCS11=1 to skip)");
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = softhsm2::write_config(dir.path()).unwrap();
    softhsm2::init_token(&conf, "rotation", "so-pin-0000", "pin-1111").unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let hsm = pay_hsm::Pkcs11Hsm::connect(
        &pay_hsm::Pkcs11Config {
            module,
            token: pay_hsm::TokenSelector::Label("rotation".into()),
            pin: pay_hsm::Pin::new("pin-1111"),
            sessions: 4,
            wrap: pay_hsm::WrapChoice::Auto,
        },
        Arc::new(pay_core::SystemClock),
    )
    .unwrap();
    rotation_under_load(stack_on_postgres_with_hsm(tuning(), Arc::new(hsm)).await).await;
}
