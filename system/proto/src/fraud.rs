//! The fraud service's interface: score a payment attempt (payment service only), report its
//! network outcome, and manage Radar rules and value lists (API only).

use pay_core::{AccountId, CardSummary, Currency};
use pay_net::{CallError, ServiceClient};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Score one authorization attempt. Carries no card number and no CVC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRequest {
    /// Merchant.
    pub account: AccountId,
    /// The attempt (`pa_…`): velocity counts it once however often it is scored.
    pub attempt_id: String,
    /// Live or test mode.
    pub livemode: bool,
    /// Amount in minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// What may be known about the card outside the vault.
    pub card: Option<CardSummary>,
    /// `pass`, `fail`, `unavailable` or `unchecked`.
    pub cvc_check: Option<String>,
    /// Client IP address.
    pub client_ip: Option<String>,
    /// Customer id.
    pub customer: Option<String>,
    /// When the customer was created (Unix seconds).
    pub customer_created: Option<i64>,
    /// Customer email.
    pub email: Option<String>,
    /// The payment's metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The rule that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreRule {
    /// Rule id.
    pub id: String,
    /// Rule text.
    pub predicate: String,
}

/// One reason for the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReason {
    /// Feature.
    pub feature: String,
    /// Contribution to the log-odds.
    pub contribution: f64,
}

/// Fraud's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResponse {
    /// 0–99.
    pub risk_score: u8,
    /// `normal`, `elevated` or `highest`.
    pub risk_level: String,
    /// `allow`, `block` or `review`.
    pub action: String,
    /// The rule that decided, if any.
    pub rule: Option<ScoreRule>,
    /// Top reasons.
    pub reasons: Vec<ScoreReason>,
    /// Model version.
    pub model_version: String,
    /// Whether velocity counts were available (false: scored without them).
    pub velocity_known: bool,
}

/// The network's answer for an attempt (velocity decline counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeReport {
    /// The attempt.
    pub attempt_id: String,
    /// `approved`, `declined` or `blocked`.
    pub outcome: String,
}

/// A Radar rule, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadarRule {
    /// `rule_…`.
    pub id: String,
    /// `radar.rule`.
    pub object: String,
    /// `allow`, `block` or `review`.
    pub action: String,
    /// The whole rule in canonical form (`Block if :risk_score: > 75`).
    pub predicate: String,
    /// Unix seconds.
    pub created: i64,
    /// Live mode.
    pub livemode: bool,
}

/// Create a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRule {
    /// Merchant.
    pub account: AccountId,
    /// The rule text.
    pub predicate: String,
    /// Derives the id (idempotent create).
    pub request_key: Option<String>,
}

/// A Radar value list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadarValueList {
    /// `rsl_…`.
    pub id: String,
    /// `radar.value_list`.
    pub object: String,
    /// Name used in rules as `@alias`.
    pub alias: String,
    /// Human name.
    pub name: String,
    /// `card_fingerprint`, `email`, `ip_address`, `country`, `string`, `case_sensitive_string`, …
    pub item_type: String,
    /// Unix seconds.
    pub created: i64,
    /// Live mode.
    pub livemode: bool,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Create a value list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateValueList {
    /// Merchant.
    pub account: AccountId,
    /// Alias.
    pub alias: String,
    /// Name.
    pub name: String,
    /// Item type (default `string`).
    pub item_type: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Derives the id.
    pub request_key: Option<String>,
}

/// A value list item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadarValueListItem {
    /// `rsli_…`.
    pub id: String,
    /// `radar.value_list_item`.
    pub object: String,
    /// The value.
    pub value: String,
    /// The list (`rsl_…`).
    pub value_list: String,
    /// Unix seconds.
    pub created: i64,
    /// Live mode.
    pub livemode: bool,
}

/// Add an item to a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateValueListItem {
    /// Merchant.
    pub account: AccountId,
    /// The list.
    pub value_list: String,
    /// The value.
    pub value: String,
    /// Derives the id.
    pub request_key: Option<String>,
}

/// Delete something by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteObject {
    /// Merchant.
    pub account: AccountId,
    /// Object id.
    pub id: String,
}

/// A list query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListObjects {
    /// Merchant.
    pub account: AccountId,
    /// Only items of this value list (items only).
    pub value_list: Option<String>,
    /// At most this many (1–100).
    pub limit: u32,
    /// Page after this id.
    pub starting_after: Option<String>,
}

/// A page of objects in Stripe's list shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectPage<T> {
    /// The objects.
    pub data: Vec<T>,
    /// More exist.
    pub has_more: bool,
}

/// `{ id, object, deleted: true }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Id.
    pub id: String,
    /// Object type.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}

/// Typed client of the `fraud` service.
#[derive(Clone)]
pub struct FraudClient {
    inner: ServiceClient,
}

impl FraudClient {
    /// Wraps a service client for the `fraud` service.
    pub fn new(inner: ServiceClient) -> FraudClient {
        FraudClient { inner }
    }
    /// Scores an attempt (payment service only).
    pub async fn score(&self, req: &ScoreRequest) -> Result<ScoreResponse, CallError> {
        self.inner.post("/v1/score", req).await
    }
    /// Reports an attempt's network outcome (payment service only).
    pub async fn outcome(&self, req: &OutcomeReport) -> Result<Deleted, CallError> {
        self.inner.post("/v1/outcomes", req).await
    }
    /// Creates a rule (a bad rule is a 400 with line and column).
    pub async fn create_rule(&self, req: &CreateRule) -> Result<RadarRule, CallError> {
        self.inner.post("/v1/radar/rules", req).await
    }
    /// One rule.
    pub async fn get_rule(&self, account: &AccountId, id: &str) -> Result<RadarRule, CallError> {
        self.inner
            .get(&format!(
                "/v1/radar/rules/{}?account={account}",
                crate::acquirer::encode_path(id)
            ))
            .await
    }
    /// A page of rules.
    pub async fn list_rules(&self, q: &ListObjects) -> Result<ObjectPage<RadarRule>, CallError> {
        self.inner.post("/v1/radar/rules/list", q).await
    }
    /// Deletes a rule.
    pub async fn delete_rule(&self, req: &DeleteObject) -> Result<Deleted, CallError> {
        self.inner.post("/v1/radar/rules/delete", req).await
    }
    /// Creates a value list.
    pub async fn create_value_list(&self, req: &CreateValueList) -> Result<RadarValueList, CallError> {
        self.inner.post("/v1/radar/value_lists", req).await
    }
    /// One value list.
    pub async fn get_value_list(&self, account: &AccountId, id: &str) -> Result<RadarValueList, CallError> {
        self.inner
            .get(&format!(
                "/v1/radar/value_lists/{}?account={account}",
                crate::acquirer::encode_path(id)
            ))
            .await
    }
    /// A page of value lists.
    pub async fn list_value_lists(&self, q: &ListObjects) -> Result<ObjectPage<RadarValueList>, CallError> {
        self.inner.post("/v1/radar/value_lists/list", q).await
    }
    /// Deletes a value list and its items.
    pub async fn delete_value_list(&self, req: &DeleteObject) -> Result<Deleted, CallError> {
        self.inner.post("/v1/radar/value_lists/delete", req).await
    }
    /// Adds an item.
    pub async fn create_value_list_item(&self, req: &CreateValueListItem) -> Result<RadarValueListItem, CallError> {
        self.inner.post("/v1/radar/value_list_items", req).await
    }
    /// A page of items of one list.
    pub async fn list_value_list_items(&self, q: &ListObjects) -> Result<ObjectPage<RadarValueListItem>, CallError> {
        self.inner.post("/v1/radar/value_list_items/list", q).await
    }
    /// Deletes an item.
    pub async fn delete_value_list_item(&self, req: &DeleteObject) -> Result<Deleted, CallError> {
        self.inner.post("/v1/radar/value_list_items/delete", req).await
    }
}
