//! Webhook endpoints: the stored record (secrets sealed under the HSM) and their management.

use crate::outbound::parse_target;
use crate::signing::generate_secret;
use crate::Webhooks;
use pay_core::{AccountId, ApiError, SecretString, Timestamp, WebhookEndpointId};
use pay_hsm::{KeyId, KeyPurpose, Sealed};
use pay_proto::objects::Metadata;
use pay_proto::webhooks::*;
use pay_store::{Entity, ListQuery, StoreError, Table, Versioned};
use serde::{Deserialize, Serialize};

/// Most endpoints one account may have (Stripe's limit).
pub const MAX_ENDPOINTS: usize = 16;

/// How long a rolled-out secret keeps signing, at most.
pub const ROLL_OVERLAP_MS: i64 = 24 * 3_600_000;

/// A signing secret as stored: AES-256-GCM under an HSM key, bound to the endpoint id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSecret {
    /// The HSM key that sealed it.
    pub key: KeyId,
    /// The ciphertext.
    pub sealed: Sealed,
    /// Unix ms after which it no longer signs (`None`: the current secret).
    pub expires_at_ms: Option<i64>,
}

/// A stored webhook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The merchant.
    pub account: AccountId,
    /// The public object (without the secret).
    pub endpoint: WebhookEndpoint,
    /// Current secret first, then rolled-out ones still signing.
    pub secrets: Vec<StoredSecret>,
    /// Why it was disabled by the system (e.g. the endpoint answered 410 Gone).
    pub disabled_reason: Option<String>,
    /// Unix ms.
    pub created_ms: i64,
}

impl Entity for EndpointRecord {
    const TABLE: Table = Table::WebhookEndpoints;
    fn id(&self) -> &str {
        &self.endpoint.id
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        Some(self.endpoint.url.clone())
    }
}

impl EndpointRecord {
    /// True when the endpoint takes events of `kind`.
    pub fn subscribes_to(&self, kind: &str) -> bool {
        self.endpoint.enabled_events.iter().any(|e| e == "*" || e == kind)
    }

    /// True when enabled.
    pub fn is_enabled(&self) -> bool {
        self.endpoint.status == "enabled"
    }
}

fn aad(endpoint: &str) -> Vec<u8> {
    format!("whsec:{endpoint}").into_bytes()
}

fn store(e: StoreError) -> ApiError {
    e.into_api_error()
}

fn validate_url(url: &str) -> Result<(), ApiError> {
    parse_target(url).map(|_| ()).map_err(|e| {
        ApiError::invalid_param(
            "url",
            "url_invalid",
            format!("Invalid URL: {e}. Use an absolute http(s) URL."),
        )
    })
}

fn validate_events(events: &[String]) -> Result<(), ApiError> {
    if events.is_empty() {
        return Err(ApiError::missing_param("enabled_events"));
    }
    for e in events {
        if e != "*" && !pay_core::event::is_known_event_type(e) {
            return Err(ApiError::invalid_param(
                "enabled_events",
                "parameter_invalid",
                format!(
                    "Invalid enabled_events: `{}` is not a known event type.",
                    e.chars().take(100).collect::<String>()
                ),
            ));
        }
    }
    Ok(())
}

fn not_found(id: &str) -> ApiError {
    ApiError::no_such("webhook_endpoint", "id", id)
}

impl Webhooks {
    async fn seal_secret(&self, endpoint: &str, secret: &SecretString) -> Result<StoredSecret, ApiError> {
        let key = self
            .hsm
            .current_key(KeyPurpose::Kek)
            .await
            .map_err(|e| ApiError::unavailable(format!("HSM unavailable: {e}")))?;
        let sealed = self
            .hsm
            .encrypt(&key.id, secret.expose().as_bytes(), &aad(endpoint))
            .await
            .map_err(|e| ApiError::unavailable(format!("HSM unavailable: {e}")))?;
        Ok(StoredSecret {
            key: key.id,
            sealed,
            expires_at_ms: None,
        })
    }

    /// The secrets that sign deliveries to `rec` now (current first).
    pub async fn signing_secrets(&self, rec: &EndpointRecord) -> Result<Vec<SecretString>, pay_hsm::HsmError> {
        let now = self.env.now().millis();
        let mut out = vec![];
        for s in &rec.secrets {
            if s.expires_at_ms.is_some_and(|t| t <= now) {
                continue;
            }
            let raw = self.hsm.decrypt(&s.key, &s.sealed, &aad(&rec.endpoint.id)).await?;
            let text = String::from_utf8(raw.to_vec()).map_err(|_| pay_hsm::HsmError::Integrity)?;
            out.push(SecretString::new(text));
        }
        Ok(out)
    }

    /// Loads an endpoint of `account`.
    pub async fn endpoint(&self, account: &AccountId, id: &str) -> Result<Versioned<EndpointRecord>, ApiError> {
        if WebhookEndpointId::parse(id).is_err() {
            return Err(not_found(id));
        }
        self.db
            .get_owned::<EndpointRecord>(account.as_str(), id)
            .await
            .map_err(store)?
            .ok_or_else(|| not_found(id))
    }

    /// Every endpoint of `account`, newest first.
    pub async fn all_endpoints(&self, account: &str) -> Result<Vec<EndpointRecord>, StoreError> {
        let mut out = vec![];
        let mut after = None;
        loop {
            let page = self
                .db
                .list::<EndpointRecord>(ListQuery {
                    table: Table::WebhookEndpoints,
                    account: account.to_owned(),
                    filter: None,
                    created_gte: None,
                    created_lt: None,
                    starting_after: after.clone(),
                    ending_before: None,
                    limit: 100,
                })
                .await?;
            after = page.items.last().map(|v| v.value.endpoint.id.clone());
            out.extend(page.items.into_iter().map(|v| v.value));
            if !page.has_more || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Creates an endpoint with a fresh secret; the answer is the only time the secret is shown.
    pub async fn create_endpoint(&self, req: CreateEndpoint) -> Result<WebhookEndpoint, ApiError> {
        validate_url(&req.url)?;
        validate_events(&req.enabled_events)?;
        let id = match &req.request_key {
            Some(k) => WebhookEndpointId::derived(&[req.account.as_str(), k]),
            None => WebhookEndpointId::generate(self.env.entropy.as_ref()),
        };
        if let Some(existing) = self
            .db
            .get_owned::<EndpointRecord>(req.account.as_str(), id.as_str())
            .await
            .map_err(store)?
        {
            // A re-run of the same request: the endpoint exists; its secret was shown once.
            return Ok(existing.value.endpoint);
        }
        if self.all_endpoints(req.account.as_str()).await.map_err(store)?.len() >= MAX_ENDPOINTS {
            return Err(ApiError::invalid_request(format!(
                "You have reached the maximum of {MAX_ENDPOINTS} test webhook endpoints."
            )));
        }
        let secret = generate_secret(self.env.entropy.as_ref());
        let sealed = self.seal_secret(id.as_str(), &secret).await?;
        let now = self.env.now();
        let endpoint = WebhookEndpoint {
            id: id.to_string(),
            object: "webhook_endpoint".into(),
            api_version: None,
            application: None,
            created: now.unix_secs(),
            description: req.description,
            enabled_events: req.enabled_events,
            livemode: false,
            metadata: req.metadata,
            status: "enabled".into(),
            url: req.url,
            fifo: req.fifo,
            secret: None,
        };
        let rec = EndpointRecord {
            account: req.account,
            endpoint: endpoint.clone(),
            secrets: vec![sealed],
            disabled_reason: None,
            created_ms: now.millis(),
        };
        let mut t = self.db.txn();
        t.insert(&rec);
        match self.db.commit(t).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                // A concurrent run of the same request won; answer with its endpoint.
                return self
                    .endpoint(&rec.account, &endpoint.id)
                    .await
                    .map(|v| v.value.endpoint);
            }
            Err(e) => return Err(store(e)),
        }
        tracing::info!(endpoint = %endpoint.id, account = %rec.account, "webhook endpoint created");
        Ok(WebhookEndpoint {
            secret: Some(secret),
            ..endpoint
        })
    }

    /// Updates an endpoint.
    pub async fn update_endpoint(&self, id: &str, req: UpdateEndpoint) -> Result<WebhookEndpoint, ApiError> {
        if let Some(u) = &req.url {
            validate_url(u)?;
        }
        if let Some(ev) = &req.enabled_events {
            validate_events(ev)?;
        }
        for _ in 0..5 {
            let cur = self.endpoint(&req.account, id).await?;
            let mut rec = cur.value.clone();
            if let Some(u) = &req.url {
                rec.endpoint.url = u.clone();
            }
            if let Some(ev) = &req.enabled_events {
                rec.endpoint.enabled_events = ev.clone();
            }
            if let Some(d) = req.disabled {
                rec.endpoint.status = if d { "disabled" } else { "enabled" }.into();
                if !d {
                    rec.disabled_reason = None;
                }
            }
            if let Some(d) = &req.description {
                rec.endpoint.description = d.clone();
            }
            if let Some(f) = req.fifo {
                rec.endpoint.fifo = f;
            }
            merge_metadata(&mut rec.endpoint.metadata, req.metadata.clone());
            let mut t = self.db.txn();
            t.update(cur.version, &rec);
            match self.db.commit(t).await {
                Ok(_) => return Ok(rec.endpoint),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(ApiError::unavailable(
            "The endpoint is being changed concurrently; retry.",
        ))
    }

    /// Deletes an endpoint; pending deliveries to it are dropped.
    pub async fn delete_endpoint(&self, account: &AccountId, id: &str) -> Result<serde_json::Value, ApiError> {
        let cur = self.endpoint(account, id).await?;
        let mut t = self.db.txn();
        t.delete::<EndpointRecord>(id, Some(cur.version));
        match self.db.commit(t).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(store(e)),
        }
        Ok(serde_json::json!({"id": id, "object": "webhook_endpoint", "deleted": true}))
    }

    /// Lists endpoints, newest first.
    pub async fn list_endpoints(&self, req: ListEndpoints) -> Result<EndpointPage, ApiError> {
        let page = self
            .db
            .list::<EndpointRecord>(ListQuery {
                table: Table::WebhookEndpoints,
                account: req.account.to_string(),
                filter: None,
                created_gte: None,
                created_lt: None,
                starting_after: req.starting_after.clone(),
                ending_before: req.ending_before.clone(),
                limit: req.limit.clamp(1, 100),
            })
            .await
            .map_err(|e| match e {
                StoreError::Invalid(m) if m.contains("cursor") => not_found(
                    req.starting_after
                        .as_deref()
                        .or(req.ending_before.as_deref())
                        .unwrap_or(""),
                ),
                other => store(other),
            })?;
        Ok(EndpointPage {
            data: page.items.into_iter().map(|v| v.value.endpoint).collect(),
            has_more: page.has_more,
        })
    }

    /// Replaces the signing secret; the previous one keeps signing for up to 24 h.
    pub async fn roll_secret(&self, id: &str, req: RollSecret) -> Result<WebhookEndpoint, ApiError> {
        let overlap = match req.expires_in_secs {
            None => ROLL_OVERLAP_MS,
            Some(s) if (0..=ROLL_OVERLAP_MS / 1000).contains(&s) => s * 1000,
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "expires_in",
                    "parameter_invalid_integer",
                    "expires_in must be between 0 and 86400 seconds.",
                ))
            }
        };
        let cur = self.endpoint(&req.account, id).await?;
        let secret = generate_secret(self.env.entropy.as_ref());
        let sealed = self.seal_secret(id, &secret).await?;
        let now = self.env.now().millis();
        let mut rec = cur.value.clone();
        let mut secrets = vec![sealed];
        for mut s in rec.secrets.drain(..) {
            if s.expires_at_ms.is_some_and(|t| t <= now) {
                continue;
            }
            let until = now + overlap;
            s.expires_at_ms = Some(s.expires_at_ms.map_or(until, |t| t.min(until)));
            if overlap > 0 {
                secrets.push(s);
            }
        }
        rec.secrets = secrets;
        let mut t = self.db.txn();
        t.update(cur.version, &rec);
        self.db.commit(t).await.map_err(|e| match e {
            StoreError::Conflict { .. } => ApiError::unavailable("The endpoint is being changed concurrently; retry."),
            other => store(other),
        })?;
        tracing::info!(endpoint = %id, "webhook secret rolled");
        Ok(WebhookEndpoint {
            secret: Some(secret),
            ..rec.endpoint
        })
    }
}

/// Applies metadata changes as the API parsed them: `Some(None)` clears, empty values delete.
pub fn merge_metadata(base: &mut Metadata, changes: Option<Option<Metadata>>) {
    match changes {
        None => {}
        Some(None) => base.clear(),
        Some(Some(m)) => {
            for (k, v) in m {
                if v.is_empty() {
                    base.remove(&k);
                } else {
                    base.insert(k, v);
                }
            }
        }
    }
}
