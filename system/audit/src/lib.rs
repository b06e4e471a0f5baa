//! A tamper-evident audit log of security events (PCI DSS 10.2, 10.3).
//!
//! The log is a file of JSON lines, appended only. Every line carries a sequence number, the
//! SHA-256 hash of the line before it (`prev`) and its own hash over its content and `prev`, so
//! editing, deleting, inserting or reordering any line breaks the chain at that line. Every
//! `checkpoint_every` events a checkpoint line is appended whose signature (ECDSA P-256, made
//! by the HSM's current signing key, which never leaves the HSM) covers the chain head: a
//! rewrite of the whole chain after the last checkpoint would need that key.
//!
//! An event records who (`actor`: a service, a key id prefix, `custodian`, `operator`), what
//! (`event`: `key.rotate`, `detokenize`, `api.auth`…), the outcome, where from (`origin`), the
//! object concerned (an id, never card data or key material) and the time from the injected
//! clock. Field values are cut to 200 characters and stripped of control characters.
//!
//! [`verify`] walks a log and reports the first broken line. Limits: deleting lines from the
//! end of the log cannot be seen from the file alone; ship checkpoints elsewhere (a log
//! service, WORM storage) to anchor the tail.

#![warn(missing_docs)]

use pay_core::Env;
use pay_hsm::{Hsm, KeyId, KeyPurpose};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const MAX_FIELD: usize = 200;
const CHECKPOINT_CONTEXT: &str = "pay-audit checkpoint v1";

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Success,
    /// Failed or refused.
    Failure,
}

/// What a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A security event.
    Event,
    /// A signed checkpoint over the chain so far.
    Checkpoint,
}

/// The hashed content of a line (field order is the serialization order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    seq: u64,
    time_ms: i64,
    kind: Kind,
    actor: String,
    event: String,
    outcome: Outcome,
    origin: String,
    object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<Signature>,
    prev: String,
}

/// A checkpoint's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The HSM signing key.
    pub key: String,
    /// Its SEC1 public key, hex.
    pub public_key: String,
    /// ECDSA P-256 `r || s` over the checkpoint message, hex.
    pub sig: String,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Position, from 1, without gaps.
    pub seq: u64,
    /// Unix milliseconds from the service clock.
    pub time_ms: i64,
    /// Event or checkpoint.
    pub kind: Kind,
    /// Who acted.
    pub actor: String,
    /// What happened.
    pub event: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Where from.
    pub origin: String,
    /// What it concerned.
    pub object: String,
    /// Checkpoints only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// The previous line's hash.
    pub prev: String,
    /// SHA-256 over this line's other fields.
    pub hash: String,
}

impl Line {
    fn body(&self) -> Body {
        Body {
            seq: self.seq,
            time_ms: self.time_ms,
            kind: self.kind,
            actor: self.actor.clone(),
            event: self.event.clone(),
            outcome: self.outcome,
            origin: self.origin.clone(),
            object: self.object.clone(),
            signature: self.signature.clone(),
            prev: self.prev.clone(),
        }
    }
}

fn hash_body(b: &Body) -> String {
    // serde_json writes struct fields in declaration order: a stable encoding.
    let bytes = serde_json::to_vec(b).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

fn checkpoint_message(seq: u64, head: &str) -> Vec<u8> {
    format!("{CHECKPOINT_CONTEXT}:{seq}:{head}").into_bytes()
}

fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(MAX_FIELD).collect()
}

/// Audit log failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be read or written.
    #[error("audit log {path}: {reason}")]
    Io {
        /// Path.
        path: String,
        /// Error.
        reason: String,
    },
    /// The existing log is damaged where appending would continue it.
    #[error("audit log {path}: the last line is not a valid entry ({reason}); run `paymentd audit verify`")]
    Corrupt {
        /// Path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The HSM could not sign a checkpoint.
    #[error("audit checkpoint signature: {0}")]
    Hsm(#[from] pay_hsm::HsmError),
}

struct Tail {
    seq: u64,
    head: String,
    since_checkpoint: u64,
    file: std::fs::File,
}

/// An append-only audit log file.
pub struct AuditLog {
    path: PathBuf,
    env: Env,
    signer: Option<Arc<dyn Hsm>>,
    checkpoint_every: u64,
    tail: tokio::sync::Mutex<Tail>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, continuing its chain. With `signer`, a checkpoint
    /// signed by the HSM's current signing key follows every `checkpoint_every` events.
    pub fn open(
        path: &Path,
        env: Env,
        signer: Option<Arc<dyn Hsm>>,
        checkpoint_every: u64,
    ) -> Result<AuditLog, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let (mut seq, mut head, mut since) = (0u64, GENESIS.to_owned(), 0u64);
        match std::fs::File::open(path) {
            Ok(f) => {
                let mut last = None;
                for line in std::io::BufReader::new(f).lines() {
                    let line = line.map_err(io)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let parsed: Line = serde_json::from_str(&line).map_err(|e| AuditError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    since = if parsed.kind == Kind::Checkpoint { 0 } else { since + 1 };
                    last = Some(parsed);
                }
                if let Some(l) = last {
                    seq = l.seq;
                    head = l.hash;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o640);
        }
        let file = opts.open(path).map_err(io)?;
        Ok(AuditLog {
            path: path.to_owned(),
            env,
            signer,
            checkpoint_every: checkpoint_every.max(1),
            tail: tokio::sync::Mutex::new(Tail {
                seq,
                head,
                since_checkpoint: since,
                file,
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an event. Failures to write are logged, not returned: the audited action has
    /// already happened (use [`AuditLog::try_record`] to act on them).
    pub async fn record(&self, actor: &str, event: &str, outcome: Outcome, origin: &str, object: &str) {
        if let Err(e) = self.try_record(actor, event, outcome, origin, object).await {
            tracing::error!(error = %e, event, "could not write the audit log");
        }
    }

    /// Appends an event, and a signed checkpoint when one is due.
    pub async fn try_record(
        &self,
        actor: &str,
        event: &str,
        outcome: Outcome,
        origin: &str,
        object: &str,
    ) -> Result<(), AuditError> {
        let mut t = self.tail.lock().await;
        let body = Body {
            seq: t.seq + 1,
            time_ms: self.env.now().millis(),
            kind: Kind::Event,
            actor: clean(actor),
            event: clean(event),
            outcome,
            origin: clean(origin),
            object: clean(object),
            signature: None,
            prev: t.head.clone(),
        };
        self.append(&mut t, body)?;
        t.since_checkpoint += 1;
        if t.since_checkpoint >= self.checkpoint_every {
            self.checkpoint_locked(&mut t).await?;
        }
        Ok(())
    }

    /// Appends a signed checkpoint now (at shutdown, or on demand).
    pub async fn checkpoint(&self) -> Result<(), AuditError> {
        let mut t = self.tail.lock().await;
        self.checkpoint_locked(&mut t).await
    }

    async fn checkpoint_locked(&self, t: &mut Tail) -> Result<(), AuditError> {
        let Some(hsm) = &self.signer else {
            return Ok(());
        };
        let key = match hsm.current_key(KeyPurpose::Signing).await {
            Ok(k) => k.id,
            Err(pay_hsm::HsmError::NoActiveKey(_)) => hsm.generate_key(KeyPurpose::Signing, "audit").await?.id,
            Err(e) => return Err(e.into()),
        };
        let seq = t.seq + 1;
        let sig = hsm.sign(&key, &checkpoint_message(seq, &t.head)).await?;
        let public_key = hsm.public_key(&key).await?;
        let body = Body {
            seq,
            time_ms: self.env.now().millis(),
            kind: Kind::Checkpoint,
            actor: "audit".into(),
            event: "audit.checkpoint".into(),
            outcome: Outcome::Success,
            origin: self.env.host.to_string(),
            object: format!("lines 1-{}", t.seq),
            signature: Some(Signature {
                key: key.0,
                public_key: hex::encode(public_key),
                sig: hex::encode(sig),
            }),
            prev: t.head.clone(),
        };
        self.append(t, body)?;
        t.since_checkpoint = 0;
        Ok(())
    }

    fn append(&self, t: &mut Tail, body: Body) -> Result<(), AuditError> {
        let hash = hash_body(&body);
        let line = Line {
            seq: body.seq,
            time_ms: body.time_ms,
            kind: body.kind,
            actor: body.actor,
            event: body.event,
            outcome: body.outcome,
            origin: body.origin,
            object: body.object,
            signature: body.signature,
            prev: body.prev,
            hash: hash.clone(),
        };
        let mut text = serde_json::to_string(&line).map_err(|e| AuditError::Io {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        t.file
            .write_all(text.as_bytes())
            .and_then(|_| t.file.flush())
            .map_err(|e| AuditError::Io {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
        t.seq = line.seq;
        t.head = hash;
        Ok(())
    }
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines read.
    pub lines: u64,
    /// Events among them.
    pub events: u64,
    /// Signed checkpoints among them.
    pub checkpoints: u64,
    /// Events after the last checkpoint (not yet covered by a signature).
    pub unsigned_tail: u64,
    /// The signing public keys seen (hex).
    pub keys: Vec<String>,
}

/// The first broken line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at line {line}: {reason}")]
pub struct Broken {
    /// 1-based line number in the file.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// Verifies the log at `path`: sequence, chain and checkpoint signatures. With `trusted_keys`
/// (SEC1 hex), checkpoints must be signed by one of them.
pub fn verify(path: &Path, trusted_keys: &[String]) -> Result<Verified, Broken> {
    let f = std::fs::File::open(path).map_err(|e| Broken {
        line: 0,
        reason: format!("cannot open {}: {e}", path.display()),
    })?;
    verify_lines(
        std::io::BufReader::new(f).lines().map(|l| l.unwrap_or_default()),
        trusted_keys,
    )
}

/// Verifies lines of a log (see [`verify`]).
pub fn verify_lines(lines: impl Iterator<Item = String>, trusted_keys: &[String]) -> Result<Verified, Broken> {
    let mut v = Verified {
        lines: 0,
        events: 0,
        checkpoints: 0,
        unsigned_tail: 0,
        keys: vec![],
    };
    let mut head = GENESIS.to_owned();
    let mut seq = 0u64;
    for (i, text) in lines.enumerate() {
        let n = i as u64 + 1;
        let broken = |reason: String| Broken { line: n, reason };
        if text.trim().is_empty() {
            return Err(broken("empty line".into()));
        }
        let line: Line = serde_json::from_str(&text).map_err(|e| broken(format!("not an audit entry: {e}")))?;
        if line.seq != seq + 1 {
            return Err(broken(format!(
                "sequence {} where {} was expected (a line was deleted, inserted or moved)",
                line.seq,
                seq + 1
            )));
        }
        if line.prev != head {
            return Err(broken("does not follow the previous line (chain hash mismatch)".into()));
        }
        if hash_body(&line.body()) != line.hash {
            return Err(broken("content does not match its hash (the line was edited)".into()));
        }
        match (line.kind, &line.signature) {
            (Kind::Checkpoint, Some(sig)) => {
                let pk = hex::decode(&sig.public_key).map_err(|_| broken("bad checkpoint public key".into()))?;
                let s = hex::decode(&sig.sig).map_err(|_| broken("bad checkpoint signature encoding".into()))?;
                pay_hsm::verify_p256(&pk, &checkpoint_message(line.seq, &line.prev), &s)
                    .map_err(|_| broken("checkpoint signature does not verify".into()))?;
                if !trusted_keys.is_empty() && !trusted_keys.contains(&sig.public_key) {
                    return Err(broken(format!("checkpoint signed by an untrusted key ({})", sig.key)));
                }
                if !v.keys.contains(&sig.public_key) {
                    v.keys.push(sig.public_key.clone());
                }
                v.checkpoints += 1;
                v.unsigned_tail = 0;
            }
            (Kind::Checkpoint, None) => return Err(broken("checkpoint without a signature".into())),
            (Kind::Event, _) => {
                v.events += 1;
                v.unsigned_tail += 1;
            }
        }
        head = line.hash;
        seq = line.seq;
        v.lines = n;
    }
    Ok(v)
}

/// The signing key a checkpoint would use, for operators who pin it (`--trusted-key`).
pub async fn signing_public_key(hsm: &dyn Hsm) -> Result<(KeyId, String), pay_hsm::HsmError> {
    let k = hsm.current_key(KeyPurpose::Signing).await?;
    Ok((k.id.clone(), hex::encode(hsm.public_key(&k.id).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cleaned_and_bounded() {
        assert_eq!(clean("a\nb\u{7}c"), "abc");
        assert_eq!(clean(&"x".repeat(500)).len(), MAX_FIELD);
    }

    proptest::proptest! {
        #[test]
        fn any_field_content_verifies_and_any_byte_flip_is_caught(
            fields in proptest::collection::vec(("\\PC{0,40}", "\\PC{0,40}"), 1..12),
            flip in 0usize..10_000,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.log");
            let (env, _) = Env::deterministic("t", 1, pay_core::Timestamp::from_secs(1));
            let log = AuditLog::open(&path, env, None, 5).unwrap();
            for (actor, object) in &fields {
                rt.block_on(log.try_record(actor, "e", Outcome::Success, "o", object)).unwrap();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            proptest::prop_assert_eq!(verify_lines(lines.iter().cloned(), &[]).unwrap().events, fields.len() as u64);
            // Change one character of one line (keeping it valid UTF-8): caught at that line.
            let mut tampered = lines.clone();
            let which = flip % tampered.len();
            let chars: Vec<char> = tampered[which].chars().collect();
            let at = (flip / tampered.len()) % chars.len();
            let replacement = if chars[at] == 'x' { 'y' } else { 'x' };
            let mut changed = chars.clone();
            changed[at] = replacement;
            tampered[which] = changed.into_iter().collect();
            let e = verify_lines(tampered.into_iter(), &[]).unwrap_err();
            proptest::prop_assert_eq!(e.line, which as u64 + 1);
        }
    }

    #[test]
    fn the_hash_covers_every_field() {
        let b = Body {
            seq: 1,
            time_ms: 5,
            kind: Kind::Event,
            actor: "a".into(),
            event: "e".into(),
            outcome: Outcome::Success,
            origin: "o".into(),
            object: "x".into(),
            signature: None,
            prev: GENESIS.into(),
        };
        let h = hash_body(&b);
        for changed in [
            Body { seq: 2, ..b.clone() },
            Body {
                time_ms: 6,
                ..b.clone()
            },
            Body {
                actor: "b".into(),
                ..b.clone()
            },
            Body {
                event: "f".into(),
                ..b.clone()
            },
            Body {
                outcome: Outcome::Failure,
                ..b.clone()
            },
            Body {
                origin: "p".into(),
                ..b.clone()
            },
            Body {
                object: "y".into(),
                ..b.clone()
            },
            Body {
                prev: "1".into(),
                ..b.clone()
            },
        ] {
            assert_ne!(hash_body(&changed), h);
        }
    }
}
