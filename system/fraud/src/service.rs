//! The `fraud` role: an HTTP service over `pay-net`.
//!
//! * `POST /v1/score` and `POST /v1/outcomes`: the payment service only (service identity
//!   checked). Scoring uses the merchant's rules and the value lists they name as the store
//!   holds them (so a rule saved through the API applies to the next payment, on every fraud
//!   host), records the attempt in the velocity store and scores it. If the velocity store
//!   fails, the payment is scored without velocity (`velocity_known: false`) rather than
//!   failing the payment.
//!
//!   A host keeps each account's rules and lists compiled (`RadarCache`) with the account's
//!   Radar generation: the version of its `radar_configs` record, which every change of its
//!   rules, lists or items updates in the same store transaction as the change. Scoring reads
//!   that one record by id and reuses the compiled configuration while the version is the one
//!   it was compiled at; otherwise it lists the rules and lists again. So a change saved on any
//!   host is seen by the next payment every host scores, at the cost of one read by id instead
//!   of a list of the rules, a list of the lists and a look-up of each list's items.
//! * `/v1/radar/rules…`, `/v1/radar/value_lists…`, `/v1/radar/value_list_items…`: the API only.
//!   Rules are validated on save (a bad rule is a 400 whose message gives line and column) and
//!   stored in the `radar_rules` table; lists and items in `value_lists` / `value_list_items`.
//!
//! Radar's default rules (block `highest`, review `elevated`) always apply after the merchant's
//! own rules of the same action.

use crate::rules::{compile_rule, Action, MemoryLists, RuleSet};
use crate::velocity::{AttemptOutcome, VelocityCounts, VelocityStore};
use crate::{CvcCheck, FraudEngine, PaymentContext};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use pay_core::{AccountId, ApiError, Env, Money, RuleId, Timestamp, ValueListId, ValueListItemId};
use pay_net::identity::{require_caller, CallerPolicy};
use pay_net::JsonBody;
use pay_net::{api_error_response, json_response, TokenVerifier};
use pay_proto::fraud::*;
use pay_store::{Db, Entity, Index, ListQuery, StoreError, Table};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Most rules per account.
pub const MAX_RULES: usize = 500;
/// Most items loaded per list when scoring.
pub const MAX_LIST_ITEMS: u32 = 10_000;
/// Most accounts whose compiled Radar configuration a fraud host keeps.
pub const MAX_CACHED_CONFIGS: usize = 10_000;
/// Tries of a Radar configuration change whose generation record another change moved first.
const GENERATION_RETRIES: usize = 8;

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// `rule_…`.
    pub id: String,
    /// Merchant.
    pub account: String,
    /// Action.
    pub action: Action,
    /// Canonical text.
    pub text: String,
    /// Unix ms.
    pub created_ms: i64,
}

impl Entity for RuleRecord {
    const TABLE: Table = Table::RadarRules;
    fn id(&self) -> &str {
        &self.id
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn created(&self) -> Timestamp {
        Timestamp(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        Some(self.action.as_str().to_lowercase())
    }
}

/// A stored value list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListRecord {
    /// `rsl_…`.
    pub id: String,
    /// Merchant.
    pub account: String,
    /// `@alias`.
    pub alias: String,
    /// Name.
    pub name: String,
    /// Item type.
    pub item_type: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Unix ms.
    pub created_ms: i64,
}

impl Entity for ListRecord {
    const TABLE: Table = Table::ValueLists;
    fn id(&self) -> &str {
        &self.id
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn created(&self) -> Timestamp {
        Timestamp(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        Some(self.alias.clone())
    }
}

/// A stored value list item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// `rsli_…`.
    pub id: String,
    /// Merchant.
    pub account: String,
    /// The list id.
    pub list: String,
    /// The value (lowercased for case-insensitive item types).
    pub value: String,
    /// Unix ms.
    pub created_ms: i64,
}

impl Entity for ItemRecord {
    const TABLE: Table = Table::ValueListItems;
    fn id(&self) -> &str {
        &self.id
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn created(&self) -> Timestamp {
        Timestamp(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        Some(self.list.clone())
    }
    fn k2(&self) -> Option<String> {
        Some(self.value.clone())
    }
}

/// An account's Radar generation (table `radar_configs`, id = the account): written, in the
/// same store transaction, by every change of the account's rules, value lists or list items,
/// so that its version says which configuration is current. A fraud host compares it with
/// the version its compiled copy was made at (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RadarConfigRecord {
    /// The account (also the record's id).
    pub account: String,
    /// Unix ms of the first change.
    pub created_ms: i64,
    /// Unix ms of the latest change.
    pub changed_ms: i64,
}

impl Entity for RadarConfigRecord {
    const TABLE: Table = Table::RadarConfigs;
    fn id(&self) -> &str {
        &self.account
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn created(&self) -> Timestamp {
        Timestamp(self.created_ms)
    }
}

/// An account's rules and lists, compiled, and the generation they were read at (0: the
/// account had no `radar_configs` record then).
struct CompiledConfig {
    generation: i64,
    lists: MemoryLists,
    rules: RuleSet,
}

/// The compiled Radar configuration of the accounts a host scored lately, at most
/// [`MAX_CACHED_CONFIGS`] (past that, the entry of the lowest account id is dropped: an order
/// that needs no clock and replays the same in the simulator).
#[derive(Default)]
struct RadarCache {
    configs: Mutex<BTreeMap<String, Arc<CompiledConfig>>>,
}

impl RadarCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<CompiledConfig>>> {
        // Every statement under the lock leaves the map consistent.
        self.configs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account's configuration if it was compiled at `generation`.
    fn current(&self, account: &str, generation: i64) -> Option<Arc<CompiledConfig>> {
        self.lock().get(account).filter(|c| c.generation == generation).cloned()
    }

    /// Keeps `config` for `account`, unless a configuration of a later generation is kept
    /// already (a slower concurrent load must not replace a newer one).
    fn keep(&self, account: &str, config: Arc<CompiledConfig>) {
        let mut m = self.lock();
        if m.get(account).is_some_and(|c| c.generation > config.generation) {
            return;
        }
        if !m.contains_key(account) && m.len() >= MAX_CACHED_CONFIGS {
            m.pop_first();
        }
        m.insert(account.to_owned(), config);
    }
}

/// Item types Stripe offers; all but `case_sensitive_string` and `card_fingerprint` compare
/// case-insensitively.
pub const ITEM_TYPES: &[&str] = &[
    "card_bin",
    "card_fingerprint",
    "case_sensitive_string",
    "country",
    "customer_id",
    "email",
    "ip_address",
    "sepa_debit_fingerprint",
    "string",
    "us_bank_account_fingerprint",
];

fn case_sensitive(item_type: &str) -> bool {
    matches!(
        item_type,
        "case_sensitive_string" | "card_fingerprint" | "sepa_debit_fingerprint" | "us_bank_account_fingerprint"
    )
}

fn store(e: StoreError) -> ApiError {
    e.into_api_error()
}

fn rule_object(r: &RuleRecord) -> RadarRule {
    RadarRule {
        id: r.id.clone(),
        object: "radar.rule".into(),
        action: r.action.as_str().to_lowercase(),
        predicate: r.text.clone(),
        created: Timestamp(r.created_ms).unix_secs(),
        livemode: false,
    }
}

fn list_object(l: &ListRecord) -> RadarValueList {
    RadarValueList {
        id: l.id.clone(),
        object: "radar.value_list".into(),
        alias: l.alias.clone(),
        name: l.name.clone(),
        item_type: l.item_type.clone(),
        created: Timestamp(l.created_ms).unix_secs(),
        livemode: false,
        metadata: l.metadata.clone(),
    }
}

fn item_object(i: &ItemRecord) -> RadarValueListItem {
    RadarValueListItem {
        id: i.id.clone(),
        object: "radar.value_list_item".into(),
        value: i.value.clone(),
        value_list: i.list.clone(),
        created: Timestamp(i.created_ms).unix_secs(),
        livemode: false,
    }
}

/// The fraud service.
pub struct FraudService {
    db: Db,
    env: Env,
    engine: FraudEngine,
    velocity: Arc<dyn VelocityStore>,
    cache: RadarCache,
}

impl FraudService {
    /// A service storing rules and lists in `db` and counting velocity in `velocity`.
    pub fn new(db: Db, env: Env, engine: FraudEngine, velocity: Arc<dyn VelocityStore>) -> FraudService {
        FraudService {
            db,
            env,
            engine,
            velocity,
            cache: RadarCache::default(),
        }
    }

    /// The account's rules and lists, compiled: the kept copy while the account's generation is
    /// the one it was made at, else read from the store and kept.
    async fn config(&self, account: &str) -> Result<Arc<CompiledConfig>, ApiError> {
        // The account's Radar generation: its `radar_configs` record's version, 0 without one.
        let generation = self
            .db
            .get::<RadarConfigRecord>(account)
            .await
            .map_err(store)?
            .map_or(0, |v| v.version);
        if let Some(c) = self.cache.current(account, generation) {
            return Ok(c);
        }
        // Read after the generation: what is read is at least as new as what the generation
        // names, so a copy is never kept under a generation later than its contents.
        let (lists, _) = self.lists(account, true).await?;
        let rules = self.rules(account, &lists).await?;
        let config = Arc::new(CompiledConfig {
            generation,
            lists,
            rules,
        });
        self.cache.keep(account, config.clone());
        Ok(config)
    }

    /// Commits a change of the account's rules or lists (the writes `build` adds) together with
    /// a new version of its Radar generation, retrying when another change moved the
    /// generation first. Conflicts on the change's own records are the caller's to read.
    async fn commit_config_change(
        &self,
        account: &str,
        build: impl Fn(&mut pay_store::TxnBuilder),
    ) -> Result<(), StoreError> {
        let now = self.env.now().millis();
        for _ in 0..GENERATION_RETRIES {
            let current = self.db.get::<RadarConfigRecord>(account).await?;
            let mut txn = self.db.txn();
            build(&mut txn);
            match current {
                Some(v) => {
                    let next = RadarConfigRecord {
                        changed_ms: now,
                        ..v.value
                    };
                    txn.update(v.version, &next);
                }
                None => {
                    txn.insert(&RadarConfigRecord {
                        account: account.to_owned(),
                        created_ms: now,
                        changed_ms: now,
                    });
                }
            }
            match self.db.commit(txn).await {
                Err(StoreError::Conflict {
                    table: Table::RadarConfigs,
                    ..
                }) => continue,
                other => return other.map(|_| ()),
            }
        }
        Err(StoreError::Unavailable(
            "the account's Radar configuration kept changing; try again".into(),
        ))
    }

    async fn all<T: Entity>(
        &self,
        account: &str,
        filter: Option<(Index, String)>,
        max: usize,
    ) -> Result<Vec<T>, ApiError> {
        let mut out = vec![];
        let mut after = None;
        loop {
            let page = self
                .db
                .list::<T>(ListQuery {
                    table: T::TABLE,
                    account: account.to_owned(),
                    filter: filter.clone(),
                    created_gte: None,
                    created_lt: None,
                    starting_after: after.clone(),
                    ending_before: None,
                    limit: 100,
                })
                .await
                .map_err(store)?;
            after = page.items.last().map(|v| v.value.id().to_owned());
            out.extend(page.items.into_iter().map(|v| v.value));
            if !page.has_more || out.len() >= max {
                return Ok(out);
            }
        }
    }

    /// The account's value lists with their items.
    async fn lists(&self, account: &str, with_items: bool) -> Result<(MemoryLists, Vec<ListRecord>), ApiError> {
        let lists: Vec<ListRecord> = self.all(account, None, 1000).await?;
        let mut mem = MemoryLists::new();
        for l in &lists {
            mem.create(&l.alias, case_sensitive(&l.item_type));
            if with_items {
                let items = self
                    .db
                    .find::<ItemRecord>(Some(account), Index::K1, &l.id, MAX_LIST_ITEMS)
                    .await
                    .map_err(store)?;
                for i in items {
                    mem.add(&l.alias, &i.value.value);
                }
            }
        }
        Ok((mem, lists))
    }

    /// The account's rules (its own, then Radar's defaults), compiled against `lists`.
    async fn rules(&self, account: &str, lists: &MemoryLists) -> Result<RuleSet, ApiError> {
        let mut stored: Vec<RuleRecord> = self.all(account, None, MAX_RULES).await?;
        stored.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        let mut set = RuleSet::empty();
        for r in stored {
            match compile_rule(&r.text, lists) {
                Ok(c) => {
                    set.insert(&r.id, c);
                }
                Err(e) => tracing::warn!(rule = %r.id, error = %e, "stored rule no longer compiles; skipped"),
            }
        }
        for r in RuleSet::radar_defaults().rules() {
            set.insert(&r.id, r.compiled.clone());
        }
        Ok(set)
    }

    /// Scores an attempt.
    pub async fn score(&self, req: ScoreRequest) -> Result<ScoreResponse, ApiError> {
        let ctx = context(&req, self.env.now());
        // The account's rules and the attempt's velocity counts do not depend on each other:
        // both are asked at once, so a score waits for one round trip where it waited for two.
        // (The attempt is counted even when the rules cannot be read and the score fails: it is
        // still an attempt, and the payment service's fallback policy decides what becomes of it.)
        let observation = ctx.observation();
        let (config, counts) = tokio::join!(
            self.config(req.account.as_str()),
            self.velocity.observe(&observation, ctx.now)
        );
        let config = config?;
        let (rules, lists) = (&config.rules, &config.lists);
        let (a, known) = match counts {
            Ok(counts) => (self.engine.score(&ctx, &counts, rules, lists), true),
            Err(e) => {
                tracing::warn!(error = %e, attempt = %req.attempt_id, "velocity unavailable; scoring without it");
                (self.engine.score(&ctx, &VelocityCounts::unknown(), rules, lists), false)
            }
        };
        if known && a.outcome.action == Action::Block {
            // The network never sees a blocked attempt; count it as a decline here.
            if let Err(e) = self
                .velocity
                .record_outcome(&req.attempt_id, AttemptOutcome::Blocked, self.env.now())
                .await
            {
                tracing::warn!(error = %e, "could not record a blocked attempt");
            }
        }
        Ok(ScoreResponse {
            risk_score: a.risk_score,
            risk_level: a.risk_level.as_str().into(),
            action: a.outcome.action.as_str().to_lowercase(),
            rule: a.outcome.rule.map(|r| ScoreRule {
                id: r.id,
                predicate: r.text,
            }),
            reasons: a
                .reasons
                .into_iter()
                .map(|r| ScoreReason {
                    feature: r.feature,
                    contribution: r.contribution,
                })
                .collect(),
            model_version: a.model_version,
            velocity_known: known,
        })
    }

    /// Records an attempt's outcome for decline velocity.
    pub async fn outcome(&self, req: OutcomeReport) -> Result<Deleted, ApiError> {
        let o = match req.outcome.as_str() {
            "approved" => AttemptOutcome::Approved,
            "declined" => AttemptOutcome::Declined,
            "blocked" => AttemptOutcome::Blocked,
            _ => {
                return Err(ApiError::invalid_param(
                    "outcome",
                    "parameter_invalid",
                    "Invalid outcome.",
                ))
            }
        };
        self.velocity
            .record_outcome(&req.attempt_id, o, self.env.now())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok(Deleted {
            id: req.attempt_id,
            object: "payment_attempt_outcome".into(),
            deleted: false,
        })
    }

    /// Validates and saves a rule.
    pub async fn create_rule(&self, req: CreateRule) -> Result<RadarRule, ApiError> {
        let account = req.account.as_str();
        let (lists, _) = self.lists(account, false).await?;
        let compiled = compile_rule(&req.predicate, &lists).map_err(|e| {
            ApiError::invalid_param(
                "predicate",
                "parameter_invalid",
                format!("Invalid rule at line {}, column {}: {}", e.line, e.column, e.message),
            )
        })?;
        let existing: Vec<RuleRecord> = self.all(account, None, MAX_RULES).await?;
        let id = match &req.request_key {
            Some(k) => RuleId::derived(&[account, k]),
            None => RuleId::generate(self.env.entropy.as_ref()),
        };
        if let Some(r) = existing.iter().find(|r| r.id == id.as_str()) {
            return Ok(rule_object(r));
        }
        if existing.len() >= MAX_RULES {
            return Err(ApiError::invalid_request(format!(
                "An account may have at most {MAX_RULES} rules."
            )));
        }
        let rec = RuleRecord {
            id: id.to_string(),
            account: account.to_owned(),
            action: compiled.action(),
            text: compiled.ast.to_string(),
            created_ms: self.env.now().millis(),
        };
        match self
            .commit_config_change(account, |t| {
                t.insert(&rec);
            })
            .await
        {
            Ok(()) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(store(e)),
        }
        Ok(rule_object(&rec))
    }

    /// One rule.
    pub async fn get_rule(&self, account: &AccountId, id: &str) -> Result<RadarRule, ApiError> {
        self.db
            .get_owned::<RuleRecord>(account.as_str(), id)
            .await
            .map_err(store)?
            .map(|v| rule_object(&v.value))
            .ok_or_else(|| ApiError::no_such("radar.rule", "id", id))
    }

    /// A page of rules, newest first.
    pub async fn list_rules(&self, q: ListObjects) -> Result<ObjectPage<RadarRule>, ApiError> {
        let page = self.page::<RuleRecord>(&q, None).await?;
        Ok(ObjectPage {
            data: page.0.iter().map(rule_object).collect(),
            has_more: page.1,
        })
    }

    async fn page<T: Entity>(
        &self,
        q: &ListObjects,
        filter: Option<(Index, String)>,
    ) -> Result<(Vec<T>, bool), ApiError> {
        let page = self
            .db
            .list::<T>(ListQuery {
                table: T::TABLE,
                account: q.account.to_string(),
                filter,
                created_gte: None,
                created_lt: None,
                starting_after: q.starting_after.clone(),
                ending_before: None,
                limit: q.limit.clamp(1, 100),
            })
            .await
            .map_err(store)?;
        Ok((page.items.into_iter().map(|v| v.value).collect(), page.has_more))
    }

    /// Deletes a rule.
    pub async fn delete_rule(&self, req: DeleteObject) -> Result<Deleted, ApiError> {
        let Some(v) = self
            .db
            .get_owned::<RuleRecord>(req.account.as_str(), &req.id)
            .await
            .map_err(store)?
        else {
            return Err(ApiError::no_such("radar.rule", "id", &req.id));
        };
        self.commit_config_change(req.account.as_str(), |t| {
            t.delete::<RuleRecord>(&req.id, Some(v.version));
        })
        .await
        .map_err(store)?;
        Ok(Deleted {
            id: req.id,
            object: "radar.rule".into(),
            deleted: true,
        })
    }

    /// Creates a value list (aliases are unique per account).
    pub async fn create_value_list(&self, req: CreateValueList) -> Result<RadarValueList, ApiError> {
        let account = req.account.as_str();
        let alias_ok = !req.alias.is_empty()
            && req.alias.len() <= 100
            && req
                .alias
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !alias_ok {
            return Err(ApiError::invalid_param(
                "alias",
                "parameter_invalid",
                "Invalid alias: use 1–100 letters, digits, `_` or `-`.",
            ));
        }
        let item_type = req.item_type.clone().unwrap_or_else(|| "string".into());
        if !ITEM_TYPES.contains(&item_type.as_str()) {
            return Err(ApiError::invalid_param(
                "item_type",
                "parameter_invalid",
                format!("Invalid item_type: must be one of {}.", ITEM_TYPES.join(", ")),
            ));
        }
        let id = match &req.request_key {
            Some(k) => ValueListId::derived(&[account, k]),
            None => ValueListId::generate(self.env.entropy.as_ref()),
        };
        let same_alias = self
            .db
            .find::<ListRecord>(Some(account), Index::K1, &req.alias, 1)
            .await
            .map_err(store)?;
        if let Some(l) = same_alias.first() {
            if l.value.id == id.as_str() {
                return Ok(list_object(&l.value));
            }
            return Err(ApiError::invalid_param(
                "alias",
                "parameter_invalid",
                format!("A value list with alias `{}` already exists.", req.alias),
            ));
        }
        let rec = ListRecord {
            id: id.to_string(),
            account: account.to_owned(),
            alias: req.alias,
            name: req.name,
            item_type,
            metadata: req.metadata,
            created_ms: self.env.now().millis(),
        };
        match self
            .commit_config_change(account, |t| {
                t.insert(&rec);
            })
            .await
        {
            Ok(()) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(store(e)),
        }
        Ok(list_object(&rec))
    }

    async fn load_list(&self, account: &str, id: &str) -> Result<pay_store::Versioned<ListRecord>, ApiError> {
        self.db
            .get_owned::<ListRecord>(account, id)
            .await
            .map_err(store)?
            .ok_or_else(|| ApiError::no_such("radar.value_list", "id", id))
    }

    /// One value list.
    pub async fn get_value_list(&self, account: &AccountId, id: &str) -> Result<RadarValueList, ApiError> {
        Ok(list_object(&self.load_list(account.as_str(), id).await?.value))
    }

    /// A page of value lists.
    pub async fn list_value_lists(&self, q: ListObjects) -> Result<ObjectPage<RadarValueList>, ApiError> {
        let page = self.page::<ListRecord>(&q, None).await?;
        Ok(ObjectPage {
            data: page.0.iter().map(list_object).collect(),
            has_more: page.1,
        })
    }

    /// Deletes a value list and its items; refused while a rule uses it.
    pub async fn delete_value_list(&self, req: DeleteObject) -> Result<Deleted, ApiError> {
        let account = req.account.as_str();
        let list = self.load_list(account, &req.id).await?;
        let rules: Vec<RuleRecord> = self.all(account, None, MAX_RULES).await?;
        let needle = format!("@{}", list.value.alias);
        if let Some(r) = rules.iter().find(|r| {
            r.text.match_indices(&needle).any(|(i, _)| {
                !r.text[i + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        }) {
            return Err(ApiError::invalid_request(format!(
                "The value list is used by rule {}; delete the rule first.",
                r.id
            )));
        }
        loop {
            let items = self
                .db
                .find::<ItemRecord>(Some(account), Index::K1, &req.id, 500)
                .await
                .map_err(store)?;
            if items.is_empty() {
                break;
            }
            self.commit_config_change(account, |t| {
                for i in &items {
                    t.delete::<ItemRecord>(&i.value.id, None);
                }
            })
            .await
            .map_err(store)?;
        }
        self.commit_config_change(account, |t| {
            t.delete::<ListRecord>(&req.id, Some(list.version));
        })
        .await
        .map_err(store)?;
        Ok(Deleted {
            id: req.id,
            object: "radar.value_list".into(),
            deleted: true,
        })
    }

    /// Adds an item to a list (adding a value already present returns the existing item).
    pub async fn create_value_list_item(&self, req: CreateValueListItem) -> Result<RadarValueListItem, ApiError> {
        let account = req.account.as_str();
        let list = self
            .load_list(account, &req.value_list)
            .await
            .map_err(|e| e.with_param("value_list"))?;
        if req.value.is_empty() || req.value.len() > 800 {
            return Err(ApiError::invalid_param(
                "value",
                "parameter_invalid",
                "Invalid value: 1–800 characters.",
            ));
        }
        let value = if case_sensitive(&list.value.item_type) {
            req.value.clone()
        } else {
            req.value.to_lowercase()
        };
        let same = self
            .db
            .find::<ItemRecord>(Some(account), Index::K2, &value, 100)
            .await
            .map_err(store)?;
        if let Some(i) = same.iter().find(|i| i.value.list == list.value.id) {
            return Ok(item_object(&i.value));
        }
        let id = match &req.request_key {
            Some(k) => ValueListItemId::derived(&[account, k]),
            None => ValueListItemId::generate(self.env.entropy.as_ref()),
        };
        let rec = ItemRecord {
            id: id.to_string(),
            account: account.to_owned(),
            list: list.value.id.clone(),
            value,
            created_ms: self.env.now().millis(),
        };
        match self
            .commit_config_change(account, |t| {
                t.insert(&rec).check::<ListRecord>(&list.value.id, list.version);
            })
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict {
                table: Table::ValueListItems,
                ..
            }) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::no_such("radar.value_list", "value_list", &req.value_list))
            }
            Err(e) => return Err(store(e)),
        }
        Ok(item_object(&rec))
    }

    /// A page of one list's items.
    pub async fn list_value_list_items(&self, q: ListObjects) -> Result<ObjectPage<RadarValueListItem>, ApiError> {
        let Some(list) = q.value_list.clone() else {
            return Err(ApiError::missing_param("value_list"));
        };
        let page = self.page::<ItemRecord>(&q, Some((Index::K1, list))).await?;
        Ok(ObjectPage {
            data: page.0.iter().map(item_object).collect(),
            has_more: page.1,
        })
    }

    /// Deletes an item.
    pub async fn delete_value_list_item(&self, req: DeleteObject) -> Result<Deleted, ApiError> {
        let Some(v) = self
            .db
            .get_owned::<ItemRecord>(req.account.as_str(), &req.id)
            .await
            .map_err(store)?
        else {
            return Err(ApiError::no_such("radar.value_list_item", "id", &req.id));
        };
        self.commit_config_change(req.account.as_str(), |t| {
            t.delete::<ItemRecord>(&req.id, Some(v.version));
        })
        .await
        .map_err(store)?;
        Ok(Deleted {
            id: req.id,
            object: "radar.value_list_item".into(),
            deleted: true,
        })
    }
}

/// The library's context from the wire request.
pub fn context(req: &ScoreRequest, now: Timestamp) -> PaymentContext {
    let mut c = PaymentContext::new(
        &req.attempt_id,
        req.account.as_str(),
        Money::new(req.amount, req.currency),
        now,
    );
    c.livemode = req.livemode;
    if let Some(card) = &req.card {
        c.card_fingerprint = Some(card.fingerprint.clone()).filter(|f| !f.is_empty());
        c.card_bin = Some(card.bin.clone());
        c.card_last4 = Some(card.last4.clone());
        c.card_brand = Some(card.brand.as_str().to_owned());
        c.card_country = card.country.clone();
        c.card_funding = Some(card.funding.clone());
    }
    c.cvc_check = match req.cvc_check.as_deref() {
        Some("pass") => CvcCheck::Pass,
        Some("fail") => CvcCheck::Fail,
        Some("unavailable") => CvcCheck::Unavailable,
        _ => CvcCheck::Unchecked,
    };
    c.ip = req.client_ip.as_deref().and_then(|s| s.trim().parse().ok());
    c.customer_id = req.customer.clone();
    c.customer_created = req.customer_created.map(Timestamp::from_secs);
    c.email = req.email.clone();
    c.metadata = req.metadata.clone();
    c
}

fn respond<T: Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => json_response(&v),
        Err(e) => api_error_response(&e),
    }
}

#[derive(Deserialize)]
struct AccountParam {
    account: String,
}

fn account(q: &AccountParam) -> Result<AccountId, ApiError> {
    AccountId::parse(&q.account)
        .map_err(|_| ApiError::invalid_param("account", "parameter_invalid", "Invalid account."))
}

type S = State<Arc<FraudService>>;

async fn score(State(s): S, JsonBody(r): JsonBody<ScoreRequest>) -> Response {
    respond(s.score(r).await)
}
async fn outcome(State(s): S, JsonBody(r): JsonBody<OutcomeReport>) -> Response {
    respond(s.outcome(r).await)
}
async fn create_rule(State(s): S, JsonBody(r): JsonBody<CreateRule>) -> Response {
    respond(s.create_rule(r).await)
}
async fn get_rule(State(s): S, Path(id): Path<String>, Query(q): Query<AccountParam>) -> Response {
    respond(async { s.get_rule(&account(&q)?, &id).await }.await)
}
async fn list_rules(State(s): S, JsonBody(q): JsonBody<ListObjects>) -> Response {
    respond(s.list_rules(q).await)
}
async fn delete_rule(State(s): S, JsonBody(r): JsonBody<DeleteObject>) -> Response {
    respond(s.delete_rule(r).await)
}
async fn create_list(State(s): S, JsonBody(r): JsonBody<CreateValueList>) -> Response {
    respond(s.create_value_list(r).await)
}
async fn get_list(State(s): S, Path(id): Path<String>, Query(q): Query<AccountParam>) -> Response {
    respond(async { s.get_value_list(&account(&q)?, &id).await }.await)
}
async fn list_lists(State(s): S, JsonBody(q): JsonBody<ListObjects>) -> Response {
    respond(s.list_value_lists(q).await)
}
async fn delete_list(State(s): S, JsonBody(r): JsonBody<DeleteObject>) -> Response {
    respond(s.delete_value_list(r).await)
}
async fn create_item(State(s): S, JsonBody(r): JsonBody<CreateValueListItem>) -> Response {
    respond(s.create_value_list_item(r).await)
}
async fn list_items(State(s): S, JsonBody(q): JsonBody<ListObjects>) -> Response {
    respond(s.list_value_list_items(q).await)
}
async fn delete_item(State(s): S, JsonBody(r): JsonBody<DeleteObject>) -> Response {
    respond(s.delete_value_list_item(r).await)
}

/// The fraud service's routes: scoring for the payment service, rules and lists for the API.
pub fn router(s: Arc<FraudService>, verifier: Arc<TokenVerifier>) -> Router {
    let from_payments = CallerPolicy {
        verifier: verifier.clone(),
        allowed: &["payments"],
    };
    let from_api = CallerPolicy {
        verifier,
        allowed: &["api"],
    };
    let scoring = Router::new()
        .route("/v1/score", post(score))
        .route("/v1/outcomes", post(outcome))
        .route_layer(axum::middleware::from_fn_with_state(from_payments, require_caller));
    let admin = Router::new()
        .route("/v1/radar/rules", post(create_rule))
        .route("/v1/radar/rules/list", post(list_rules))
        .route("/v1/radar/rules/delete", post(delete_rule))
        .route("/v1/radar/rules/{id}", get(get_rule))
        .route("/v1/radar/value_lists", post(create_list))
        .route("/v1/radar/value_lists/list", post(list_lists))
        .route("/v1/radar/value_lists/delete", post(delete_list))
        .route("/v1/radar/value_lists/{id}", get(get_list))
        .route("/v1/radar/value_list_items", post(create_item))
        .route("/v1/radar/value_list_items/list", post(list_items))
        .route("/v1/radar/value_list_items/delete", post(delete_item))
        .route_layer(axum::middleware::from_fn_with_state(from_api, require_caller));
    scoring.merge(admin).with_state(s)
}
