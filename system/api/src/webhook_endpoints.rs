//! `/v1/webhook_endpoints`: Stripe's webhook endpoint API, served by the webhooks service
//! (which holds the HSM that seals signing secrets); the API parses, authenticates, applies
//! idempotency and forwards.

use crate::handlers::call;
use crate::params::Params;
use crate::{ok, Answer, Api, Ctx};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use pay_core::ApiError;
use pay_proto::objects::List;
use pay_proto::webhooks::*;
use std::sync::Arc;

type S = State<Arc<Api>>;

impl Api {
    fn webhooks(&self) -> Result<&WebhooksClient, ApiError> {
        self.webhooks
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("Webhooks are not enabled on this node."))
    }
}

/// Parsed create.
pub struct CreateParams {
    url: String,
    enabled_events: Vec<String>,
    description: Option<String>,
    metadata: Option<Option<pay_proto::objects::Metadata>>,
    fifo: bool,
}

fn events_param(p: &mut Params) -> Result<Option<Vec<String>>, ApiError> {
    let events = p.opt_str_list("enabled_events")?;
    if let Some(ev) = &events {
        if ev.len() > 100 {
            return Err(ApiError::invalid_param(
                "enabled_events",
                "parameter_invalid",
                "At most 100 enabled_events.",
            ));
        }
    }
    Ok(events)
}

fn parse_create(p: &mut Params) -> Result<CreateParams, ApiError> {
    let url = p.req_str("url")?;
    let enabled_events = events_param(p)?.ok_or_else(|| ApiError::missing_param("enabled_events"))?;
    let r = CreateParams {
        url,
        enabled_events,
        description: p.opt_text("description", 5000)?,
        metadata: p.metadata()?,
        fifo: p.opt_bool("fifo")?.unwrap_or(false),
    };
    p.ignore("api_version");
    p.ignore("connect");
    p.ignore("expand");
    Ok(r)
}

/// Parsed update.
pub struct UpdateParams {
    url: Option<String>,
    enabled_events: Option<Vec<String>>,
    disabled: Option<bool>,
    description: Option<Option<String>>,
    metadata: Option<Option<pay_proto::objects::Metadata>>,
    fifo: Option<bool>,
}

fn parse_update(p: &mut Params) -> Result<UpdateParams, ApiError> {
    let r = UpdateParams {
        url: p.opt_str("url")?,
        enabled_events: events_param(p)?,
        disabled: p.opt_bool("disabled")?,
        description: p.opt_clearable("description", 5000)?,
        metadata: p.metadata()?,
        fifo: p.opt_bool("fifo")?,
    };
    p.ignore("expand");
    Ok(r)
}

/// Parsed resend.
pub struct ResendParams {
    event: String,
}

fn parse_resend(p: &mut Params) -> Result<ResendParams, ApiError> {
    Ok(ResendParams {
        event: p.req_str("event")?,
    })
}

/// Parsed secret roll.
pub struct RollParams {
    expires_in: Option<i64>,
}

fn parse_roll(p: &mut Params) -> Result<RollParams, ApiError> {
    Ok(RollParams {
        expires_in: p.opt_i64("expires_in")?,
    })
}

impl Api {
    async fn exec_create_we(&self, ctx: &Ctx, req: CreateParams, key: Option<String>) -> Answer {
        let mut metadata = pay_proto::objects::Metadata::new();
        if let Some(Some(m)) = req.metadata {
            metadata.extend(m.into_iter().filter(|(_, v)| !v.is_empty()));
        }
        let ep = self
            .webhooks()?
            .create(&CreateEndpoint {
                account: ctx.principal.account.clone(),
                request_key: key,
                url: req.url,
                enabled_events: req.enabled_events,
                description: req.description,
                metadata,
                fifo: req.fifo,
            })
            .await
            .map_err(call)?;
        ok(&ep)
    }

    async fn exec_update_we(&self, ctx: &Ctx, id: String, req: UpdateParams, _key: Option<String>) -> Answer {
        let ep = self
            .webhooks()?
            .update(
                &id,
                &UpdateEndpoint {
                    account: ctx.principal.account.clone(),
                    url: req.url,
                    enabled_events: req.enabled_events,
                    disabled: req.disabled,
                    description: req.description,
                    metadata: req.metadata,
                    fifo: req.fifo,
                },
            )
            .await
            .map_err(call)?;
        ok(&ep)
    }

    async fn exec_roll_we(&self, ctx: &Ctx, id: String, req: RollParams, _key: Option<String>) -> Answer {
        let ep = self
            .webhooks()?
            .roll_secret(
                &id,
                &RollSecret {
                    account: ctx.principal.account.clone(),
                    expires_in_secs: req.expires_in,
                },
            )
            .await
            .map_err(call)?;
        ok(&ep)
    }

    async fn exec_resend_we(&self, ctx: &Ctx, id: String, req: ResendParams, key: Option<String>) -> Answer {
        let r = self
            .webhooks()?
            .resend(
                &id,
                &ResendEvent {
                    account: ctx.principal.account.clone(),
                    event: req.event,
                    request_key: key,
                },
            )
            .await
            .map_err(call)?;
        ok(&serde_json::json!({"object": "webhook_delivery", "id": r.delivery, "webhook_endpoint": id}))
    }

    async fn exec_get_we(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        ok(&self.webhooks()?.get(&ctx.principal.account, &id).await.map_err(call)?)
    }

    async fn exec_delete_we(&self, ctx: &Ctx, id: String, p: Params) -> Answer {
        p.finish()?;
        ok(&self
            .webhooks()?
            .delete(&ctx.principal.account, &id)
            .await
            .map_err(call)?)
    }

    async fn exec_list_we(&self, ctx: &Ctx, mut p: Params) -> Answer {
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
        p.finish()?;
        if starting_after.is_some() && ending_before.is_some() {
            return Err(ApiError::invalid_request(
                "You may only specify one of these parameters: ending_before, starting_after.",
            ));
        }
        let page = self
            .webhooks()?
            .list(&ListEndpoints {
                account: ctx.principal.account.clone(),
                limit,
                starting_after,
                ending_before,
            })
            .await
            .map_err(call)?;
        ok(&List::new(page.data, page.has_more, "/v1/webhook_endpoints"))
    }
}

post_handler!(create_we, parse_create, exec_create_we);
post_handler!(update_we, path, parse_update, exec_update_we);
post_handler!(roll_we, path, parse_roll, exec_roll_we);
post_handler!(resend_we, path, parse_resend, exec_resend_we);

get_handler!(get_we, path, exec_get_we);
get_handler!(delete_we, path, exec_delete_we);
get_handler!(list_we, exec_list_we);

/// The webhook endpoint routes.
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/webhook_endpoints", post(create_we).get(list_we))
        .route(
            "/v1/webhook_endpoints/{id}",
            get(get_we).post(update_we).delete(delete_we),
        )
        .route("/v1/webhook_endpoints/{id}/roll_secret", post(roll_we))
        .route("/v1/webhook_endpoints/{id}/resend", post(resend_we))
}
