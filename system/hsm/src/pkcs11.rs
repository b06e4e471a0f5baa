//! The PKCS#11 backend: keys live in a hardware module (AWS CloudHSM, SoftHSMv2, any
//! PKCS#11 v2.40+ token) and never leave it.
//!
//! * KEKs are AES-256 token keys created sensitive and non-extractable. Data keys are wrapped
//!   with `CKM_AES_KEY_WRAP_PAD` (RFC 5649) when the module offers it for wrap/unwrap, else with
//!   `CKM_AES_GCM` through `C_Encrypt` (CloudHSM versions without KWP). The choice is made by
//!   probing the module's mechanisms when connecting and logged once.
//! * Fingerprint keys are 256-bit generic secrets used with `CKM_SHA256_HMAC`; signing keys are
//!   P-256 key pairs used with `CKM_ECDSA` over a SHA-256 digest.
//! * A key's id, purpose, version, lifecycle state, creation time and label are kept in the key
//!   object's `CKA_LABEL` (`pay:<purpose>:<version>:<state>:<created_ms>:<label>`) and its id in
//!   `CKA_ID`, so the module is the only source of truth and several processes can share it.
//!   Leaving the active state also clears the key's `CKA_WRAP`/`CKA_ENCRYPT`/`CKA_SIGN` flags
//!   (and, when retired, `CKA_UNWRAP`/`CKA_DECRYPT`) where the module allows it, so the module
//!   itself refuses the operation. Destroying a key runs `C_DestroyObject` and leaves a
//!   `CKO_DATA` tombstone holding only the metadata, so audits still see the version.
//! * Calls are blocking FFI, so each runs on the blocking thread pool with a session taken from
//!   a fixed-size pool (`sessions` in the configuration). Sessions that the module drops are
//!   reopened and logged in again.
//! * Errors name the module, token, function and PKCS#11 return code, never the PIN.

use crate::{DataKey, Hsm, HsmError, KeyId, KeyInfo, KeyPurpose, KeyState, Sealed, WrappedKey};
use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use pay_core::{Clock, Timestamp};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use zeroize::Zeroizing;

/// DER encoding of the prime256v1 (P-256) curve OID, for `CKA_EC_PARAMS`.
const P256_OID_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// Prefix of every label this backend writes; objects without it are not ours.
const LABEL_PREFIX: &str = "pay:";
/// `CKA_APPLICATION` of tombstones of destroyed keys.
const TOMBSTONE_APP: &[u8] = b"pay-hsm destroyed key";
/// Associated data of data keys wrapped with AES-GCM (bound to the KEK's id).
const GCM_WRAP_AAD: &str = "pay-hsm data key v1:";
/// How long key metadata read from the module is trusted before it is read again (other
/// processes may have rotated keys meanwhile).
const METADATA_TTL: Duration = Duration::from_secs(2);
/// The longest user label kept (CloudHSM limits `CKA_LABEL` to 127 bytes).
const MAX_LABEL: usize = 64;

/// A PKCS#11 user PIN. Zeroized on drop and never printed. AWS CloudHSM expects
/// `crypto-user-name:password`.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// A PIN from text (surrounding whitespace and a trailing newline are removed).
    pub fn new(text: &str) -> Pin {
        Pin(Zeroizing::new(text.trim().to_owned()))
    }
    /// Reads the PIN from a secret file.
    pub fn from_file(path: &Path) -> Result<Pin, Pkcs11Error> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Pkcs11Error::PinFile {
            path: path.display().to_string(),
            reason: e.kind().to_string(),
        })?);
        let pin = Pin::new(&text);
        if pin.0.is_empty() {
            return Err(Pkcs11Error::PinFile {
                path: path.display().to_string(),
                reason: "the file is empty".into(),
            });
        }
        Ok(pin)
    }
    fn auth(&self) -> AuthPin {
        AuthPin::from(self.0.as_str().to_owned())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin([REDACTED])")
    }
}

/// Which token to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token with this label (the usual choice; slot numbers change between reboots).
    Label(String),
    /// The token in this slot id.
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "token labelled {l:?}"),
            TokenSelector::Slot(s) => write!(f, "slot {s}"),
        }
    }
}

/// How data keys are wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WrapChoice {
    /// `CKM_AES_KEY_WRAP_PAD` when the module offers it, else AES-GCM.
    #[default]
    Auto,
    /// `CKM_AES_KEY_WRAP_PAD` or fail.
    KeyWrapPad,
    /// AES-GCM through `C_Encrypt` (the data key passes through host memory, zeroized).
    Gcm,
}

/// Settings of the PKCS#11 backend.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// The module (shared library), e.g. `/opt/cloudhsm/lib/libcloudhsm_pkcs11.so`.
    pub module: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: Pin,
    /// How many sessions to keep open (concurrent HSM calls).
    pub sessions: usize,
    /// Data-key wrapping.
    pub wrap: WrapChoice,
}

/// Why the PKCS#11 backend could not start. Never contains the PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs11Error {
    /// The module file does not exist.
    #[error("PKCS#11 module {path} does not exist (install the HSM client or fix hsm.module)")]
    ModuleNotFound {
        /// Path.
        path: String,
    },
    /// The module could not be loaded or initialised.
    #[error("PKCS#11 module {path} could not be loaded: {reason}")]
    ModuleLoad {
        /// Path.
        path: String,
        /// Loader or `C_Initialize` error.
        reason: String,
    },
    /// No token matches the selector.
    #[error("PKCS#11 module {path} has no {wanted}; tokens present: {present}")]
    TokenNotFound {
        /// Module path.
        path: String,
        /// What was asked for.
        wanted: String,
        /// The tokens the module offers (`slot N: "label"`).
        present: String,
    },
    /// The PIN was refused or could not be used.
    #[error("login to {token} refused: {reason} (AWS CloudHSM expects the PIN as user:password)")]
    Login {
        /// The token.
        token: String,
        /// PKCS#11 return code.
        reason: String,
    },
    /// The PIN file could not be read.
    #[error("PIN file {path}: {reason}")]
    PinFile {
        /// Path.
        path: String,
        /// Error.
        reason: String,
    },
    /// The module lacks a mechanism the backend needs.
    #[error("PKCS#11 module {path} lacks {mechanism} (needed to {purpose})")]
    MechanismMissing {
        /// Module path.
        path: String,
        /// The mechanism.
        mechanism: String,
        /// What it is needed for.
        purpose: String,
    },
    /// Another PKCS#11 failure while connecting.
    #[error("PKCS#11 module {path}: {reason}")]
    Module {
        /// Module path.
        path: String,
        /// Function and return code.
        reason: String,
    },
    /// A setting is unusable.
    #[error("PKCS#11 settings: {0}")]
    Invalid(String),
}

impl From<Pkcs11Error> for HsmError {
    fn from(e: Pkcs11Error) -> HsmError {
        HsmError::Module(e.to_string())
    }
}

/// What a mechanism can do, as the module reports it (`C_GetMechanismInfo` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MechanismCaps {
    /// `CKF_ENCRYPT`.
    pub encrypt: bool,
    /// `CKF_DECRYPT`.
    pub decrypt: bool,
    /// `CKF_SIGN`.
    pub sign: bool,
    /// `CKF_WRAP`.
    pub wrap: bool,
    /// `CKF_UNWRAP`.
    pub unwrap: bool,
    /// `CKF_GENERATE`.
    pub generate: bool,
    /// `CKF_GENERATE_KEY_PAIR`.
    pub generate_key_pair: bool,
}

/// The protection flags of a key object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyProtection {
    /// `CKA_SENSITIVE`: the value can never be read in plaintext.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key can be wrapped out of the module.
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`: it never was extractable.
    pub never_extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: it always was sensitive.
    pub always_sensitive: bool,
    /// `CKA_TOKEN`: stored on the token (survives sessions).
    pub token: bool,
}

/// How data keys are wrapped on this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapMechanism {
    /// `CKM_AES_KEY_WRAP_PAD` (`aes-kwp`).
    KeyWrapPad,
    /// `CKM_AES_GCM` (`aes-gcm`).
    Gcm,
}

impl WrapMechanism {
    /// The name stored in [`WrappedKey::mechanism`].
    pub fn name(self) -> &'static str {
        match self {
            WrapMechanism::KeyWrapPad => "aes-kwp",
            WrapMechanism::Gcm => "aes-gcm",
        }
    }
}

/// Checks that the module offers everything the backend needs and picks the wrap mechanism.
/// `caps` holds the mechanisms the module lists (by name: `CKM_AES_GCM`, …).
pub fn choose_mechanisms(
    module: &str,
    caps: &BTreeMap<&'static str, MechanismCaps>,
    choice: WrapChoice,
) -> Result<WrapMechanism, Pkcs11Error> {
    let missing = |mechanism: &str, purpose: &str| Pkcs11Error::MechanismMissing {
        path: module.to_owned(),
        mechanism: mechanism.to_owned(),
        purpose: purpose.to_owned(),
    };
    let get = |name: &str| caps.get(name).copied().unwrap_or_default();
    type Check = fn(&MechanismCaps) -> bool;
    let required: [(&str, Check, &str); 6] = [
        ("CKM_AES_KEY_GEN", |c| c.generate, "create AES-256 key-encryption keys"),
        (
            "CKM_AES_GCM",
            |c| c.encrypt && c.decrypt,
            "encrypt with HSM-resident keys",
        ),
        (
            "CKM_GENERIC_SECRET_KEY_GEN",
            |c| c.generate,
            "create HMAC fingerprint keys",
        ),
        ("CKM_SHA256_HMAC", |c| c.sign, "compute card fingerprints"),
        (
            "CKM_EC_KEY_PAIR_GEN",
            |c| c.generate_key_pair,
            "create P-256 signing keys",
        ),
        ("CKM_ECDSA", |c| c.sign, "sign with P-256 keys"),
    ];
    for (name, ok, purpose) in required {
        if !ok(&get(name)) {
            return Err(missing(name, purpose));
        }
    }
    let kwp = get("CKM_AES_KEY_WRAP_PAD");
    let kwp_ok = kwp.wrap && kwp.unwrap;
    match choice {
        WrapChoice::Auto if kwp_ok => Ok(WrapMechanism::KeyWrapPad),
        WrapChoice::Auto | WrapChoice::Gcm => Ok(WrapMechanism::Gcm),
        WrapChoice::KeyWrapPad if kwp_ok => Ok(WrapMechanism::KeyWrapPad),
        WrapChoice::KeyWrapPad => Err(missing("CKM_AES_KEY_WRAP_PAD", "wrap data keys (wrap: aes-kwp)")),
    }
}

/// The metadata label of a key object.
fn encode_label(info: &KeyInfo) -> String {
    let state = match info.state {
        KeyState::Active => "active",
        KeyState::DecryptOnly => "decrypt_only",
        KeyState::Retired => "retired",
        KeyState::Destroyed => "destroyed",
    };
    format!(
        "{LABEL_PREFIX}{}:{}:{state}:{}:{}",
        info.purpose.name(),
        info.version,
        info.created_at.millis(),
        info.label
    )
}

/// Parses a label written by [`encode_label`]; `None` for objects that are not ours.
fn decode_label(label: &str) -> Option<KeyInfo> {
    let rest = label.strip_prefix(LABEL_PREFIX)?;
    let mut parts = rest.splitn(5, ':');
    let purpose = match parts.next()? {
        "kek" => KeyPurpose::Kek,
        "fingerprint" => KeyPurpose::Fingerprint,
        "signing" => KeyPurpose::Signing,
        _ => return None,
    };
    let version: u32 = parts.next()?.parse().ok()?;
    let state = match parts.next()? {
        "active" => KeyState::Active,
        "decrypt_only" => KeyState::DecryptOnly,
        "retired" => KeyState::Retired,
        "destroyed" => KeyState::Destroyed,
        _ => return None,
    };
    let created: i64 = parts.next()?.parse().ok()?;
    let user_label = parts.next().unwrap_or("").to_owned();
    Some(KeyInfo {
        id: KeyId(format!("{}-{version}", purpose.name())),
        purpose,
        version,
        state,
        label: user_label,
        created_at: Timestamp::from_millis(created),
    })
}

/// One key version as found on the token.
#[derive(Debug, Clone)]
struct Entry {
    info: KeyInfo,
    /// The secret or private key object (none once destroyed).
    key: Option<ObjectHandle>,
    /// The public key object of a signing key.
    public: Option<ObjectHandle>,
    /// Every object carrying the metadata (key, public key, tombstone).
    objects: Vec<ObjectHandle>,
}

/// A data key unwrapped inside the module or into the host.
enum Unwrapped {
    /// A session object in the module.
    Object(ObjectHandle),
    /// Bytes in host memory.
    Host(Zeroizing<Vec<u8>>),
}

struct Cache {
    entries: BTreeMap<KeyId, Entry>,
    loaded_at: Option<Timestamp>,
}

/// Session slots; `None` is a slot whose session was lost and not yet reopened.
struct Pool {
    idle: Mutex<Vec<Option<Session>>>,
    available: Condvar,
}

/// A session taken from the pool; returned on drop.
struct Lease<'a> {
    inner: &'a Inner,
    slot: Option<Session>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.inner.give_back(self.slot.take());
    }
}

struct Inner {
    ctx: Pkcs11,
    module: String,
    slot: Slot,
    token: String,
    pin: Pin,
    pool: Pool,
    wrap: WrapMechanism,
    clock: Arc<dyn Clock>,
    cache: Mutex<Cache>,
}

/// The PKCS#11 backend. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Pkcs11Hsm {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pkcs11Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Hsm")
            .field("module", &self.inner.module)
            .field("token", &self.inner.token)
            .field("wrap", &self.inner.wrap)
            .finish_non_exhaustive()
    }
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One context per module path per process: `C_Initialize` may run only once, and
/// `C_Finalize` would pull the rug from every other user of the module.
fn context_for(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static CONTEXTS: OnceLock<Mutex<BTreeMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let display = path.display().to_string();
    if !path.exists() {
        return Err(Pkcs11Error::ModuleNotFound { path: display });
    }
    let mut map = guard(CONTEXTS.get_or_init(|| Mutex::new(BTreeMap::new())));
    if let Some(ctx) = map.get(path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| Pkcs11Error::ModuleLoad {
        path: display.clone(),
        reason: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Pkcs11Error::ModuleLoad {
                path: display,
                reason: describe(&e),
            })
        }
    }
    map.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// A PKCS#11 error as `C_Function: ReturnCode` (without the spec's paragraph).
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, func) => format!("{func}: {rv:?}"),
        other => other.to_string(),
    }
}

fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// True when the session is unusable and should be replaced.
fn session_broken(e: &CkError) -> bool {
    matches!(
        rv(e),
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::DeviceError
        )
    )
}

fn mech_caps(ctx: &Pkcs11, slot: Slot) -> Result<BTreeMap<&'static str, MechanismCaps>, CkError> {
    let names: [(MechanismType, &'static str); 7] = [
        (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
        (MechanismType::AES_GCM, "CKM_AES_GCM"),
        (MechanismType::AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD"),
        (MechanismType::GENERIC_SECRET_KEY_GEN, "CKM_GENERIC_SECRET_KEY_GEN"),
        (MechanismType::SHA256_HMAC, "CKM_SHA256_HMAC"),
        (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
        (MechanismType::ECDSA, "CKM_ECDSA"),
    ];
    let listed = ctx.get_mechanism_list(slot)?;
    let mut caps = BTreeMap::new();
    for (m, name) in names {
        if !listed.contains(&m) {
            continue;
        }
        let info = ctx.get_mechanism_info(slot, m)?;
        caps.insert(
            name,
            MechanismCaps {
                encrypt: info.encrypt(),
                decrypt: info.decrypt(),
                sign: info.sign(),
                wrap: info.wrap(),
                unwrap: info.unwrap(),
                generate: info.generate(),
                generate_key_pair: info.generate_key_pair(),
            },
        );
    }
    Ok(caps)
}

impl Pkcs11Hsm {
    /// Loads the module, finds the token, logs in, opens the session pool and probes the
    /// mechanisms. Blocking: call it before serving, or from a blocking task.
    pub fn connect(config: &Pkcs11Config, clock: Arc<dyn Clock>) -> Result<Pkcs11Hsm, Pkcs11Error> {
        if config.sessions == 0 {
            return Err(Pkcs11Error::Invalid("sessions must be at least 1".into()));
        }
        let module = config.module.display().to_string();
        let ctx = context_for(&config.module)?;
        let module_err = |e: CkError| Pkcs11Error::Module {
            path: module.clone(),
            reason: describe(&e),
        };
        let slots = ctx.get_slots_with_initialized_token().map_err(module_err)?;
        let mut present = vec![];
        let mut found = None;
        for s in slots {
            let info = ctx.get_token_info(s).map_err(module_err)?;
            let label = info.label().trim_end().to_owned();
            let hit = match &config.token {
                TokenSelector::Label(l) => *l == label,
                TokenSelector::Slot(id) => *id == s.id(),
            };
            present.push(format!("slot {}: {label:?}", s.id()));
            if hit && found.is_none() {
                found = Some((s, label));
            }
        }
        let (slot, token_label) = found.ok_or_else(|| Pkcs11Error::TokenNotFound {
            path: module.clone(),
            wanted: config.token.to_string(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        })?;
        let token = format!("token {token_label:?} (slot {}) of {module}", slot.id());
        let caps = mech_caps(&ctx, slot).map_err(module_err)?;
        let wrap = choose_mechanisms(&module, &caps, config.wrap)?;
        let mut sessions = Vec::with_capacity(config.sessions);
        for i in 0..config.sessions {
            let s = ctx.open_rw_session(slot).map_err(|e| Pkcs11Error::Module {
                path: module.clone(),
                reason: format!("opening session {} of {}: {}", i + 1, config.sessions, describe(&e)),
            })?;
            if i == 0 {
                login(&s, &config.pin).map_err(|e| Pkcs11Error::Login {
                    token: token.clone(),
                    reason: describe(&e),
                })?;
            }
            sessions.push(Some(s));
        }
        tracing::info!(
            module = %module,
            token = %token_label,
            slot = slot.id(),
            sessions = config.sessions,
            wrap_mechanism = wrap.name(),
            kwp_available = caps.get("CKM_AES_KEY_WRAP_PAD").is_some_and(|c| c.wrap && c.unwrap),
            "PKCS#11 HSM connected"
        );
        let h = Pkcs11Hsm {
            inner: Arc::new(Inner {
                ctx,
                module,
                slot,
                token,
                pin: config.pin.clone(),
                pool: Pool {
                    idle: Mutex::new(sessions),
                    available: Condvar::new(),
                },
                wrap,
                clock,
                cache: Mutex::new(Cache {
                    entries: BTreeMap::new(),
                    loaded_at: None,
                }),
            }),
        };
        h.inner
            .with_session(|s| h.inner.reload(s))
            .map_err(|e| Pkcs11Error::Module {
                path: h.inner.module.clone(),
                reason: format!("reading key metadata: {e}"),
            })?;
        Ok(h)
    }

    /// The data-key wrap mechanism chosen at connect time.
    pub fn wrap_mechanism(&self) -> WrapMechanism {
        self.inner.wrap
    }

    /// The token in use (label, slot and module), for logs.
    pub fn token_description(&self) -> &str {
        &self.inner.token
    }

    /// How the module protects a key's secret part (`CKA_SENSITIVE`, `CKA_EXTRACTABLE`,
    /// `CKA_NEVER_EXTRACTABLE`, `CKA_ALWAYS_SENSITIVE`, `CKA_TOKEN`), as evidence for key
    /// management audits (PCI DSS 3.6) and for tests.
    pub async fn protection(&self, id: &KeyId) -> Result<KeyProtection, HsmError> {
        let id = id.clone();
        self.run(move |inner, s| {
            let e = inner.entry(s, &id)?;
            let h = e.key.ok_or_else(|| HsmError::WrongState {
                key: id.to_string(),
                state: e.info.state,
                operation: "inspect",
            })?;
            let attrs = s
                .get_attributes(
                    h,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::Token,
                    ],
                )
                .map_err(|e| obj_err("C_GetAttributeValue", e))?;
            let mut p = KeyProtection::default();
            for a in attrs {
                match a {
                    Attribute::Sensitive(v) => p.sensitive = v,
                    Attribute::Extractable(v) => p.extractable = v,
                    Attribute::NeverExtractable(v) => p.never_extractable = v,
                    Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                    Attribute::Token(v) => p.token = v,
                    _ => {}
                }
            }
            Ok(p)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &Session) -> Result<T, HsmError> + Send + 'static,
    ) -> Result<T, HsmError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_session(|s| f(&inner, s)))
            .await
            .map_err(|_| HsmError::Unavailable("the PKCS#11 call was cancelled".into()))?
    }
}

fn login(s: &Session, pin: &Pin) -> Result<(), CkError> {
    match s.login(UserType::User, Some(&pin.auth())) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn obj_err(op: &str, e: CkError) -> HsmError {
    if session_broken(&e) {
        HsmError::Unavailable(format!("{op}: {}", describe(&e)))
    } else {
        HsmError::Module(format!("{op}: {}", describe(&e)))
    }
}

impl Inner {
    /// Runs `f` with a pooled session; a session the module has dropped is replaced (and the
    /// application logged in again) and the call retried once.
    fn with_session<T>(&self, f: impl FnOnce(&Session) -> Result<T, HsmError>) -> Result<T, HsmError> {
        let slot = {
            let mut idle = guard(&self.pool.idle);
            loop {
                if let Some(s) = idle.pop() {
                    break s;
                }
                idle = match self.pool.available.wait(idle) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
        };
        // The slot goes back to the pool however this call ends (error, panic): the pool never
        // shrinks; an empty slot is refilled by the next caller that takes it.
        let mut lease = Lease { inner: self, slot };
        let healthy = match &lease.slot {
            Some(s) => match s.get_session_info() {
                Ok(_) => true,
                Err(e) if session_broken(&e) => {
                    tracing::warn!(token = %self.token, error = %describe(&e), "PKCS#11 session lost; reopening");
                    false
                }
                Err(_) => true,
            },
            None => false,
        };
        if !healthy {
            lease.slot = None;
            lease.slot = Some(self.reopen()?);
        }
        match &lease.slot {
            Some(s) => f(s),
            None => Err(HsmError::Unavailable("no PKCS#11 session".into())),
        }
    }

    fn reopen(&self) -> Result<Session, HsmError> {
        let s = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| HsmError::Unavailable(format!("reopening a session on {}: {}", self.token, describe(&e))))?;
        login(&s, &self.pin)
            .map_err(|e| HsmError::Unavailable(format!("logging in again to {}: {}", self.token, describe(&e))))?;
        Ok(s)
    }

    fn give_back(&self, s: Option<Session>) {
        guard(&self.pool.idle).push(s);
        self.pool.available.notify_one();
    }

    /// Reads every object of ours from the token into the cache.
    fn reload(&self, s: &Session) -> Result<(), HsmError> {
        let mut entries: BTreeMap<KeyId, Entry> = BTreeMap::new();
        for class in [
            ObjectClass::SECRET_KEY,
            ObjectClass::PRIVATE_KEY,
            ObjectClass::PUBLIC_KEY,
            ObjectClass::DATA,
        ] {
            let found = s
                .find_objects(&[Attribute::Token(true), Attribute::Class(class)])
                .map_err(|e| obj_err("C_FindObjects", e))?;
            for h in found {
                let attrs = s
                    .get_attributes(h, &[AttributeType::Label])
                    .map_err(|e| obj_err("C_GetAttributeValue", e))?;
                let Some(info) = attrs.iter().find_map(|a| match a {
                    Attribute::Label(l) => std::str::from_utf8(l).ok().and_then(decode_label),
                    _ => None,
                }) else {
                    continue;
                };
                let e = entries.entry(info.id.clone()).or_insert_with(|| Entry {
                    info: info.clone(),
                    key: None,
                    public: None,
                    objects: vec![],
                });
                // A tombstone wins: the key is destroyed even if a stale object remains.
                if class == ObjectClass::DATA || e.info.state != KeyState::Destroyed {
                    e.info = info;
                }
                e.objects.push(h);
                if class == ObjectClass::PUBLIC_KEY {
                    e.public = Some(h);
                } else if class != ObjectClass::DATA {
                    e.key = Some(h);
                }
            }
        }
        for e in entries.values_mut() {
            if e.info.state == KeyState::Destroyed {
                e.key = None;
                e.public = None;
            }
        }
        let mut c = guard(&self.cache);
        c.entries = entries;
        c.loaded_at = Some(self.clock.now());
        Ok(())
    }

    fn reload_if_stale(&self, s: &Session) -> Result<(), HsmError> {
        let stale = {
            let c = guard(&self.cache);
            c.loaded_at
                .is_none_or(|at| self.clock.now().since(at) >= METADATA_TTL || self.clock.now() < at)
        };
        if stale {
            self.reload(s)?;
        }
        Ok(())
    }

    fn entry(&self, s: &Session, id: &KeyId) -> Result<Entry, HsmError> {
        self.reload_if_stale(s)?;
        if let Some(e) = guard(&self.cache).entries.get(id) {
            return Ok(e.clone());
        }
        // Perhaps created by another process since the last read.
        self.reload(s)?;
        guard(&self.cache)
            .entries
            .get(id)
            .cloned()
            .ok_or_else(|| HsmError::KeyNotFound(id.to_string()))
    }

    /// The key object of `id`, checked for purpose and state like the software HSM does.
    fn usable(
        &self,
        s: &Session,
        id: &KeyId,
        purpose: KeyPurpose,
        op: &'static str,
        need_active: bool,
    ) -> Result<Entry, HsmError> {
        let e = self.entry(s, id)?;
        if e.info.purpose != purpose {
            return Err(HsmError::WrongPurpose {
                key: id.to_string(),
                actual: e.info.purpose,
                expected: purpose,
            });
        }
        let allowed = if need_active {
            e.info.state == KeyState::Active
        } else {
            e.info.state.can_read()
        };
        if !allowed || e.key.is_none() {
            return Err(HsmError::WrongState {
                key: id.to_string(),
                state: e.info.state,
                operation: op,
            });
        }
        Ok(e)
    }

    fn random(&self, s: &Session, n: usize) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let mut buf = Zeroizing::new(vec![0u8; n]);
        s.generate_random_slice(&mut buf)
            .map_err(|e| obj_err("C_GenerateRandom", e))?;
        Ok(buf)
    }

    /// AES-GCM under an HSM key. The IV is drawn from the module's generator and passed in;
    /// modules that generate their own IV (AWS CloudHSM) write it back into the parameter,
    /// and the IV returned is the one actually used.
    fn gcm_encrypt(&self, s: &Session, key: ObjectHandle, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, HsmError> {
        let mut iv = self.random(s, 12)?.to_vec();
        let params = GcmParams::new(&mut iv, aad, 128u64.into())
            .map_err(|_| HsmError::InvalidInput("associated data too long".into()))?;
        let ciphertext = s
            .encrypt(&Mechanism::AesGcm(params), key, plaintext)
            .map_err(|e| obj_err("C_Encrypt (AES-GCM)", e))?;
        Ok(Sealed { iv, ciphertext })
    }

    fn gcm_decrypt(
        &self,
        s: &Session,
        key: ObjectHandle,
        iv: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if iv.len() != 12 {
            return Err(HsmError::InvalidInput("IV must be 12 bytes".into()));
        }
        if ciphertext.len() < 16 {
            return Err(HsmError::Integrity);
        }
        let mut iv = iv.to_vec();
        let params = GcmParams::new(&mut iv, aad, 128u64.into())
            .map_err(|_| HsmError::InvalidInput("associated data too long".into()))?;
        match s.decrypt(&Mechanism::AesGcm(params), key, ciphertext) {
            Ok(p) => Ok(Zeroizing::new(p)),
            Err(e) if session_broken(&e) => Err(obj_err("C_Decrypt (AES-GCM)", e)),
            Err(e) => {
                tracing::debug!(error = %describe(&e), "AES-GCM decryption refused");
                Err(HsmError::Integrity)
            }
        }
    }

    /// A session-only AES key object template (never stored on the token).
    fn session_key_template(value: Option<&[u8]>, readable: bool) -> Vec<Attribute> {
        let mut t = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(!readable),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ];
        match value {
            Some(v) => t.push(Attribute::Value(v.to_vec())),
            None => t.push(Attribute::ValueLen(32u64.into())),
        }
        t
    }

    fn read_value(s: &Session, h: ObjectHandle) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let attrs = s
            .get_attributes(h, &[AttributeType::Value])
            .map_err(|e| obj_err("C_GetAttributeValue (data key)", e))?;
        attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(Zeroizing::new(v)),
                _ => None,
            })
            .ok_or_else(|| HsmError::Module("the module does not reveal the value of non-sensitive session keys; set hsm.wrap_mechanism: aes-gcm".into()))
    }

    /// Unwraps a data key into a session object (readable by the host when `readable`), or
    /// straight into host memory for AES-GCM-wrapped keys read by the host.
    fn unwrap_to_object(&self, s: &Session, wrapped: &WrappedKey, readable: bool) -> Result<Unwrapped, HsmError> {
        let kek = self.usable(s, &wrapped.kek, KeyPurpose::Kek, "unwrap", false)?;
        let kek_h = kek.key.ok_or(HsmError::KeyNotFound(wrapped.kek.to_string()))?;
        match wrapped.mechanism.as_str() {
            "aes-kwp" => {
                let h = match s.unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    kek_h,
                    &wrapped.bytes,
                    &Self::session_key_template(None, readable)
                        .into_iter()
                        .filter(|a| a.attribute_type() != AttributeType::ValueLen)
                        .collect::<Vec<_>>(),
                ) {
                    Ok(h) => h,
                    Err(e) if session_broken(&e) => return Err(obj_err("C_UnwrapKey", e)),
                    Err(e) => {
                        tracing::debug!(error = %describe(&e), "data key unwrap refused");
                        return Err(HsmError::Integrity);
                    }
                };
                Ok(Unwrapped::Object(h))
            }
            "aes-gcm" => {
                let raw = self.gcm_open_wrapped(s, kek_h, wrapped)?;
                if readable {
                    // Already in the host; no object needed.
                    Ok(Unwrapped::Host(raw))
                } else {
                    let h = s
                        .create_object(&Self::session_key_template(Some(&raw), false))
                        .map_err(|e| obj_err("C_CreateObject (data key)", e))?;
                    Ok(Unwrapped::Object(h))
                }
            }
            other => Err(HsmError::MechanismUnsupported(other.to_owned())),
        }
    }

    /// Unwraps a data key into host memory.
    fn unwrap_to_host(&self, s: &Session, wrapped: &WrappedKey) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        match self.unwrap_to_object(s, wrapped, true)? {
            Unwrapped::Host(raw) => Ok(raw),
            Unwrapped::Object(h) => {
                let v = Self::read_value(s, h);
                let _ = s.destroy_object(h);
                v
            }
        }
    }

    fn gcm_open_wrapped(
        &self,
        s: &Session,
        kek: ObjectHandle,
        wrapped: &WrappedKey,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if wrapped.bytes.len() < 12 + 16 {
            return Err(HsmError::Integrity);
        }
        let aad = format!("{GCM_WRAP_AAD}{}", wrapped.kek);
        self.gcm_decrypt(s, kek, &wrapped.bytes[..12], &wrapped.bytes[12..], aad.as_bytes())
    }

    fn gcm_wrap(&self, s: &Session, kek_id: &KeyId, kek: ObjectHandle, raw: &[u8]) -> Result<WrappedKey, HsmError> {
        let aad = format!("{GCM_WRAP_AAD}{kek_id}");
        let sealed = self.gcm_encrypt(s, kek, raw, aad.as_bytes())?;
        let mut bytes = sealed.iv;
        bytes.extend_from_slice(&sealed.ciphertext);
        Ok(WrappedKey {
            kek: kek_id.clone(),
            mechanism: WrapMechanism::Gcm.name().into(),
            bytes,
        })
    }

    fn set_label(&self, s: &Session, entry: &Entry, info: &KeyInfo) -> Result<(), HsmError> {
        let label = encode_label(info).into_bytes();
        for h in &entry.objects {
            s.update_attributes(*h, &[Attribute::Label(label.clone())])
                .map_err(|e| obj_err("C_SetAttributeValue (CKA_LABEL)", e))?;
        }
        Ok(())
    }

    /// Makes the module itself refuse what the new state forbids, where it allows the flags
    /// to change (software checks apply either way).
    fn restrict(&self, s: &Session, entry: &Entry, state: KeyState) {
        let Some(key) = entry.key else { return };
        let mut attrs = match entry.info.purpose {
            KeyPurpose::Kek => vec![Attribute::Encrypt(false), Attribute::Wrap(false)],
            KeyPurpose::Fingerprint | KeyPurpose::Signing => vec![],
        };
        if entry.info.purpose == KeyPurpose::Signing {
            attrs.push(Attribute::Sign(false));
        }
        if state == KeyState::Retired {
            match entry.info.purpose {
                KeyPurpose::Kek => {
                    attrs.push(Attribute::Decrypt(false));
                    attrs.push(Attribute::Unwrap(false));
                }
                KeyPurpose::Fingerprint => attrs.push(Attribute::Sign(false)),
                KeyPurpose::Signing => {}
            }
        }
        for a in attrs {
            let name = format!("{:?}", a.attribute_type());
            if let Err(e) = s.update_attributes(key, &[a]) {
                tracing::info!(key = %entry.info.id, attribute = %name, error = %describe(&e),
                    "the module keeps this key flag; the state is enforced in software");
            }
        }
    }
}

fn ec_point_to_sec1(point: &[u8]) -> Result<Vec<u8>, HsmError> {
    // CKA_EC_POINT is a DER OCTET STRING holding the point; some modules return the raw point.
    match point {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => Ok(rest.to_vec()),
        [0x04, ..] if point.len() == 65 => Ok(point.to_vec()),
        _ => Err(HsmError::Module("unexpected CKA_EC_POINT encoding".into())),
    }
}

#[async_trait]
impl Hsm for Pkcs11Hsm {
    async fn generate_key(&self, purpose: KeyPurpose, label: &str) -> Result<KeyInfo, HsmError> {
        let user_label: String = label.chars().filter(|c| !c.is_control()).take(MAX_LABEL).collect();
        self.run(move |inner, s| {
            inner.reload(s)?;
            let version = guard(&inner.cache)
                .entries
                .values()
                .filter(|e| e.info.purpose == purpose)
                .map(|e| e.info.version)
                .max()
                .unwrap_or(0)
                + 1;
            let id = KeyId(format!("{}-{version}", purpose.name()));
            let info = KeyInfo {
                id: id.clone(),
                purpose,
                version,
                state: KeyState::Active,
                label: user_label,
                created_at: inner.clock.now(),
            };
            let label = Attribute::Label(encode_label(&info).into_bytes());
            let ck_id = Attribute::Id(id.0.clone().into_bytes());
            let common = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Modifiable(true),
                Attribute::Derive(false),
                label.clone(),
                ck_id.clone(),
            ];
            match purpose {
                KeyPurpose::Kek => {
                    let mut t = vec![
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32u64.into()),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Wrap(true),
                        Attribute::Unwrap(true),
                    ];
                    t.extend(common.iter().cloned());
                    s.generate_key(&Mechanism::AesKeyGen, &t)
                        .map_err(|e| obj_err("C_GenerateKey (AES-256 KEK)", e))?;
                }
                KeyPurpose::Fingerprint => {
                    let mut t = vec![
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::ValueLen(32u64.into()),
                        Attribute::Sign(true),
                        Attribute::Verify(true),
                    ];
                    t.extend(common.iter().cloned());
                    s.generate_key(&Mechanism::GenericSecretKeyGen, &t)
                        .map_err(|e| obj_err("C_GenerateKey (HMAC key)", e))?;
                }
                KeyPurpose::Signing => {
                    let public = [
                        Attribute::Token(true),
                        Attribute::Private(false),
                        Attribute::Verify(true),
                        Attribute::Modifiable(true),
                        Attribute::EcParams(P256_OID_DER.to_vec()),
                        label,
                        ck_id,
                    ];
                    let mut private = vec![Attribute::Sign(true)];
                    private.extend(common.iter().cloned());
                    s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                        .map_err(|e| obj_err("C_GenerateKeyPair (P-256)", e))?;
                }
            }
            inner.reload(s)?;
            tracing::info!(key = %id, purpose = purpose.name(), "HSM key created");
            Ok(info)
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>, HsmError> {
        self.run(|inner, s| {
            inner.reload(s)?;
            Ok(guard(&inner.cache).entries.values().map(|e| e.info.clone()).collect())
        })
        .await
    }

    async fn current_key(&self, purpose: KeyPurpose) -> Result<KeyInfo, HsmError> {
        self.run(move |inner, s| {
            inner.reload_if_stale(s)?;
            guard(&inner.cache)
                .entries
                .values()
                .filter(|e| e.info.purpose == purpose && e.info.state == KeyState::Active)
                .max_by_key(|e| e.info.version)
                .map(|e| e.info.clone())
                .ok_or(HsmError::NoActiveKey(purpose.name()))
        })
        .await
    }

    async fn set_key_state(&self, id: &KeyId, state: KeyState) -> Result<KeyInfo, HsmError> {
        let id = id.clone();
        self.run(move |inner, s| {
            inner.reload(s)?;
            let entry = guard(&inner.cache)
                .entries
                .get(&id)
                .cloned()
                .ok_or_else(|| HsmError::KeyNotFound(id.to_string()))?;
            if !entry.info.state.can_become(state) {
                return Err(HsmError::IllegalTransition {
                    key: id.to_string(),
                    from: entry.info.state,
                    to: state,
                });
            }
            let mut info = entry.info.clone();
            info.state = state;
            if state == KeyState::Destroyed {
                // Tombstone first: if destruction stops half-way the key reads as destroyed.
                s.create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::Modifiable(true),
                    Attribute::Application(TOMBSTONE_APP.to_vec()),
                    Attribute::Label(encode_label(&info).into_bytes()),
                    Attribute::Value(id.0.clone().into_bytes()),
                ])
                .map_err(|e| obj_err("C_CreateObject (tombstone)", e))?;
                for h in &entry.objects {
                    s.destroy_object(*h).map_err(|e| obj_err("C_DestroyObject", e))?;
                }
            } else {
                inner.set_label(s, &entry, &info)?;
                inner.restrict(s, &entry, state);
            }
            inner.reload(s)?;
            tracing::info!(key = %id, state = ?state, "HSM key state changed");
            Ok(info)
        })
        .await
    }

    async fn generate_data_key(&self, kek: &KeyId) -> Result<(DataKey, WrappedKey), HsmError> {
        let kek = kek.clone();
        self.run(move |inner, s| {
            let e = inner.usable(s, &kek, KeyPurpose::Kek, "wrap", true)?;
            let kek_h = e.key.ok_or(HsmError::KeyNotFound(kek.to_string()))?;
            let (raw, wrapped) = match inner.wrap {
                WrapMechanism::Gcm => {
                    let raw = inner.random(s, 32)?;
                    let w = inner.gcm_wrap(s, &kek, kek_h, &raw)?;
                    (raw, w)
                }
                WrapMechanism::KeyWrapPad => {
                    // Generated inside the module (no plaintext key import, which FIPS-mode
                    // modules refuse), wrapped, then read out for the host's AES-GCM.
                    let obj = s
                        .generate_key(&Mechanism::AesKeyGen, &Inner::session_key_template(None, true))
                        .map_err(|e| obj_err("C_GenerateKey (data key)", e))?;
                    let res = s.wrap_key(&Mechanism::AesKeyWrapPad, kek_h, obj);
                    let value = Inner::read_value(s, obj);
                    let _ = s.destroy_object(obj);
                    let w = WrappedKey {
                        kek: kek.clone(),
                        mechanism: WrapMechanism::KeyWrapPad.name().into(),
                        bytes: res.map_err(|e| obj_err("C_WrapKey (AES-KWP)", e))?,
                    };
                    (value?, w)
                }
            };
            let arr: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| HsmError::Module("the data key is not 32 bytes".into()))?;
            Ok((DataKey::from_bytes(arr), wrapped))
        })
        .await
    }

    async fn unwrap_data_key(&self, wrapped: &WrappedKey) -> Result<DataKey, HsmError> {
        let wrapped = wrapped.clone();
        self.run(move |inner, s| {
            let raw = inner.unwrap_to_host(s, &wrapped)?;
            let arr: [u8; 32] = raw.as_slice().try_into().map_err(|_| HsmError::Integrity)?;
            Ok(DataKey::from_bytes(arr))
        })
        .await
    }

    async fn rewrap(&self, wrapped: &WrappedKey, new_kek: &KeyId) -> Result<WrappedKey, HsmError> {
        let wrapped = wrapped.clone();
        let new_kek = new_kek.clone();
        self.run(move |inner, s| {
            let new = inner.usable(s, &new_kek, KeyPurpose::Kek, "wrap", true)?;
            let new_h = new.key.ok_or(HsmError::KeyNotFound(new_kek.to_string()))?;
            match inner.wrap {
                WrapMechanism::KeyWrapPad => {
                    // The data key exists only as a sensitive session object inside the module.
                    let obj = match inner.unwrap_to_object(s, &wrapped, false)? {
                        Unwrapped::Object(h) => h,
                        Unwrapped::Host(_) => {
                            return Err(HsmError::Module("unexpected host copy of a data key".into()))
                        }
                    };
                    let res = s.wrap_key(&Mechanism::AesKeyWrapPad, new_h, obj);
                    let _ = s.destroy_object(obj);
                    Ok(WrappedKey {
                        kek: new_kek.clone(),
                        mechanism: WrapMechanism::KeyWrapPad.name().into(),
                        bytes: res.map_err(|e| obj_err("C_WrapKey (AES-KWP)", e))?,
                    })
                }
                WrapMechanism::Gcm => {
                    let raw = match wrapped.mechanism.as_str() {
                        "aes-gcm" => {
                            let old = inner.usable(s, &wrapped.kek, KeyPurpose::Kek, "unwrap", false)?;
                            let old_h = old.key.ok_or(HsmError::KeyNotFound(wrapped.kek.to_string()))?;
                            inner.gcm_open_wrapped(s, old_h, &wrapped)?
                        }
                        _ => inner.unwrap_to_host(s, &wrapped)?,
                    };
                    inner.gcm_wrap(s, &new_kek, new_h, &raw)
                }
            }
        })
        .await
    }

    async fn encrypt(&self, key: &KeyId, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, HsmError> {
        if aad.is_empty() {
            return Err(HsmError::InvalidInput("associated data must not be empty".into()));
        }
        let key = key.clone();
        let plaintext = Zeroizing::new(plaintext.to_vec());
        let aad = aad.to_vec();
        self.run(move |inner, s| {
            let e = inner.usable(s, &key, KeyPurpose::Kek, "encrypt", true)?;
            let h = e.key.ok_or(HsmError::KeyNotFound(key.to_string()))?;
            inner.gcm_encrypt(s, h, &plaintext, &aad)
        })
        .await
    }

    async fn decrypt(&self, key: &KeyId, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if aad.is_empty() {
            return Err(HsmError::InvalidInput("associated data must not be empty".into()));
        }
        if sealed.iv.len() != 12 {
            return Err(HsmError::InvalidInput("IV must be 12 bytes".into()));
        }
        let key = key.clone();
        let sealed = sealed.clone();
        let aad = aad.to_vec();
        self.run(move |inner, s| {
            let e = inner.usable(s, &key, KeyPurpose::Kek, "decrypt", false)?;
            let h = e.key.ok_or(HsmError::KeyNotFound(key.to_string()))?;
            inner.gcm_decrypt(s, h, &sealed.iv, &sealed.ciphertext, &aad)
        })
        .await
    }

    async fn hmac_sha256(&self, key: &KeyId, data: &[u8]) -> Result<[u8; 32], HsmError> {
        let key = key.clone();
        let data = Zeroizing::new(data.to_vec());
        self.run(move |inner, s| {
            let e = inner.usable(s, &key, KeyPurpose::Fingerprint, "hmac", false)?;
            let h = e.key.ok_or(HsmError::KeyNotFound(key.to_string()))?;
            let mac = s
                .sign(&Mechanism::Sha256Hmac, h, &data)
                .map_err(|e| obj_err("C_Sign (HMAC-SHA256)", e))?;
            mac.as_slice()
                .try_into()
                .map_err(|_| HsmError::Module("HMAC-SHA256 output is not 32 bytes".into()))
        })
        .await
    }

    async fn sign(&self, key: &KeyId, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = key.clone();
        let digest = Sha256::digest(message).to_vec();
        self.run(move |inner, s| {
            let e = inner.usable(s, &key, KeyPurpose::Signing, "sign", true)?;
            let h = e.key.ok_or(HsmError::KeyNotFound(key.to_string()))?;
            let sig = s
                .sign(&Mechanism::Ecdsa, h, &digest)
                .map_err(|e| obj_err("C_Sign (ECDSA P-256)", e))?;
            if sig.len() != 64 {
                return Err(HsmError::Module(format!("ECDSA signature of {} bytes", sig.len())));
            }
            Ok(sig)
        })
        .await
    }

    async fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, HsmError> {
        let key = key.clone();
        self.run(move |inner, s| {
            let e = inner.usable(s, &key, KeyPurpose::Signing, "read the public key of", false)?;
            let h = e
                .public
                .ok_or_else(|| HsmError::KeyNotFound(format!("{key} (public key)")))?;
            let attrs = s
                .get_attributes(h, &[AttributeType::EcPoint])
                .map_err(|e| obj_err("C_GetAttributeValue (CKA_EC_POINT)", e))?;
            let point = attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .ok_or_else(|| HsmError::Module("the public key has no CKA_EC_POINT".into()))?;
            ec_point_to_sec1(&point)
        })
        .await
    }
}

/// Throwaway SoftHSMv2 tokens for tests and local trials: a private `SOFTHSM2_CONF` and token
/// directory, tokens created with `softhsm2-util --init-token --free`.
pub mod softhsm2 {
    use super::*;

    /// Where Debian/Ubuntu install the SoftHSMv2 module.
    pub const DEFAULT_MODULES: &[&str] = &[
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ];

    /// The SoftHSMv2 module: `$SOFTHSM2_MODULE`, else the first default path that exists.
    pub fn find_module() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("SOFTHSM2_MODULE") {
            return Some(PathBuf::from(p));
        }
        DEFAULT_MODULES.iter().map(PathBuf::from).find(|p| p.exists())
    }

    /// Writes `dir/softhsm2.conf` pointing at `dir/tokens` and returns the config path. The
    /// process must have `SOFTHSM2_CONF` set to it before the module is first loaded.
    pub fn write_config(dir: &Path) -> Result<PathBuf, String> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| format!("cannot create {}: {e}", tokens.display()))?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        Ok(conf)
    }

    /// Creates a token with `label` and user `pin` in the next free slot.
    pub fn init_token(conf: &Path, label: &str, so_pin: &str, pin: &str) -> Result<(), String> {
        let out = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                so_pin,
                "--pin",
                pin,
            ])
            .output()
            .map_err(|e| format!("cannot run softhsm2-util (apt-get install softhsm2): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "softhsm2-util --init-token failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[(&'static str, MechanismCaps)]) -> BTreeMap<&'static str, MechanismCaps> {
        list.iter().copied().collect()
    }

    fn full() -> Vec<(&'static str, MechanismCaps)> {
        let all = MechanismCaps {
            encrypt: true,
            decrypt: true,
            sign: true,
            wrap: true,
            unwrap: true,
            generate: true,
            generate_key_pair: true,
        };
        [
            "CKM_AES_KEY_GEN",
            "CKM_AES_GCM",
            "CKM_AES_KEY_WRAP_PAD",
            "CKM_GENERIC_SECRET_KEY_GEN",
            "CKM_SHA256_HMAC",
            "CKM_EC_KEY_PAIR_GEN",
            "CKM_ECDSA",
        ]
        .into_iter()
        .map(|n| (n, all))
        .collect()
    }

    #[test]
    fn probing_prefers_kwp_and_falls_back_to_gcm() {
        let all = caps(&full());
        assert_eq!(
            choose_mechanisms("m", &all, WrapChoice::Auto),
            Ok(WrapMechanism::KeyWrapPad)
        );
        assert_eq!(choose_mechanisms("m", &all, WrapChoice::Gcm), Ok(WrapMechanism::Gcm));
        let mut no_kwp = all.clone();
        no_kwp.remove("CKM_AES_KEY_WRAP_PAD");
        assert_eq!(
            choose_mechanisms("m", &no_kwp, WrapChoice::Auto),
            Ok(WrapMechanism::Gcm)
        );
        let e = choose_mechanisms("m", &no_kwp, WrapChoice::KeyWrapPad).unwrap_err();
        assert!(e.to_string().contains("CKM_AES_KEY_WRAP_PAD"), "{e}");
        // KWP that only encrypts (no wrap/unwrap) does not count.
        let mut enc_only = all.clone();
        enc_only.insert(
            "CKM_AES_KEY_WRAP_PAD",
            MechanismCaps {
                encrypt: true,
                ..MechanismCaps::default()
            },
        );
        assert_eq!(
            choose_mechanisms("m", &enc_only, WrapChoice::Auto),
            Ok(WrapMechanism::Gcm)
        );
    }

    #[test]
    fn a_missing_required_mechanism_is_named() {
        for name in ["CKM_AES_GCM", "CKM_SHA256_HMAC", "CKM_ECDSA", "CKM_EC_KEY_PAIR_GEN"] {
            let mut c = caps(&full());
            c.remove(name);
            let e = choose_mechanisms("/x/lib.so", &c, WrapChoice::Auto).unwrap_err();
            assert!(matches!(e, Pkcs11Error::MechanismMissing { .. }));
            assert!(
                e.to_string().contains(name) && e.to_string().contains("/x/lib.so"),
                "{e}"
            );
        }
    }

    #[test]
    fn labels_round_trip_and_foreign_labels_are_ignored() {
        let info = KeyInfo {
            id: KeyId("kek-12".into()),
            purpose: KeyPurpose::Kek,
            version: 12,
            state: KeyState::DecryptOnly,
            label: "card vault: primary".into(),
            created_at: Timestamp::from_millis(1_767_225_600_123),
        };
        let l = encode_label(&info);
        assert!(l.len() < 127);
        assert_eq!(decode_label(&l), Some(info));
        assert_eq!(decode_label("my-other-app-key"), None);
        assert_eq!(decode_label("pay:kek:x:active:0:"), None);
        assert_eq!(decode_label("pay:teapot:1:active:0:"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_metadata_survives_the_label(
            purpose in 0usize..3,
            version in 1u32..100_000,
            state in 0usize..4,
            created in 0i64..4_102_444_800_000,
            label in "[^\\p{Cc}]{0,64}",
        ) {
            let purpose = [KeyPurpose::Kek, KeyPurpose::Fingerprint, KeyPurpose::Signing][purpose];
            let info = KeyInfo {
                id: KeyId(format!("{}-{version}", purpose.name())),
                purpose,
                version,
                state: [KeyState::Active, KeyState::DecryptOnly, KeyState::Retired, KeyState::Destroyed][state],
                label,
                created_at: Timestamp::from_millis(created),
            };
            proptest::prop_assert_eq!(decode_label(&encode_label(&info)), Some(info));
        }

        #[test]
        fn arbitrary_labels_never_panic(text in ".{0,80}") {
            let _ = decode_label(&text);
        }
    }

    #[test]
    fn ec_points_in_both_encodings() {
        let mut raw = vec![0x04];
        raw.extend([7u8; 64]);
        let mut der = vec![0x04, 0x41];
        der.extend(&raw);
        assert_eq!(ec_point_to_sec1(&raw).unwrap(), raw);
        assert_eq!(ec_point_to_sec1(&der).unwrap(), raw);
        assert!(ec_point_to_sec1(&[0x04, 0x01, 0x02]).is_err());
    }

    #[test]
    fn pins_are_never_printed() {
        let p = Pin::new("crypto_user:hunter2\n");
        assert_eq!(format!("{p:?}"), "Pin([REDACTED])");
        assert_eq!(p.0.as_str(), "crypto_user:hunter2");
    }
}
