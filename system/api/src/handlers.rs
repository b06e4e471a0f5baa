//! The endpoints: payment methods, customers, payment intents, refunds, charges and events.

use crate::params::Params;
use crate::records::{CustomerRecord, PaymentMethodRecord};
use crate::{ok, to_json, Answer, Api, Ctx};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use pay_core::{
    AccountId, ApiError, ChargeId, Currency, CustomerId, Event, PaymentIntentId, PaymentMethodId, RefundId,
    SecretString,
};
use pay_proto::objects::*;
use pay_proto::payments::*;
use pay_proto::tokenizer::{CardInput, TokenizeRequest};
use pay_store::{ConflictKind, EventQuery, Index, ListQuery, StoreError, Table, Versioned};
use serde::Serialize;
use std::sync::Arc;

type S = State<Arc<Api>>;

fn store(e: StoreError) -> ApiError {
    e.into_api_error()
}

pub(crate) fn call(e: pay_net::CallError) -> ApiError {
    e.into_api_error()
}

// ----- shared parsing -----

/// Stripe's list parameters.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// 1–100, default 10.
    pub limit: u32,
    /// Cursor (older than).
    pub starting_after: Option<String>,
    /// Cursor (newer than).
    pub ending_before: Option<String>,
    /// `created[gte]` (or `created=` exact), Unix seconds.
    pub created_gte: Option<i64>,
    /// `created[lt]` (derived from lt/lte/exact), Unix seconds.
    pub created_lt: Option<i64>,
}

fn list_params(p: &mut Params) -> Result<ListParams, ApiError> {
    let limit = match p.opt_i64("limit")? {
        None => 10,
        Some(l) if (1..=100).contains(&l) => l as u32,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "limit",
                "parameter_invalid_integer",
                "Invalid limit: must be between 1 and 100.",
            ))
        }
    };
    let starting_after = p.opt_text("starting_after", 255)?;
    let ending_before = p.opt_text("ending_before", 255)?;
    if starting_after.is_some() && ending_before.is_some() {
        return Err(ApiError::invalid_request(
            "You may only specify one of these parameters: ending_before, starting_after.",
        ));
    }
    let (mut gte, mut lt) = (None, None);
    if p.has("created") {
        match p.opt_map("created") {
            Ok(Some(mut c)) => {
                if let Some(v) = c.opt_i64("gte")? {
                    gte = Some(v);
                }
                if let Some(v) = c.opt_i64("gt")? {
                    gte = Some(v.saturating_add(1));
                }
                if let Some(v) = c.opt_i64("lt")? {
                    lt = Some(v);
                }
                if let Some(v) = c.opt_i64("lte")? {
                    lt = Some(v.saturating_add(1));
                }
                c.finish()?;
            }
            Ok(None) => {}
            Err(_) => {
                let exact = p.opt_i64("created")?;
                gte = exact;
                lt = exact.map(|e| e.saturating_add(1));
            }
        }
    }
    Ok(ListParams {
        limit,
        starting_after,
        ending_before,
        created_gte: gte,
        created_lt: lt,
    })
}

fn list_json<T: serde::Serialize>(data: Vec<T>, has_more: bool, url: &str) -> Answer {
    ok(&List::new(data, has_more, url))
}

fn parse_currency(p: &mut Params, name: &str) -> Result<Option<Currency>, ApiError> {
    match p.opt_str(name)? {
        None => Ok(None),
        Some(c) => Currency::parse(&c)
            .map(Some)
            .map_err(|e| ApiError::invalid_param(&p.path(name), "parameter_invalid", format!("Invalid currency: {e}"))),
    }
}

fn parse_id<T: std::str::FromStr>(value: &str, kind: &str, param: &str) -> Result<T, ApiError> {
    value.parse::<T>().map_err(|_| ApiError::no_such(kind, param, value))
}

fn opt_id<T: std::str::FromStr>(p: &mut Params, name: &str, kind: &str) -> Result<Option<T>, ApiError> {
    match p.opt_text(name, 255)? {
        None => Ok(None),
        Some(v) => parse_id::<T>(&v, kind, name).map(Some),
    }
}

fn validate_email(p: &Params, name: &str, e: &Option<String>) -> Result<(), ApiError> {
    if let Some(e) = e {
        let valid = e.len() <= 512
            && e.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'))
            && !e.contains(char::is_whitespace);
        if !valid {
            return Err(ApiError::invalid_param(
                &p.path(name),
                "email_invalid",
                "Invalid email address.",
            ));
        }
    }
    Ok(())
}

fn address(p: &mut Params) -> Result<Option<Address>, ApiError> {
    let Some(mut a) = p.opt_map("address")? else {
        return Ok(None);
    };
    let addr = Address {
        city: a.opt_text("city", 200)?,
        country: a.opt_text("country", 2)?,
        line1: a.opt_text("line1", 200)?,
        line2: a.opt_text("line2", 200)?,
        postal_code: a.opt_text("postal_code", 20)?,
        state: a.opt_text("state", 200)?,
    };
    a.finish()?;
    Ok(Some(addr))
}

fn merge_metadata(base: &mut Metadata, changes: Option<Option<Metadata>>) {
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

fn new_metadata(changes: Option<Option<Metadata>>) -> Metadata {
    let mut m = Metadata::new();
    merge_metadata(&mut m, changes);
    m
}

// ----- payment methods -----

/// Parsed `POST /v1/payment_methods`.
pub struct CreatePm {
    card: CardInput,
    billing: BillingDetails,
    metadata: Metadata,
    expand: Vec<String>,
}

fn parse_create_pm(p: &mut Params) -> Result<CreatePm, ApiError> {
    match p.opt_str("type")?.as_deref() {
        Some("card") => {}
        None => return Err(ApiError::missing_param("type")),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "type",
                "parameter_invalid",
                "Invalid type: only card payment methods are supported.",
            ))
        }
    }
    let Some(mut c) = p.opt_map("card")? else {
        return Err(ApiError::missing_param("card"));
    };
    let number = c.req_str("number")?;
    let exp_month = c.req_i64("exp_month")?;
    let exp_year = c.req_i64("exp_year")?;
    let cvc = c.opt_text("cvc", 8)?;
    c.finish()?;
    let exp_month = u32::try_from(exp_month).map_err(|_| {
        ApiError::card_declined("invalid_expiry_month", None, "Your card's expiration month is invalid.")
            .with_param("card[exp_month]")
    })?;
    let exp_year = i32::try_from(exp_year).map_err(|_| {
        ApiError::card_declined("invalid_expiry_year", None, "Your card's expiration year is invalid.")
            .with_param("card[exp_year]")
    })?;
    let mut billing = BillingDetails::default();
    if let Some(mut b) = p.opt_map("billing_details")? {
        billing.name = b.opt_text("name", 200)?;
        billing.email = b.opt_text("email", 512)?;
        validate_email(&b, "email", &billing.email)?;
        billing.phone = b.opt_text("phone", 40)?;
        billing.address = address(&mut b)?.unwrap_or_default();
        b.finish()?;
    }
    let metadata = new_metadata(p.metadata()?);
    let expand = p.expand()?;
    Ok(CreatePm {
        card: CardInput {
            number: SecretString::new(number),
            exp_month,
            exp_year,
            cvc: cvc.map(SecretString::new),
        },
        billing,
        metadata,
        expand,
    })
}

fn pm_object(
    id: PaymentMethodId,
    card: &pay_core::CardSummary,
    cvc_held: bool,
    billing: BillingDetails,
    metadata: Metadata,
    created: i64,
) -> PaymentMethod {
    PaymentMethod {
        id,
        object: "payment_method".into(),
        billing_details: billing,
        card: PaymentMethodCard {
            brand: card.brand,
            checks: CardChecks {
                cvc_check: if cvc_held { Some(CheckResult::Unchecked) } else { None },
                ..CardChecks::default()
            },
            country: card.country.clone(),
            display_brand: card.brand.as_str().to_owned(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            fingerprint: card.fingerprint.clone(),
            funding: card.funding.clone(),
            last4: card.last4.clone(),
            networks: CardNetworks {
                available: vec![card.brand.as_str().to_owned()],
                preferred: None,
            },
        },
        created,
        customer: None,
        livemode: false,
        metadata,
        kind: "card".into(),
    }
}

impl Api {
    async fn load_pm(&self, account: &AccountId, id: &str) -> Result<Versioned<PaymentMethodRecord>, ApiError> {
        let _: PaymentMethodId = parse_id(id, "PaymentMethod", "payment_method")?;
        self.db
            .get_owned::<PaymentMethodRecord>(account.as_str(), id)
            .await
            .map_err(store)?
            .ok_or_else(|| ApiError::no_such("PaymentMethod", "payment_method", id))
    }

    async fn load_customer(
        &self,
        account: &AccountId,
        id: &str,
        param: &str,
    ) -> Result<Versioned<CustomerRecord>, ApiError> {
        let _: CustomerId = parse_id(id, "customer", param)?;
        match self
            .db
            .get_owned::<CustomerRecord>(account.as_str(), id)
            .await
            .map_err(store)?
        {
            Some(c) if !c.value.deleted => Ok(c),
            _ => Err(ApiError::no_such("customer", param, id)),
        }
    }

    fn event<T: Serialize>(&self, ctx: &Ctx, kind: &str, object: &T) -> Event {
        let mut e = Event::new(
            pay_core::EventId::generate(self.env.entropy.as_ref()),
            &ctx.principal.account,
            kind,
            pay_core::JsonText::of_or_null(object),
            self.env.now(),
        );
        e.request.id = Some(ctx.request_id.clone());
        e.request.idempotency_key = ctx.idempotency_key.clone();
        e
    }

    async fn exec_create_pm(&self, ctx: &Ctx, req: CreatePm, key: Option<String>) -> Answer {
        let account = &ctx.principal.account;
        let id = match &key {
            Some(k) => PaymentMethodId::derived(&[account.as_str(), k]),
            None => PaymentMethodId::generate(self.env.entropy.as_ref()),
        };
        // No read first: a re-run of the request (after a crash or a released 5xx) is found by
        // the insert's conflict below; the tokenizer likewise finds the card it vaulted then.
        let tok = self
            .tokenizer
            .tokenize(&TokenizeRequest {
                account: account.clone(),
                card: req.card,
                request_key: key.clone(),
            })
            .await
            .map_err(call)?;
        let now = self.env.now();
        let pm = pm_object(id, &tok.card, tok.cvc_held, req.billing, req.metadata, now.unix_secs());
        let rec = PaymentMethodRecord {
            account: account.clone(),
            pm: pm.clone(),
            token: tok.token,
            card: tok.card,
            created_ms: now.millis(),
        };
        let mut txn = self.db.txn();
        txn.insert(&rec);
        match self.db.commit(txn).await {
            Ok(_) => {}
            Err(StoreError::Conflict {
                kind: ConflictKind::Exists,
                ..
            }) => {
                // An earlier run of this request created it: answer with what it created.
                let existing = self.load_pm(account, pm.id.as_str()).await?;
                return self.render_pm(existing.value.pm, &req.expand).await;
            }
            Err(e) => return Err(store(e)),
        }
        self.metrics.inc(
            "api_payment_methods_created_total",
            "PaymentMethods created.",
            &[("brand", rec.card.brand.as_str())],
            1,
        );
        self.render_pm(pm, &req.expand).await
    }

    async fn render_pm(&self, pm: PaymentMethod, expand: &[String]) -> Answer {
        let mut v = to_json(&pm);
        for e in expand {
            match e.as_str() {
                "customer" => {
                    if let Some(c) = &pm.customer {
                        if let Some(rec) = self.db.get::<CustomerRecord>(c.as_str()).await.map_err(store)? {
                            v["customer"] = to_json(&rec.value.customer);
                        }
                    }
                }
                other => return Err(cannot_expand(other)),
            }
        }
        Ok((StatusCode::OK, v))
    }

    async fn exec_get_pm(&self, ctx: &Ctx, id: String, mut p: Params) -> Answer {
        let expand = p.expand()?;
        p.finish()?;
        let rec = self.load_pm(&ctx.principal.account, &id).await?;
        self.render_pm(rec.value.pm, &expand).await
    }

    async fn exec_list_pm(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let lp = list_params(&mut p)?;
        let customer: Option<CustomerId> = opt_id(&mut p, "customer", "customer")?;
        if let Some(t) = p.opt_str("type")? {
            if t != "card" {
                return list_json(Vec::<PaymentMethod>::new(), false, "/v1/payment_methods");
            }
        }
        p.finish()?;
        let page = self
            .db
            .list::<PaymentMethodRecord>(list_query(
                ctx,
                Table::PaymentMethods,
                &lp,
                customer.map(|c| (Index::K1, c.to_string())),
            ))
            .await
            .map_err(list_err)?;
        list_json(
            page.items.into_iter().map(|v| v.value.pm).collect(),
            page.has_more,
            "/v1/payment_methods",
        )
    }

    async fn exec_update_pm(&self, ctx: &Ctx, id: String, req: UpdatePm, _key: Option<String>) -> Answer {
        for _ in 0..8 {
            let Versioned {
                version,
                value: mut rec,
            } = self.load_pm(&ctx.principal.account, &id).await?;
            merge_metadata(&mut rec.pm.metadata, req.metadata.clone());
            if let Some(b) = &req.billing {
                rec.pm.billing_details = b.clone();
            }
            if let Some(m) = req.exp_month {
                rec.pm.card.exp_month = m;
                rec.card.exp_month = m;
            }
            if let Some(y) = req.exp_year {
                rec.pm.card.exp_year = y;
                rec.card.exp_year = y;
            }
            let mut txn = self.db.txn();
            txn.update(version, &rec);
            match self.db.commit(txn).await {
                Ok(_) => return self.render_pm(rec.pm, &req.expand).await,
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(ApiError::unavailable("Concurrent updates; retry."))
    }

    async fn exec_attach_pm(&self, ctx: &Ctx, id: String, req: AttachPm, _key: Option<String>) -> Answer {
        let account = &ctx.principal.account;
        self.load_customer(account, req.customer.as_str(), "customer").await?;
        for _ in 0..8 {
            let Versioned {
                version,
                value: mut rec,
            } = self.load_pm(account, &id).await?;
            match &rec.pm.customer {
                Some(c) if *c == req.customer => return self.render_pm(rec.pm, &req.expand).await,
                Some(_) => {
                    return Err(ApiError::unexpected_state(
                        "payment_method_unexpected_state",
                        "The payment method you provided has already been attached to a customer.",
                    ))
                }
                None => {}
            }
            rec.pm.customer = Some(req.customer.clone());
            let mut txn = self.db.txn();
            txn.update(version, &rec)
                .event(self.event(ctx, "payment_method.attached", &rec.pm));
            match self.db.commit(txn).await {
                Ok(_) => return self.render_pm(rec.pm, &req.expand).await,
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(ApiError::unavailable("Concurrent updates; retry."))
    }

    async fn exec_detach_pm(&self, ctx: &Ctx, id: String, expand: Vec<String>, _key: Option<String>) -> Answer {
        for _ in 0..8 {
            let Versioned {
                version,
                value: mut rec,
            } = self.load_pm(&ctx.principal.account, &id).await?;
            if rec.pm.customer.is_none() {
                return Err(ApiError::unexpected_state(
                    "payment_method_unexpected_state",
                    "The payment method you provided is not attached to a customer so detachment is impossible.",
                ));
            }
            rec.pm.customer = None;
            let mut txn = self.db.txn();
            txn.update(version, &rec)
                .event(self.event(ctx, "payment_method.detached", &rec.pm));
            match self.db.commit(txn).await {
                Ok(_) => return self.render_pm(rec.pm, &expand).await,
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(ApiError::unavailable("Concurrent updates; retry."))
    }
}

/// Parsed `POST /v1/payment_methods/{id}`.
pub struct UpdatePm {
    metadata: Option<Option<Metadata>>,
    billing: Option<BillingDetails>,
    exp_month: Option<u32>,
    exp_year: Option<i32>,
    expand: Vec<String>,
}

fn parse_update_pm(p: &mut Params) -> Result<UpdatePm, ApiError> {
    let metadata = p.metadata()?;
    let billing = match p.opt_map("billing_details")? {
        None => None,
        Some(mut b) => {
            let mut bd = BillingDetails {
                name: b.opt_text("name", 200)?,
                email: b.opt_text("email", 512)?,
                phone: b.opt_text("phone", 40)?,
                ..BillingDetails::default()
            };
            validate_email(&b, "email", &bd.email)?;
            bd.address = address(&mut b)?.unwrap_or_default();
            b.finish()?;
            Some(bd)
        }
    };
    let (mut exp_month, mut exp_year) = (None, None);
    if let Some(mut c) = p.opt_map("card")? {
        exp_month = c
            .opt_i64("exp_month")?
            .map(|m| {
                u32::try_from(m).ok().filter(|m| (1..=12).contains(m)).ok_or_else(|| {
                    ApiError::invalid_param(
                        "card[exp_month]",
                        "invalid_expiry_month",
                        "Your card's expiration month is invalid.",
                    )
                })
            })
            .transpose()?;
        exp_year = c
            .opt_i64("exp_year")?
            .map(|y| {
                i32::try_from(y).map_err(|_| {
                    ApiError::invalid_param(
                        "card[exp_year]",
                        "invalid_expiry_year",
                        "Your card's expiration year is invalid.",
                    )
                })
            })
            .transpose()?;
        c.finish()?;
    }
    Ok(UpdatePm {
        metadata,
        billing,
        exp_month,
        exp_year,
        expand: p.expand()?,
    })
}

/// Parsed attach.
pub struct AttachPm {
    customer: CustomerId,
    expand: Vec<String>,
}

fn parse_attach(p: &mut Params) -> Result<AttachPm, ApiError> {
    let c = p.req_str("customer")?;
    Ok(AttachPm {
        customer: parse_id(&c, "customer", "customer")?,
        expand: p.expand()?,
    })
}

fn cannot_expand(path: &str) -> ApiError {
    let shown: String = path.chars().take(64).collect();
    ApiError::invalid_param(
        "expand",
        "parameter_invalid",
        format!("This property cannot be expanded ({shown})."),
    )
}

fn list_query(ctx: &Ctx, table: Table, lp: &ListParams, filter: Option<(Index, String)>) -> ListQuery {
    ListQuery {
        table,
        account: ctx.principal.account.to_string(),
        filter,
        created_gte: lp.created_gte.map(|s| s.saturating_mul(1000)),
        created_lt: lp.created_lt.map(|s| s.saturating_mul(1000)),
        starting_after: lp.starting_after.clone(),
        ending_before: lp.ending_before.clone(),
        limit: lp.limit,
    }
}

fn list_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(m) if m.contains("cursor") => ApiError::invalid_param(
            "starting_after",
            "resource_missing",
            "The object used as a pagination cursor does not exist.",
        )
        .with_status(404),
        other => store(other),
    }
}

fn list_request(lp: &ListParams) -> ListRequest {
    ListRequest {
        limit: lp.limit,
        starting_after: lp.starting_after.clone(),
        ending_before: lp.ending_before.clone(),
        created_gte: lp.created_gte,
        created_lt: lp.created_lt,
        ..ListRequest::default()
    }
}

// ----- customers -----

/// Parsed customer create/update.
pub struct CustomerParams {
    email: Option<Option<String>>,
    name: Option<Option<String>>,
    description: Option<Option<String>>,
    phone: Option<Option<String>>,
    address: Option<Address>,
    metadata: Option<Option<Metadata>>,
    payment_method: Option<PaymentMethodId>,
    default_payment_method: Option<PaymentMethodId>,
}

fn parse_customer(p: &mut Params) -> Result<CustomerParams, ApiError> {
    let email = p.opt_clearable("email", 512)?;
    if let Some(Some(e)) = &email {
        validate_email(p, "email", &Some(e.clone()))?;
    }
    let default_payment_method = match p.opt_map("invoice_settings")? {
        None => None,
        Some(mut s) => {
            let d = opt_id(&mut s, "default_payment_method", "PaymentMethod")?;
            s.finish()?;
            d
        }
    };
    Ok(CustomerParams {
        email,
        name: p.opt_clearable("name", 256)?,
        description: p.opt_clearable("description", 350)?,
        phone: p.opt_clearable("phone", 40)?,
        address: address(p)?,
        metadata: p.metadata()?,
        payment_method: opt_id(p, "payment_method", "PaymentMethod")?,
        default_payment_method,
    })
}

impl Api {
    async fn exec_create_customer(&self, ctx: &Ctx, req: CustomerParams, key: Option<String>) -> Answer {
        let account = &ctx.principal.account;
        let id = match &key {
            Some(k) => CustomerId::derived(&[account.as_str(), k]),
            None => CustomerId::generate(self.env.entropy.as_ref()),
        };
        if let Some(existing) = self
            .db
            .get_owned::<CustomerRecord>(account.as_str(), id.as_str())
            .await
            .map_err(store)?
        {
            return ok(&existing.value.customer);
        }
        let now = self.env.now();
        let customer = Customer {
            id: id.clone(),
            object: "customer".into(),
            address: req.address,
            balance: 0,
            created: now.unix_secs(),
            description: req.description.flatten(),
            email: req.email.flatten(),
            invoice_settings: InvoiceSettings {
                default_payment_method: req.default_payment_method.clone().or(req.payment_method.clone()),
            },
            livemode: false,
            metadata: new_metadata(req.metadata),
            name: req.name.flatten(),
            phone: req.phone.flatten(),
        };
        let rec = CustomerRecord {
            account: account.clone(),
            customer: customer.clone(),
            deleted: false,
            created_ms: now.millis(),
        };
        let mut txn = self.db.txn();
        txn.insert(&rec).event(self.event(ctx, "customer.created", &customer));
        if let Some(pm_id) = &req.payment_method {
            let Versioned { version, value: mut pm } = self.load_pm(account, pm_id.as_str()).await?;
            if pm.pm.customer.is_some() {
                return Err(ApiError::unexpected_state(
                    "payment_method_unexpected_state",
                    "The payment method you provided has already been attached to a customer.",
                )
                .with_param("payment_method"));
            }
            pm.pm.customer = Some(id.clone());
            txn.update(version, &pm)
                .event(self.event(ctx, "payment_method.attached", &pm.pm));
        }
        match self.db.commit(txn).await {
            Ok(_)
            | Err(StoreError::Conflict {
                kind: ConflictKind::Exists,
                ..
            }) => ok(&customer),
            Err(e) => Err(store(e)),
        }
    }

    async fn exec_get_customer(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        let _: CustomerId = parse_id(&id, "customer", "id")?;
        match self
            .db
            .get_owned::<CustomerRecord>(ctx.principal.account.as_str(), &id)
            .await
            .map_err(store)?
        {
            Some(c) if c.value.deleted => ok(&pay_proto::objects::Deleted {
                id,
                object: "customer".into(),
                deleted: true,
            }),
            Some(c) => ok(&c.value.customer),
            None => Err(ApiError::no_such("customer", "id", &id)),
        }
    }

    async fn exec_update_customer(&self, ctx: &Ctx, id: String, req: CustomerParams, _key: Option<String>) -> Answer {
        for _ in 0..8 {
            let Versioned {
                version,
                value: mut rec,
            } = self.load_customer(&ctx.principal.account, &id, "id").await?;
            let before = to_json(&rec.customer);
            let c = &mut rec.customer;
            if let Some(e) = req.email.clone() {
                c.email = e;
            }
            if let Some(n) = req.name.clone() {
                c.name = n;
            }
            if let Some(d) = req.description.clone() {
                c.description = d;
            }
            if let Some(ph) = req.phone.clone() {
                c.phone = ph;
            }
            if let Some(a) = req.address.clone() {
                c.address = Some(a);
            }
            merge_metadata(&mut c.metadata, req.metadata.clone());
            if let Some(d) = &req.default_payment_method {
                self.load_pm(&ctx.principal.account, d.as_str()).await?;
                c.invoice_settings.default_payment_method = Some(d.clone());
            }
            let mut ev = self.event(ctx, "customer.updated", &rec.customer);
            ev.data.previous_attributes = Some(previous_attributes(&before, &to_json(&rec.customer)));
            let mut txn = self.db.txn();
            txn.update(version, &rec).event(ev);
            match self.db.commit(txn).await {
                Ok(_) => return ok(&rec.customer),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(ApiError::unavailable("Concurrent updates; retry."))
    }

    async fn exec_delete_customer(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        for _ in 0..8 {
            let Versioned {
                version,
                value: mut rec,
            } = self.load_customer(&ctx.principal.account, &id, "id").await?;
            rec.deleted = true;
            let mut txn = self.db.txn();
            txn.update(version, &rec)
                .event(self.event(ctx, "customer.deleted", &rec.customer));
            match self.db.commit(txn).await {
                Ok(_) => {
                    return ok(&pay_proto::objects::Deleted {
                        id: id.clone(),
                        object: "customer".into(),
                        deleted: true,
                    })
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(ApiError::unavailable("Concurrent updates; retry."))
    }

    async fn exec_list_customers(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let lp = list_params(&mut p)?;
        let email = p.opt_text("email", 512)?;
        p.finish()?;
        let filter = match email {
            Some(e) => (Index::K1, e.to_lowercase()),
            None => (Index::K2, "live".to_owned()),
        };
        let page = self
            .db
            .list::<CustomerRecord>(list_query(ctx, Table::Customers, &lp, Some(filter)))
            .await
            .map_err(list_err)?;
        list_json(
            page.items.into_iter().map(|v| v.value.customer).collect(),
            page.has_more,
            "/v1/customers",
        )
    }
}

fn previous_attributes(before: &serde_json::Value, after: &serde_json::Value) -> serde_json::Value {
    let mut prev = serde_json::Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (k, v) in b {
            if a.get(k) != Some(v) {
                prev.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::Value::Object(prev)
}

// ----- payment intents -----

/// Parsed `POST /v1/payment_intents`.
pub struct CreatePi {
    amount: i64,
    currency: Currency,
    customer: Option<CustomerId>,
    payment_method: Option<PaymentMethodId>,
    capture_method: CaptureMethod,
    confirmation_method: ConfirmationMethod,
    confirm: bool,
    description: Option<String>,
    metadata: Metadata,
    receipt_email: Option<String>,
    statement_descriptor: Option<String>,
    expand: Vec<String>,
}

fn capture_method(s: Option<String>) -> Option<CaptureMethod> {
    s.map(|s| match s.as_str() {
        "manual" => CaptureMethod::Manual,
        "automatic_async" => CaptureMethod::AutomaticAsync,
        _ => CaptureMethod::Automatic,
    })
}

fn ignore_compat(p: &mut Params) -> Result<(), ApiError> {
    // Accepted for compatibility with SDK defaults; they change nothing for card payments.
    for name in [
        "return_url",
        "off_session",
        "use_stripe_sdk",
        "error_on_requires_action",
        "payment_method_options",
        "mandate_data",
        "setup_future_usage",
        "statement_descriptor_suffix",
    ] {
        p.ignore(name);
    }
    if let Some(types) = p.opt_str_list("payment_method_types")? {
        if !types.is_empty() && !types.iter().any(|t| t == "card") {
            return Err(ApiError::invalid_param(
                "payment_method_types",
                "parameter_invalid",
                "Only card payments are supported.",
            ));
        }
    }
    if let Some(mut apm) = p.opt_map("automatic_payment_methods")? {
        apm.opt_bool("enabled")?;
        apm.opt_enum("allow_redirects", &["always", "never"])?;
        apm.finish()?;
    }
    Ok(())
}

fn parse_create_pi(p: &mut Params) -> Result<CreatePi, ApiError> {
    let amount = p.req_i64("amount")?;
    let currency = parse_currency(p, "currency")?.ok_or_else(|| ApiError::missing_param("currency"))?;
    pay_core::money::validate_charge_amount("amount", amount, currency)?;
    let receipt_email = p.opt_text("receipt_email", 512)?;
    validate_email(p, "receipt_email", &receipt_email)?;
    let r = CreatePi {
        amount,
        currency,
        customer: opt_id(p, "customer", "customer")?,
        payment_method: opt_id(p, "payment_method", "PaymentMethod")?,
        capture_method: capture_method(p.opt_enum("capture_method", &["automatic", "automatic_async", "manual"])?)
            .unwrap_or_default(),
        confirmation_method: match p.opt_enum("confirmation_method", &["automatic", "manual"])?.as_deref() {
            Some("manual") => ConfirmationMethod::Manual,
            _ => ConfirmationMethod::Automatic,
        },
        confirm: p.opt_bool("confirm")?.unwrap_or(false),
        description: p.opt_text("description", 1000)?,
        metadata: new_metadata(p.metadata()?),
        receipt_email,
        statement_descriptor: p.opt_text("statement_descriptor", 22)?,
        expand: p.expand()?,
    };
    ignore_compat(p)?;
    Ok(r)
}

/// Parsed update.
pub struct UpdatePi {
    upd: UpdateIntent,
    payment_method: Option<PaymentMethodId>,
    expand: Vec<String>,
}

fn parse_update_pi(p: &mut Params) -> Result<UpdatePi, ApiError> {
    let mut upd = UpdateIntent {
        amount: p.opt_i64("amount")?,
        currency: parse_currency(p, "currency")?,
        ..UpdateIntent::default()
    };
    // Without a currency the payment service checks the amount against the intent's.
    if let (Some(a), Some(c)) = (upd.amount, upd.currency) {
        pay_core::money::validate_charge_amount("amount", a, c)?;
    }
    if let Some(c) = p.opt_clearable("customer", 255)? {
        upd.customer = Some(
            c.map(|c| parse_id::<CustomerId>(&c, "customer", "customer"))
                .transpose()?,
        );
    }
    upd.capture_method = capture_method(p.opt_enum("capture_method", &["automatic", "automatic_async", "manual"])?);
    upd.description = p.opt_clearable("description", 1000)?;
    match p.metadata()? {
        None => {}
        Some(None) => upd.clear_metadata = true,
        Some(Some(m)) => upd.metadata = Some(m),
    }
    upd.receipt_email = p.opt_clearable("receipt_email", 512)?;
    if let Some(Some(e)) = &upd.receipt_email {
        validate_email(p, "receipt_email", &Some(e.clone()))?;
    }
    upd.statement_descriptor = p.opt_clearable("statement_descriptor", 22)?;
    let payment_method = opt_id(p, "payment_method", "PaymentMethod")?;
    let expand = p.expand()?;
    ignore_compat(p)?;
    Ok(UpdatePi {
        upd,
        payment_method,
        expand,
    })
}

/// Parsed confirm.
pub struct ConfirmPi {
    payment_method: Option<PaymentMethodId>,
    capture_method: Option<CaptureMethod>,
    receipt_email: Option<String>,
    expand: Vec<String>,
}

fn parse_confirm(p: &mut Params) -> Result<ConfirmPi, ApiError> {
    let receipt_email = p.opt_text("receipt_email", 512)?;
    validate_email(p, "receipt_email", &receipt_email)?;
    let r = ConfirmPi {
        payment_method: opt_id(p, "payment_method", "PaymentMethod")?,
        capture_method: capture_method(p.opt_enum("capture_method", &["automatic", "automatic_async", "manual"])?),
        receipt_email,
        expand: p.expand()?,
    };
    p.ignore("client_secret");
    ignore_compat(p)?;
    Ok(r)
}

/// Parsed capture.
pub struct CapturePi {
    amount_to_capture: Option<i64>,
    expand: Vec<String>,
}

fn parse_capture(p: &mut Params) -> Result<CapturePi, ApiError> {
    let r = CapturePi {
        amount_to_capture: p.opt_i64("amount_to_capture")?,
        expand: p.expand()?,
    };
    p.ignore("final_capture");
    p.ignore("statement_descriptor");
    Ok(r)
}

/// Parsed cancel.
pub struct CancelPi {
    reason: Option<String>,
    expand: Vec<String>,
}

fn parse_cancel(p: &mut Params) -> Result<CancelPi, ApiError> {
    Ok(CancelPi {
        reason: p.opt_enum(
            "cancellation_reason",
            &["duplicate", "fraudulent", "requested_by_customer", "abandoned"],
        )?,
        expand: p.expand()?,
    })
}

impl Api {
    /// Resolves a payment method for use with an intent of `customer`.
    async fn pm_for_intent(
        &self,
        ctx: &Ctx,
        pm: &PaymentMethodId,
        customer: Option<&CustomerId>,
    ) -> Result<PaymentMethodRef, ApiError> {
        let rec = self.load_pm(&ctx.principal.account, pm.as_str()).await?;
        if let (Some(attached), Some(c)) = (&rec.value.pm.customer, customer) {
            if attached != c {
                return Err(ApiError::invalid_param(
                    "payment_method",
                    "payment_method_unexpected_state",
                    "The provided PaymentMethod is attached to a different Customer.",
                ));
            }
        }
        if rec.value.pm.customer.is_some() && customer.is_none() {
            return Err(ApiError::invalid_param(
                "payment_method",
                "payment_method_unexpected_state",
                "The provided PaymentMethod is attached to a Customer; pass the same customer with the PaymentIntent.",
            ));
        }
        Ok(rec.value.as_ref_for_payments())
    }

    async fn context_for(&self, ctx: &Ctx, customer: Option<&CustomerId>) -> RequestContext {
        let mut rc = ctx.request_context();
        if let Some(c) = customer {
            if let Ok(Some(rec)) = self.db.get::<CustomerRecord>(c.as_str()).await {
                rc.email = rec.value.customer.email.clone();
                rc.customer_created = Some(rec.value.customer.created);
            }
        }
        rc
    }

    /// Renders an intent, expanding what was asked.
    async fn render_pi(&self, ctx: &Ctx, pi: &PaymentIntent, expand: &[String]) -> Result<serde_json::Value, ApiError> {
        let mut v = to_json(pi);
        for e in expand {
            match e.as_str() {
                "latest_charge" => {
                    if let Some(ch) = &pi.latest_charge {
                        v["latest_charge"] = to_json(
                            &self
                                .payments
                                .get_charge(&ctx.principal.account, ch)
                                .await
                                .map_err(call)?,
                        );
                    }
                }
                "payment_method" => {
                    if let Some(pm) = &pi.payment_method {
                        v["payment_method"] =
                            to_json(&self.load_pm(&ctx.principal.account, pm.as_str()).await?.value.pm);
                    }
                }
                "customer" => {
                    if let Some(c) = &pi.customer {
                        if let Some(rec) = self.db.get::<CustomerRecord>(c.as_str()).await.map_err(store)? {
                            v["customer"] = to_json(&rec.value.customer);
                        }
                    }
                }
                other => return Err(cannot_expand(other)),
            }
        }
        Ok(v)
    }

    async fn pi_answer(&self, ctx: &Ctx, r: Result<PaymentIntent, pay_net::CallError>, expand: &[String]) -> Answer {
        match r {
            Ok(pi) => {
                self.metrics.inc(
                    "payments_total",
                    "PaymentIntent answers by status.",
                    &[("status", pi.status.as_str())],
                    1,
                );
                Ok((StatusCode::OK, self.render_pi(ctx, &pi, expand).await?))
            }
            Err(e) => {
                let e = call(e);
                if e.status == 402 {
                    self.metrics.inc(
                        "payments_total",
                        "PaymentIntent answers by status.",
                        &[("status", "declined")],
                        1,
                    );
                }
                Err(e)
            }
        }
    }

    async fn exec_create_pi(&self, ctx: &Ctx, req: CreatePi, key: Option<String>) -> Answer {
        let account = &ctx.principal.account;
        if let Some(c) = &req.customer {
            self.load_customer(account, c.as_str(), "customer").await?;
        }
        let pm = match &req.payment_method {
            Some(pm) => Some(self.pm_for_intent(ctx, pm, req.customer.as_ref()).await?),
            None => None,
        };
        if req.confirm && pm.is_none() {
            return Err(ApiError::missing_param("payment_method")
                .tap_message("You must provide a payment_method when confirming a PaymentIntent at creation."));
        }
        let create = CreateIntent {
            account: account.clone(),
            request_key: key,
            amount: req.amount,
            currency: req.currency,
            customer: req.customer.clone(),
            payment_method: pm,
            capture_method: req.capture_method,
            confirmation_method: req.confirmation_method,
            description: req.description,
            metadata: req.metadata,
            receipt_email: req.receipt_email,
            statement_descriptor: req.statement_descriptor,
            confirm: req.confirm,
            context: self.context_for(ctx, req.customer.as_ref()).await,
        };
        let r = self.payments.create_intent(&create).await;
        self.pi_answer(ctx, r, &req.expand).await
    }

    async fn exec_get_pi(&self, ctx: &Ctx, id: String, mut p: Params) -> Answer {
        let expand = p.expand()?;
        let secret = p.opt_str("client_secret")?;
        p.finish()?;
        let pid: PaymentIntentId = parse_id(&id, "payment_intent", "intent")?;
        let pi = self
            .payments
            .get_intent(&ctx.principal.account, &pid)
            .await
            .map_err(call)?;
        if ctx.principal.kind == crate::keys::KeyKind::Publishable && (secret.is_none() || secret != pi.client_secret) {
            return Err(ApiError::no_such("payment_intent", "intent", &id));
        }
        let mut v = self.render_pi(ctx, &pi, &expand).await?;
        if ctx.principal.kind == crate::keys::KeyKind::Publishable {
            // A browser sees only what it needs.
            if let Some(o) = v.as_object_mut() {
                o.remove("metadata");
                o.remove("customer");
            }
        }
        Ok((StatusCode::OK, v))
    }

    async fn exec_update_pi(&self, ctx: &Ctx, id: String, mut req: UpdatePi, _key: Option<String>) -> Answer {
        let pid: PaymentIntentId = parse_id(&id, "payment_intent", "intent")?;
        if let Some(pm) = &req.payment_method {
            let current = self
                .payments
                .get_intent(&ctx.principal.account, &pid)
                .await
                .map_err(call)?;
            let customer = match &req.upd.customer {
                Some(c) => c.clone(),
                None => current.customer.clone(),
            };
            req.upd.payment_method = Some(self.pm_for_intent(ctx, pm, customer.as_ref()).await?);
        }
        if let Some(Some(c)) = &req.upd.customer {
            self.load_customer(&ctx.principal.account, c.as_str(), "customer")
                .await?;
        }
        let r = self
            .payments
            .update_intent(&ctx.principal.account, &pid, &req.upd)
            .await;
        self.pi_answer(ctx, r, &req.expand).await
    }

    async fn exec_list_pi(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let lp = list_params(&mut p)?;
        let customer: Option<CustomerId> = opt_id(&mut p, "customer", "customer")?;
        p.finish()?;
        let req = ListRequest {
            customer,
            ..list_request(&lp)
        };
        let page = self
            .payments
            .list_intents(&ctx.principal.account, &req)
            .await
            .map_err(call)?;
        list_json(page.data, page.has_more, "/v1/payment_intents")
    }

    async fn exec_confirm(&self, ctx: &Ctx, id: String, req: ConfirmPi, _key: Option<String>) -> Answer {
        let pid: PaymentIntentId = parse_id(&id, "payment_intent", "intent")?;
        let current = self
            .payments
            .get_intent(&ctx.principal.account, &pid)
            .await
            .map_err(call)?;
        let pm = match &req.payment_method {
            Some(pm) => Some(self.pm_for_intent(ctx, pm, current.customer.as_ref()).await?),
            None => None,
        };
        let confirm = ConfirmIntent {
            payment_method: pm,
            capture_method: req.capture_method,
            receipt_email: req.receipt_email,
            context: self.context_for(ctx, current.customer.as_ref()).await,
        };
        let r = self
            .payments
            .confirm_intent(&ctx.principal.account, &pid, &confirm)
            .await;
        self.pi_answer(ctx, r, &req.expand).await
    }

    async fn exec_capture(&self, ctx: &Ctx, id: String, req: CapturePi, _key: Option<String>) -> Answer {
        let pid: PaymentIntentId = parse_id(&id, "payment_intent", "intent")?;
        let r = self
            .payments
            .capture_intent(
                &ctx.principal.account,
                &pid,
                &CaptureIntent {
                    amount_to_capture: req.amount_to_capture,
                    context: ctx.request_context(),
                },
            )
            .await;
        self.pi_answer(ctx, r, &req.expand).await
    }

    async fn exec_cancel(&self, ctx: &Ctx, id: String, req: CancelPi, _key: Option<String>) -> Answer {
        let pid: PaymentIntentId = parse_id(&id, "payment_intent", "intent")?;
        let r = self
            .payments
            .cancel_intent(
                &ctx.principal.account,
                &pid,
                &CancelIntent {
                    cancellation_reason: req.reason,
                    context: ctx.request_context(),
                },
            )
            .await;
        self.pi_answer(ctx, r, &req.expand).await
    }
}

trait TapMessage {
    fn tap_message(self, m: &str) -> Self;
}

impl TapMessage for ApiError {
    fn tap_message(mut self, m: &str) -> Self {
        self.message = m.to_owned();
        self
    }
}

// ----- refunds and charges -----

/// Parsed refund create.
pub struct CreateRefundParams {
    payment_intent: Option<PaymentIntentId>,
    charge: Option<ChargeId>,
    amount: Option<i64>,
    reason: Option<String>,
    metadata: Metadata,
    expand: Vec<String>,
}

fn parse_create_refund(p: &mut Params) -> Result<CreateRefundParams, ApiError> {
    let r = CreateRefundParams {
        payment_intent: opt_id(p, "payment_intent", "payment_intent")?,
        charge: opt_id(p, "charge", "charge")?,
        amount: p.opt_i64("amount")?,
        reason: p.opt_enum("reason", &["duplicate", "fraudulent", "requested_by_customer"])?,
        metadata: new_metadata(p.metadata()?),
        expand: p.expand()?,
    };
    if r.payment_intent.is_none() && r.charge.is_none() {
        return Err(
            ApiError::missing_param("payment_intent").tap_message("One of charge or payment_intent is required.")
        );
    }
    if r.payment_intent.is_some() && r.charge.is_some() {
        return Err(ApiError::invalid_request(
            "You can only pass one of charge or payment_intent.",
        ));
    }
    if let Some(a) = r.amount {
        if a <= 0 {
            return Err(ApiError::invalid_param(
                "amount",
                "parameter_invalid_integer",
                "The refund amount must be a positive integer.",
            ));
        }
    }
    p.ignore("instructions_email");
    Ok(r)
}

impl Api {
    async fn exec_create_refund(&self, ctx: &Ctx, req: CreateRefundParams, key: Option<String>) -> Answer {
        let create = CreateRefund {
            account: ctx.principal.account.clone(),
            request_key: key,
            payment_intent: req.payment_intent,
            charge: req.charge,
            amount: req.amount,
            reason: req.reason,
            metadata: req.metadata,
            context: ctx.request_context(),
        };
        let refund = self.payments.create_refund(&create).await.map_err(call)?;
        self.metrics.inc(
            "refunds_total",
            "Refunds by status.",
            &[("status", &format!("{:?}", refund.status).to_lowercase())],
            1,
        );
        self.render_refund(ctx, refund, &req.expand).await
    }

    async fn render_refund(&self, ctx: &Ctx, refund: Refund, expand: &[String]) -> Answer {
        let mut v = to_json(&refund);
        for e in expand {
            match e.as_str() {
                "charge" => {
                    if let Some(c) = &refund.charge {
                        v["charge"] = to_json(
                            &self
                                .payments
                                .get_charge(&ctx.principal.account, c)
                                .await
                                .map_err(call)?,
                        );
                    }
                }
                "payment_intent" => {
                    if let Some(p) = &refund.payment_intent {
                        v["payment_intent"] = to_json(
                            &self
                                .payments
                                .get_intent(&ctx.principal.account, p)
                                .await
                                .map_err(call)?,
                        );
                    }
                }
                other => return Err(cannot_expand(other)),
            }
        }
        Ok((StatusCode::OK, v))
    }

    async fn exec_get_refund(&self, ctx: &Ctx, id: String, mut p: Params) -> Answer {
        let expand = p.expand()?;
        p.finish()?;
        let rid: RefundId = parse_id(&id, "refund", "refund")?;
        let r = self
            .payments
            .get_refund(&ctx.principal.account, &rid)
            .await
            .map_err(call)?;
        self.render_refund(ctx, r, &expand).await
    }

    async fn exec_list_refunds(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let lp = list_params(&mut p)?;
        let charge = opt_id(&mut p, "charge", "charge")?;
        let payment_intent = opt_id(&mut p, "payment_intent", "payment_intent")?;
        p.finish()?;
        let req = ListRequest {
            charge,
            payment_intent,
            ..list_request(&lp)
        };
        let page = self
            .payments
            .list_refunds(&ctx.principal.account, &req)
            .await
            .map_err(call)?;
        list_json(page.data, page.has_more, "/v1/refunds")
    }

    async fn exec_get_charge(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        let cid: ChargeId = parse_id(&id, "charge", "charge")?;
        ok(&self
            .payments
            .get_charge(&ctx.principal.account, &cid)
            .await
            .map_err(call)?)
    }

    async fn exec_list_charges(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let lp = list_params(&mut p)?;
        let payment_intent = opt_id(&mut p, "payment_intent", "payment_intent")?;
        p.finish()?;
        let req = ListRequest {
            payment_intent,
            ..list_request(&lp)
        };
        let page = self
            .payments
            .list_charges(&ctx.principal.account, &req)
            .await
            .map_err(call)?;
        list_json(page.data, page.has_more, "/v1/charges")
    }

    // ----- events -----

    async fn exec_list_events(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let lp = list_params(&mut p)?;
        let kind = p.opt_text("type", 100)?;
        let types = p.opt_str_list("types")?;
        p.ignore("delivery_success");
        p.finish()?;
        if kind.is_some() && types.is_some() {
            return Err(ApiError::invalid_request(
                "You may only specify one of these parameters: type, types.",
            ));
        }
        if lp.created_lt.is_some() {
            // Events are listed by sequence; an upper time bound is applied after the fact.
        }
        let q = EventQuery {
            account: ctx.principal.account.to_string(),
            kind,
            object_id: None,
            created_gte: lp.created_gte,
            starting_after: lp.starting_after.clone(),
            ending_before: lp.ending_before.clone(),
            limit: if types.is_some() { 100 } else { lp.limit },
        };
        let page = self.db.list_events(q).await.map_err(|e| match e {
            StoreError::Invalid(m) if m.contains("cursor") => ApiError::no_such(
                "event",
                "starting_after",
                lp.starting_after
                    .as_deref()
                    .or(lp.ending_before.as_deref())
                    .unwrap_or(""),
            ),
            other => store(other),
        })?;
        let mut data: Vec<Event> = page.items.into_iter().map(|e| render_event(e.event)).collect();
        let mut has_more = page.has_more;
        if let Some(types) = &types {
            data.retain(|e| types.iter().any(|t| pay_store::event_kind_matches(t, &e.kind)));
            if data.len() > lp.limit as usize {
                data.truncate(lp.limit as usize);
                has_more = true;
            }
        }
        if let Some(lt) = lp.created_lt {
            data.retain(|e| e.created < lt);
        }
        list_json(data, has_more, "/v1/events")
    }

    async fn exec_get_event(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        let _: pay_core::EventId = parse_id(&id, "event", "id")?;
        match self
            .db
            .get_event(ctx.principal.account.as_str(), &id)
            .await
            .map_err(store)?
        {
            Some(e) => ok(&render_event(e.event)),
            None => Err(ApiError::no_such("event", "id", &id)),
        }
    }
}

/// An event as the API shows it (the internal account scope is not part of Stripe's object).
pub fn render_event(mut e: Event) -> Event {
    e.account = None;
    e
}

post_handler!(create_pm, parse_create_pm, exec_create_pm);
post_handler!(update_pm, path, parse_update_pm, exec_update_pm);
post_handler!(attach_pm, path, parse_attach, exec_attach_pm);
post_handler!(detach_pm, path, |p: &mut Params| p.expand(), exec_detach_pm);
get_handler!(get_pm, path, exec_get_pm);
get_handler!(list_pm, exec_list_pm);
post_handler!(create_customer, parse_customer, exec_create_customer);
post_handler!(update_customer, path, parse_customer, exec_update_customer);
get_handler!(get_customer, path, exec_get_customer);
get_handler!(delete_customer, path, exec_delete_customer);
get_handler!(list_customers, exec_list_customers);
post_handler!(create_pi, parse_create_pi, exec_create_pi);
post_handler!(update_pi, path, parse_update_pi, exec_update_pi);
post_handler!(confirm_pi, path, parse_confirm, exec_confirm);
post_handler!(capture_pi, path, parse_capture, exec_capture);
post_handler!(cancel_pi, path, parse_cancel, exec_cancel);
get_handler!(get_pi, path, exec_get_pi);
get_handler!(list_pi, exec_list_pi);
post_handler!(create_refund, parse_create_refund, exec_create_refund);
get_handler!(get_refund, path, exec_get_refund);
get_handler!(list_refunds, exec_list_refunds);
get_handler!(get_charge, path, exec_get_charge);
get_handler!(list_charges, exec_list_charges);
get_handler!(list_events, exec_list_events);
get_handler!(get_event, path, exec_get_event);

/// The public routes, behind authentication, rate limits and request ids.
pub fn router(api: Arc<Api>) -> Router {
    let v1 = Router::new()
        .route("/v1/payment_methods", post(create_pm).get(list_pm))
        .route("/v1/payment_methods/{id}", get(get_pm).post(update_pm))
        .route("/v1/payment_methods/{id}/attach", post(attach_pm))
        .route("/v1/payment_methods/{id}/detach", post(detach_pm))
        .route("/v1/customers", post(create_customer).get(list_customers))
        .route(
            "/v1/customers/{id}",
            get(get_customer).post(update_customer).delete(delete_customer),
        )
        .route("/v1/payment_intents", post(create_pi).get(list_pi))
        .route("/v1/payment_intents/{id}", get(get_pi).post(update_pi))
        .route("/v1/payment_intents/{id}/confirm", post(confirm_pi))
        .route("/v1/payment_intents/{id}/capture", post(capture_pi))
        .route("/v1/payment_intents/{id}/cancel", post(cancel_pi))
        .route("/v1/refunds", post(create_refund).get(list_refunds))
        .route("/v1/refunds/{id}", get(get_refund))
        .route("/v1/charges", get(list_charges))
        .route("/v1/charges/{id}", get(get_charge))
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .merge(crate::webhook_endpoints::routes())
        .merge(crate::radar::routes())
        .fallback(not_found);
    v1.layer(axum::middleware::from_fn_with_state(api.clone(), Api::gate))
        .with_state(api)
}

async fn not_found(Extension(ctx): Extension<Ctx>) -> Response {
    let shown: String = ctx.path.chars().take(100).collect();
    pay_net::api_error_response(
        &ApiError::invalid_request(format!("Unrecognized request URL ({} {shown}).", ctx.method)).with_status(404),
    )
}
