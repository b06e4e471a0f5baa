//! The payment service's interface, called by the public API. Operations that create objects
//! take an optional `request_key` (derived from the client's Idempotency-Key): the payment
//! service derives the new object's id from it, so a request re-run after a crash finds and
//! resumes the object it created the first time instead of creating a second one.

use crate::objects::{CaptureMethod, Charge, ConfirmationMethod, Metadata, PaymentIntent, Refund};
use pay_core::{
    AccountId, CardSummary, ChargeId, Currency, CustomerId, PaymentIntentId, PaymentMethodId, RefundId, VaultTokenId,
};
use pay_net::{CallError, ServiceClient};
use serde::{Deserialize, Serialize};

/// A payment method as the payment service needs it: its id, its vault token and card facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethodRef {
    /// `pm_…`
    pub id: PaymentMethodId,
    /// The vault token the tokenizer forwards with.
    pub token: VaultTokenId,
    /// Card facts (no number).
    pub card: CardSummary,
    /// Customer it is attached to.
    pub customer: Option<CustomerId>,
}

/// Who asked, for fraud scoring and event attribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestContext {
    /// `req_…` of the public API request.
    pub request_id: Option<String>,
    /// The client's Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// Client IP address.
    pub client_ip: Option<String>,
    /// Customer email, if known.
    pub email: Option<String>,
    /// When the customer was created (Unix seconds), if any.
    pub customer_created: Option<i64>,
}

/// Create a PaymentIntent (and confirm it at once with `confirm`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateIntent {
    /// The merchant.
    pub account: AccountId,
    /// Derives the intent id; a retry with the same key returns the same intent.
    pub request_key: Option<String>,
    /// Amount.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Customer.
    pub customer: Option<CustomerId>,
    /// Payment method.
    pub payment_method: Option<PaymentMethodRef>,
    /// When to capture.
    pub capture_method: CaptureMethod,
    /// How to confirm.
    pub confirmation_method: ConfirmationMethod,
    /// Description.
    pub description: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
    /// Receipt email.
    pub receipt_email: Option<String>,
    /// Statement descriptor.
    pub statement_descriptor: Option<String>,
    /// Confirm immediately.
    pub confirm: bool,
    /// Request context.
    pub context: RequestContext,
}

/// Update a PaymentIntent that has not been confirmed (or has failed back).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct UpdateIntent {
    /// New amount.
    pub amount: Option<i64>,
    /// New currency.
    pub currency: Option<Currency>,
    /// New customer (`Some(None)` clears).
    pub customer: Option<Option<CustomerId>>,
    /// New payment method.
    pub payment_method: Option<PaymentMethodRef>,
    /// New capture method.
    pub capture_method: Option<CaptureMethod>,
    /// New description (`Some(None)` clears).
    pub description: Option<Option<String>>,
    /// Metadata changes: a key with an empty value is removed.
    pub metadata: Option<Metadata>,
    /// Replace all metadata (`metadata=""` in Stripe's API).
    pub clear_metadata: bool,
    /// New receipt email.
    pub receipt_email: Option<Option<String>>,
    /// New statement descriptor.
    pub statement_descriptor: Option<Option<String>>,
}

/// Confirm a PaymentIntent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmIntent {
    /// Payment method to use (replaces the attached one).
    pub payment_method: Option<PaymentMethodRef>,
    /// Capture method override.
    pub capture_method: Option<CaptureMethod>,
    /// Receipt email.
    pub receipt_email: Option<String>,
    /// Request context.
    pub context: RequestContext,
}

/// Capture an authorized PaymentIntent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureIntent {
    /// Amount to capture; defaults to all that is capturable.
    pub amount_to_capture: Option<i64>,
    /// Request context.
    pub context: RequestContext,
}

/// Cancel a PaymentIntent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelIntent {
    /// `duplicate`, `fraudulent`, `requested_by_customer`, `abandoned`.
    pub cancellation_reason: Option<String>,
    /// Request context.
    pub context: RequestContext,
}

/// Create a refund of a PaymentIntent or a charge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRefund {
    /// The merchant.
    pub account: AccountId,
    /// Derives the refund id; a retry with the same key returns the same refund.
    pub request_key: Option<String>,
    /// The intent to refund.
    pub payment_intent: Option<PaymentIntentId>,
    /// Or the charge to refund.
    pub charge: Option<ChargeId>,
    /// Amount; defaults to everything not yet refunded.
    pub amount: Option<i64>,
    /// `duplicate`, `fraudulent`, `requested_by_customer`.
    pub reason: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
    /// Request context.
    pub context: RequestContext,
}

/// A list request (Stripe pagination) for intents, charges or refunds.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ListRequest {
    /// Page size, 1–100.
    pub limit: u32,
    /// Objects older than this id.
    pub starting_after: Option<String>,
    /// Objects newer than this id.
    pub ending_before: Option<String>,
    /// Only this customer's (intents).
    pub customer: Option<CustomerId>,
    /// Only this intent's (charges, refunds).
    pub payment_intent: Option<PaymentIntentId>,
    /// Only this charge's (refunds).
    pub charge: Option<ChargeId>,
    /// Created at or after (Unix seconds).
    pub created_gte: Option<i64>,
    /// Created before (Unix seconds).
    pub created_lt: Option<i64>,
}

/// A page of objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPage<T> {
    /// Objects, newest first.
    pub data: Vec<T>,
    /// More exist.
    pub has_more: bool,
}

/// Typed client for the payment service (used by the API).
#[derive(Clone)]
pub struct PaymentsClient {
    inner: ServiceClient,
}

fn q(account: &AccountId) -> String {
    format!("account={account}")
}

impl PaymentsClient {
    /// Wraps a service client for the `payments` service.
    pub fn new(inner: ServiceClient) -> PaymentsClient {
        PaymentsClient { inner }
    }
    /// Creates (and optionally confirms) an intent.
    pub async fn create_intent(&self, req: &CreateIntent) -> Result<PaymentIntent, CallError> {
        self.inner.post("/v1/payment_intents", req).await
    }
    /// Reads an intent.
    pub async fn get_intent(&self, account: &AccountId, id: &PaymentIntentId) -> Result<PaymentIntent, CallError> {
        self.inner
            .get(&format!("/v1/payment_intents/{id}?{}", q(account)))
            .await
    }
    /// Updates an intent.
    pub async fn update_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        req: &UpdateIntent,
    ) -> Result<PaymentIntent, CallError> {
        self.inner
            .post(&format!("/v1/payment_intents/{id}?{}", q(account)), req)
            .await
    }
    /// Confirms an intent.
    pub async fn confirm_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        req: &ConfirmIntent,
    ) -> Result<PaymentIntent, CallError> {
        self.inner
            .post(&format!("/v1/payment_intents/{id}/confirm?{}", q(account)), req)
            .await
    }
    /// Captures an intent.
    pub async fn capture_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        req: &CaptureIntent,
    ) -> Result<PaymentIntent, CallError> {
        self.inner
            .post(&format!("/v1/payment_intents/{id}/capture?{}", q(account)), req)
            .await
    }
    /// Cancels an intent.
    pub async fn cancel_intent(
        &self,
        account: &AccountId,
        id: &PaymentIntentId,
        req: &CancelIntent,
    ) -> Result<PaymentIntent, CallError> {
        self.inner
            .post(&format!("/v1/payment_intents/{id}/cancel?{}", q(account)), req)
            .await
    }
    /// Lists intents.
    pub async fn list_intents(
        &self,
        account: &AccountId,
        req: &ListRequest,
    ) -> Result<ListPage<PaymentIntent>, CallError> {
        self.inner
            .post(&format!("/v1/payment_intents/list?{}", q(account)), req)
            .await
    }
    /// Creates a refund.
    pub async fn create_refund(&self, req: &CreateRefund) -> Result<Refund, CallError> {
        self.inner.post("/v1/refunds", req).await
    }
    /// Reads a refund.
    pub async fn get_refund(&self, account: &AccountId, id: &RefundId) -> Result<Refund, CallError> {
        self.inner.get(&format!("/v1/refunds/{id}?{}", q(account))).await
    }
    /// Lists refunds.
    pub async fn list_refunds(&self, account: &AccountId, req: &ListRequest) -> Result<ListPage<Refund>, CallError> {
        self.inner.post(&format!("/v1/refunds/list?{}", q(account)), req).await
    }
    /// Reads a charge.
    pub async fn get_charge(&self, account: &AccountId, id: &ChargeId) -> Result<Charge, CallError> {
        self.inner.get(&format!("/v1/charges/{id}?{}", q(account))).await
    }
    /// Lists charges.
    pub async fn list_charges(&self, account: &AccountId, req: &ListRequest) -> Result<ListPage<Charge>, CallError> {
        self.inner.post(&format!("/v1/charges/list?{}", q(account)), req).await
    }
}
