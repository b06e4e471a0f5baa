//! Radar rules and value lists (`/v1/radar/rules`, `/v1/radar/value_lists`,
//! `/v1/radar/value_list_items`), served by the fraud service. The API authenticates the
//! merchant, parses Stripe-style form parameters and passes the request on with its account;
//! the fraud service validates rules (a bad rule is a 400 whose message gives the line and
//! column of the problem) and stores everything.

use crate::handlers::call;
use crate::params::Params;
use crate::{answer_response, ok, read_body, Answer, Api, Ctx};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use pay_core::ApiError;
use pay_proto::fraud::*;
use pay_proto::objects::List;
use std::sync::Arc;

type S = State<Arc<Api>>;

impl Api {
    fn fraud(&self) -> Result<&FraudClient, ApiError> {
        self.fraud
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("Radar is not available on this deployment."))
    }
}

fn list_params(p: &mut Params) -> Result<(u32, Option<String>), ApiError> {
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
    Ok((limit, p.opt_text("starting_after", 255)?))
}

/// Parsed `POST /v1/radar/rules`.
pub struct CreateRuleParams {
    predicate: String,
}

fn parse_create_rule(p: &mut Params) -> Result<CreateRuleParams, ApiError> {
    // `predicate` is the whole rule (`Block if :risk_score: > 75`); `action` may be given
    // separately, as in the dashboard (`action=block&predicate=:risk_score: > 75`).
    let predicate = p.req_str("predicate")?;
    let action = p.opt_enum("action", &["allow", "block", "review"])?;
    let predicate = match action {
        Some(a) => {
            let mut s = a;
            s[..1].make_ascii_uppercase();
            format!("{s} if {predicate}")
        }
        None => predicate,
    };
    Ok(CreateRuleParams { predicate })
}

/// Parsed `POST /v1/radar/value_lists`.
pub struct CreateListParams {
    alias: String,
    name: String,
    item_type: Option<String>,
    metadata: std::collections::BTreeMap<String, String>,
}

fn parse_create_list(p: &mut Params) -> Result<CreateListParams, ApiError> {
    Ok(CreateListParams {
        alias: p.req_str("alias")?,
        name: p.req_str("name")?,
        item_type: p.opt_text("item_type", 64)?,
        metadata: p.metadata()?.flatten().unwrap_or_default(),
    })
}

/// Parsed `POST /v1/radar/value_list_items`.
pub struct CreateItemParams {
    value_list: String,
    value: String,
}

fn parse_create_item(p: &mut Params) -> Result<CreateItemParams, ApiError> {
    Ok(CreateItemParams {
        value_list: p.req_str("value_list")?,
        value: p.req_str("value")?,
    })
}

impl Api {
    async fn exec_create_rule(&self, ctx: &Ctx, req: CreateRuleParams, key: Option<String>) -> Answer {
        let r = CreateRule {
            account: ctx.principal.account.clone(),
            predicate: req.predicate,
            request_key: key,
        };
        ok(&self.fraud()?.create_rule(&r).await.map_err(call)?)
    }

    async fn exec_list_rules(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let (limit, starting_after) = list_params(&mut p)?;
        p.finish()?;
        let q = ListObjects {
            account: ctx.principal.account.clone(),
            value_list: None,
            limit,
            starting_after,
        };
        let page = self.fraud()?.list_rules(&q).await.map_err(call)?;
        ok(&List::new(page.data, page.has_more, "/v1/radar/rules"))
    }

    async fn exec_get_rule(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        ok(&self
            .fraud()?
            .get_rule(&ctx.principal.account, &id)
            .await
            .map_err(call)?)
    }

    async fn exec_delete_rule(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        let d = DeleteObject {
            account: ctx.principal.account.clone(),
            id,
        };
        ok(&self.fraud()?.delete_rule(&d).await.map_err(call)?)
    }

    async fn exec_create_list(&self, ctx: &Ctx, req: CreateListParams, key: Option<String>) -> Answer {
        let r = CreateValueList {
            account: ctx.principal.account.clone(),
            alias: req.alias,
            name: req.name,
            item_type: req.item_type,
            metadata: req.metadata,
            request_key: key,
        };
        ok(&self.fraud()?.create_value_list(&r).await.map_err(call)?)
    }

    async fn exec_list_lists(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let (limit, starting_after) = list_params(&mut p)?;
        p.finish()?;
        let q = ListObjects {
            account: ctx.principal.account.clone(),
            value_list: None,
            limit,
            starting_after,
        };
        let page = self.fraud()?.list_value_lists(&q).await.map_err(call)?;
        ok(&List::new(page.data, page.has_more, "/v1/radar/value_lists"))
    }

    async fn exec_get_list(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        ok(&self
            .fraud()?
            .get_value_list(&ctx.principal.account, &id)
            .await
            .map_err(call)?)
    }

    async fn exec_delete_list(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        let d = DeleteObject {
            account: ctx.principal.account.clone(),
            id,
        };
        ok(&self.fraud()?.delete_value_list(&d).await.map_err(call)?)
    }

    async fn exec_create_item(&self, ctx: &Ctx, req: CreateItemParams, key: Option<String>) -> Answer {
        let r = CreateValueListItem {
            account: ctx.principal.account.clone(),
            value_list: req.value_list,
            value: req.value,
            request_key: key,
        };
        ok(&self.fraud()?.create_value_list_item(&r).await.map_err(call)?)
    }

    async fn exec_list_items(&self, ctx: &Ctx, mut p: Params) -> Answer {
        let (limit, starting_after) = list_params(&mut p)?;
        let value_list = p.req_str("value_list")?;
        p.finish()?;
        let q = ListObjects {
            account: ctx.principal.account.clone(),
            value_list: Some(value_list),
            limit,
            starting_after,
        };
        let page = self.fraud()?.list_value_list_items(&q).await.map_err(call)?;
        ok(&List::new(page.data, page.has_more, "/v1/radar/value_list_items"))
    }

    async fn exec_delete_item(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        let d = DeleteObject {
            account: ctx.principal.account.clone(),
            id,
        };
        ok(&self.fraud()?.delete_value_list_item(&d).await.map_err(call)?)
    }
}

macro_rules! create {
    ($name:ident, $parse:expr, $exec:ident) => {
        async fn $name(State(api): S, Extension(ctx): Extension<Ctx>, headers: HeaderMap, b: Body) -> Response {
            let bytes = match read_body(b, api.config.body_limit).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            api.post(&ctx, &headers, &bytes, $parse, |req, key| {
                api.$exec(&ctx, req, key)
            })
            .await
        }
    };
}

macro_rules! read {
    ($name:ident, $exec:ident) => {
        async fn $name(State(api): S, Extension(ctx): Extension<Ctx>) -> Response {
            answer_response(async { api.$exec(&ctx, Api::query_params(&ctx)?).await }.await)
        }
    };
    ($name:ident, path, $exec:ident) => {
        async fn $name(State(api): S, Extension(ctx): Extension<Ctx>, Path(id): Path<String>) -> Response {
            answer_response(async { api.$exec(&ctx, id, Api::query_params(&ctx)?).await }.await)
        }
    };
}

create!(create_rule, parse_create_rule, exec_create_rule);
read!(list_rules, exec_list_rules);
read!(get_rule, path, exec_get_rule);
read!(delete_rule, path, exec_delete_rule);
create!(create_list, parse_create_list, exec_create_list);
read!(list_lists, exec_list_lists);
read!(get_list, path, exec_get_list);
read!(delete_list, path, exec_delete_list);
create!(create_item, parse_create_item, exec_create_item);
read!(list_items, exec_list_items);
read!(delete_item, path, exec_delete_item);

/// The Radar routes (merged into the public router, behind its authentication).
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/radar/rules", post(create_rule).get(list_rules))
        .route("/v1/radar/rules/{id}", get(get_rule).delete(delete_rule))
        .route("/v1/radar/value_lists", post(create_list).get(list_lists))
        .route("/v1/radar/value_lists/{id}", get(get_list).delete(delete_list))
        .route("/v1/radar/value_list_items", post(create_item).get(list_items))
        .route("/v1/radar/value_list_items/{id}", axum::routing::delete(delete_item))
}
