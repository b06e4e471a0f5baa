//! Objects the API service owns: payment methods (card facts and the vault token, never the
//! number) and customers.

use pay_core::{AccountId, CardSummary, Timestamp, VaultTokenId};
use pay_proto::objects::{Customer, PaymentMethod};
use pay_proto::payments::PaymentMethodRef;
use pay_store::{Entity, Table};
use serde::{Deserialize, Serialize};

/// A stored PaymentMethod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethodRecord {
    /// Merchant.
    pub account: AccountId,
    /// The public object.
    pub pm: PaymentMethod,
    /// The vault token (never shown).
    pub token: VaultTokenId,
    /// Card facts as the tokenizer returned them.
    pub card: CardSummary,
    /// Unix ms.
    pub created_ms: i64,
}

impl PaymentMethodRecord {
    /// What the payment service needs to charge it.
    pub fn as_ref_for_payments(&self) -> PaymentMethodRef {
        PaymentMethodRef {
            id: self.pm.id.clone(),
            token: self.token.clone(),
            card: self.card.clone(),
            customer: self.pm.customer.clone(),
        }
    }
}

impl Entity for PaymentMethodRecord {
    const TABLE: Table = Table::PaymentMethods;
    fn id(&self) -> &str {
        self.pm.id.as_str()
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        self.pm.customer.as_ref().map(|c| c.to_string())
    }
}

/// A stored Customer (soft-deleted, as Stripe keeps a deleted stub).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    /// Merchant.
    pub account: AccountId,
    /// The public object.
    pub customer: Customer,
    /// Deleted.
    pub deleted: bool,
    /// Unix ms.
    pub created_ms: i64,
}

impl Entity for CustomerRecord {
    const TABLE: Table = Table::Customers;
    fn id(&self) -> &str {
        self.customer.id.as_str()
    }
    fn account(&self) -> &str {
        self.account.as_str()
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.created_ms)
    }
    fn k1(&self) -> Option<String> {
        if self.deleted {
            Some("deleted".to_owned())
        } else {
            self.customer.email.as_ref().map(|e| e.to_lowercase())
        }
    }
    fn k2(&self) -> Option<String> {
        Some(if self.deleted { "deleted" } else { "live" }.to_owned())
    }
}
