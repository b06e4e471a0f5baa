//! Stripe-shaped objects as the public API returns them (a compatible subset of Stripe's
//! fields, named and typed as Stripe's so the official SDKs deserialize them).

use pay_core::{CardBrand, ChargeId, Currency, CustomerId, PaymentIntentId, PaymentMethodId, RefundId, ReviewId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Free-form key/value pairs attached to objects (Stripe: up to 50 keys, keys ≤ 40 chars,
/// values ≤ 500 chars).
pub type Metadata = BTreeMap<String, String>;

/// A PaymentIntent's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Needs a payment method (new, or after a failed attempt).
    RequiresPaymentMethod,
    /// Has a payment method, waiting for confirm.
    RequiresConfirmation,
    /// Needs customer action (authentication). No card flow enters it yet.
    RequiresAction,
    /// An authorization is in flight or its outcome is being settled.
    Processing,
    /// Authorized, waiting for capture (manual capture).
    RequiresCapture,
    /// Money captured. Terminal (refunds do not change it).
    Succeeded,
    /// Canceled. Terminal.
    Canceled,
}

impl IntentStatus {
    /// Stripe's name.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::RequiresPaymentMethod => "requires_payment_method",
            IntentStatus::RequiresConfirmation => "requires_confirmation",
            IntentStatus::RequiresAction => "requires_action",
            IntentStatus::Processing => "processing",
            IntentStatus::RequiresCapture => "requires_capture",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Canceled => "canceled",
        }
    }

    /// Parses Stripe's name.
    pub fn parse(s: &str) -> Option<IntentStatus> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }

    /// True for states no operation leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, IntentStatus::Succeeded | IntentStatus::Canceled)
    }
}

/// When funds are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    /// Capture on authorization.
    #[default]
    Automatic,
    /// Capture on authorization, settled asynchronously (treated as automatic).
    AutomaticAsync,
    /// Authorize now, capture later with `/capture`.
    Manual,
}

/// Whether confirmation happens server-side automatically or only by explicit confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmationMethod {
    /// Confirm from the client or server.
    #[default]
    Automatic,
    /// Confirm only with the secret key.
    Manual,
}

/// The error of the last failed payment attempt, as embedded in a PaymentIntent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastPaymentError {
    /// `card_error` for declines.
    #[serde(rename = "type")]
    pub kind: String,
    /// `card_declined`, `expired_card`, …
    pub code: Option<String>,
    /// The issuer's reason.
    pub decline_code: Option<String>,
    /// Explanation.
    pub message: String,
    /// The charge that failed.
    pub charge: Option<ChargeId>,
    /// The payment method that failed.
    pub payment_method: Option<PaymentMethod>,
}

/// A PaymentIntent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentIntent {
    /// `pi_…`
    pub id: PaymentIntentId,
    /// `"payment_intent"`
    pub object: String,
    /// Amount intended, minor units.
    pub amount: i64,
    /// Amount that may still be captured.
    pub amount_capturable: i64,
    /// Amount received (captured).
    pub amount_received: i64,
    /// When canceled (Unix seconds).
    pub canceled_at: Option<i64>,
    /// Why canceled.
    pub cancellation_reason: Option<String>,
    /// When funds are captured.
    pub capture_method: CaptureMethod,
    /// Secret for client-side confirmation.
    pub client_secret: Option<String>,
    /// How confirmation happens.
    pub confirmation_method: ConfirmationMethod,
    /// Unix seconds.
    pub created: i64,
    /// Currency.
    pub currency: Currency,
    /// Customer.
    pub customer: Option<CustomerId>,
    /// Description.
    pub description: Option<String>,
    /// The last failed attempt's error.
    pub last_payment_error: Option<LastPaymentError>,
    /// The newest charge.
    pub latest_charge: Option<ChargeId>,
    /// Always false.
    pub livemode: bool,
    /// Metadata.
    pub metadata: Metadata,
    /// Next action for the customer (always null: no flow requires one yet).
    pub next_action: Option<serde_json::Value>,
    /// Payment method attached.
    pub payment_method: Option<PaymentMethodId>,
    /// Allowed method types.
    pub payment_method_types: Vec<String>,
    /// Receipt email.
    pub receipt_email: Option<String>,
    /// Open Radar review.
    pub review: Option<ReviewId>,
    /// Statement descriptor.
    pub statement_descriptor: Option<String>,
    /// Lifecycle state.
    pub status: IntentStatus,
}

/// A charge's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Authorized (and perhaps captured).
    Succeeded,
    /// Outcome not yet known.
    Pending,
    /// Declined or failed.
    Failed,
}

/// Result of a verification check (CVC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// Matched.
    Pass,
    /// Did not match.
    Fail,
    /// The issuer could not check.
    Unavailable,
    /// Not checked (no value given).
    Unchecked,
}

/// Verification checks on a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CardChecks {
    /// CVC check.
    pub cvc_check: Option<CheckResult>,
    /// Address line 1 check (not performed).
    pub address_line1_check: Option<CheckResult>,
    /// Postal code check (not performed).
    pub address_postal_code_check: Option<CheckResult>,
}

/// Card details on a charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeCard {
    /// Network.
    pub brand: CardBrand,
    /// Checks performed with this charge.
    pub checks: CardChecks,
    /// Issuing country.
    pub country: Option<String>,
    /// Expiry month.
    pub exp_month: u32,
    /// Expiry year.
    pub exp_year: i32,
    /// Keyed fingerprint.
    pub fingerprint: String,
    /// credit/debit/prepaid/unknown.
    pub funding: String,
    /// Last four digits.
    pub last4: String,
    /// Network the charge went through.
    pub network: String,
    /// The network's transaction id.
    pub network_transaction_id: Option<String>,
}

/// How a charge was paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethodDetails {
    /// `"card"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Card details.
    pub card: ChargeCard,
}

/// Radar's and the network's verdict on a charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeOutcome {
    /// `approved_by_network`, `declined_by_network`, `not_sent_to_network`, `reversed_after_approval`.
    pub network_status: String,
    /// Decline or block reason.
    pub reason: Option<String>,
    /// `normal`, `elevated`, `highest`, `not_assessed`.
    pub risk_level: String,
    /// 0–99 when assessed.
    pub risk_score: Option<u8>,
    /// The Radar rule that decided, if any.
    pub rule: Option<String>,
    /// Text for the merchant.
    pub seller_message: String,
    /// `authorized`, `manual_review`, `issuer_declined`, `blocked`, `invalid`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A Charge: one authorization attempt and its capture and refund totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// `ch_…`
    pub id: ChargeId,
    /// `"charge"`
    pub object: String,
    /// Amount authorized.
    pub amount: i64,
    /// Amount captured.
    pub amount_captured: i64,
    /// Amount refunded.
    pub amount_refunded: i64,
    /// Captured yet.
    pub captured: bool,
    /// Unix seconds.
    pub created: i64,
    /// Currency.
    pub currency: Currency,
    /// Customer.
    pub customer: Option<CustomerId>,
    /// Description.
    pub description: Option<String>,
    /// Failure code for failed charges.
    pub failure_code: Option<String>,
    /// Failure explanation.
    pub failure_message: Option<String>,
    /// Always false.
    pub livemode: bool,
    /// Metadata (copied from the intent).
    pub metadata: Metadata,
    /// Radar and network verdict.
    pub outcome: Option<ChargeOutcome>,
    /// Authorized successfully.
    pub paid: bool,
    /// The intent it belongs to.
    pub payment_intent: Option<PaymentIntentId>,
    /// The payment method used.
    pub payment_method: Option<PaymentMethodId>,
    /// Card details.
    pub payment_method_details: Option<PaymentMethodDetails>,
    /// Fully refunded.
    pub refunded: bool,
    /// Open review.
    pub review: Option<ReviewId>,
    /// State.
    pub status: ChargeStatus,
}

/// A refund's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Sent, outcome pending.
    Pending,
    /// Done.
    Succeeded,
    /// Refused by the network.
    Failed,
    /// Canceled.
    Canceled,
}

/// A Refund.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    /// `re_…`
    pub id: RefundId,
    /// `"refund"`
    pub object: String,
    /// Amount refunded.
    pub amount: i64,
    /// Charge refunded.
    pub charge: Option<ChargeId>,
    /// Unix seconds.
    pub created: i64,
    /// Currency.
    pub currency: Currency,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
    /// The intent refunded.
    pub payment_intent: Option<PaymentIntentId>,
    /// `duplicate`, `fraudulent`, `requested_by_customer`.
    pub reason: Option<String>,
    /// State.
    pub status: RefundStatus,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Address {
    /// City.
    pub city: Option<String>,
    /// Two-letter country code.
    pub country: Option<String>,
    /// Line 1.
    pub line1: Option<String>,
    /// Line 2.
    pub line2: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// State or province.
    pub state: Option<String>,
}

/// Billing details of a payment method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BillingDetails {
    /// Address.
    pub address: Address,
    /// Email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Phone.
    pub phone: Option<String>,
}

/// Networks a card can be used on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardNetworks {
    /// Available networks.
    pub available: Vec<String>,
    /// Preferred network.
    pub preferred: Option<String>,
}

/// Card details on a PaymentMethod (never the number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethodCard {
    /// Network.
    pub brand: CardBrand,
    /// Checks from the last use.
    pub checks: CardChecks,
    /// Issuing country.
    pub country: Option<String>,
    /// Brand as displayed.
    pub display_brand: String,
    /// Expiry month.
    pub exp_month: u32,
    /// Expiry year.
    pub exp_year: i32,
    /// Keyed fingerprint of the number.
    pub fingerprint: String,
    /// credit/debit/prepaid/unknown.
    pub funding: String,
    /// Last four digits.
    pub last4: String,
    /// Networks.
    pub networks: CardNetworks,
}

/// A PaymentMethod (cards only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// `pm_…`
    pub id: PaymentMethodId,
    /// `"payment_method"`
    pub object: String,
    /// Billing details.
    pub billing_details: BillingDetails,
    /// Card details.
    pub card: PaymentMethodCard,
    /// Unix seconds.
    pub created: i64,
    /// Attached customer.
    pub customer: Option<CustomerId>,
    /// Always false.
    pub livemode: bool,
    /// Metadata.
    pub metadata: Metadata,
    /// `"card"`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Invoice settings of a customer (only the default payment method is used).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InvoiceSettings {
    /// Default payment method.
    pub default_payment_method: Option<PaymentMethodId>,
}

/// A Customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// `cus_…`
    pub id: CustomerId,
    /// `"customer"`
    pub object: String,
    /// Address.
    pub address: Option<Address>,
    /// Balance (always 0).
    pub balance: i64,
    /// Unix seconds.
    pub created: i64,
    /// Description.
    pub description: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Invoice settings.
    pub invoice_settings: InvoiceSettings,
    /// Always false.
    pub livemode: bool,
    /// Metadata.
    pub metadata: Metadata,
    /// Name.
    pub name: Option<String>,
    /// Phone.
    pub phone: Option<String>,
}

/// A Stripe list object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    /// `"list"`
    pub object: String,
    /// Items, newest first.
    pub data: Vec<T>,
    /// More items exist past this page.
    pub has_more: bool,
    /// The list's URL (`/v1/payment_intents`).
    pub url: String,
}

impl<T> List<T> {
    /// A list object.
    pub fn new(data: Vec<T>, has_more: bool, url: &str) -> List<T> {
        List {
            object: "list".to_owned(),
            data,
            has_more,
            url: url.to_owned(),
        }
    }
}

/// The answer to a delete (`{"id": …, "object": …, "deleted": true}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Id.
    pub id: String,
    /// Object type.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}
