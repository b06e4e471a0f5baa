-- Record tables. Every table has the same shape: fixed columns for lookup and ordering and
-- the object itself as JSONB. k1/k2 are secondary indexes whose meaning is per table (see the
-- column comments). version supports optimistic concurrency (+1 on every update).

CREATE TABLE accounts (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX accounts_account_created ON accounts (account, created DESC, id DESC);
CREATE INDEX accounts_k1 ON accounts (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX accounts_k2 ON accounts (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE accounts IS 'Merchant accounts.';

CREATE TABLE api_keys (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX api_keys_account_created ON api_keys (account, created DESC, id DESC);
CREATE INDEX api_keys_k1 ON api_keys (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX api_keys_k2 ON api_keys (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE api_keys IS 'API keys; id is the SHA-256 of the secret, never the secret itself.';
COMMENT ON COLUMN api_keys.k1 IS 'public key id (key_...)';
COMMENT ON COLUMN api_keys.k2 IS 'kind: secret|publishable';

CREATE TABLE customers (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX customers_account_created ON customers (account, created DESC, id DESC);
CREATE INDEX customers_k1 ON customers (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX customers_k2 ON customers (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE customers IS 'Customers.';
COMMENT ON COLUMN customers.k1 IS 'email (lowercase)';

CREATE TABLE payment_methods (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX payment_methods_account_created ON payment_methods (account, created DESC, id DESC);
CREATE INDEX payment_methods_k1 ON payment_methods (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX payment_methods_k2 ON payment_methods (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE payment_methods IS 'PaymentMethods: brand, last4, expiry, fingerprint and vault token; no card number.';
COMMENT ON COLUMN payment_methods.k1 IS 'customer id';

CREATE TABLE vault_cards (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX vault_cards_account_created ON vault_cards (account, created DESC, id DESC);
CREATE INDEX vault_cards_k1 ON vault_cards (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX vault_cards_k2 ON vault_cards (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE vault_cards IS 'The card vault: PAN as AES-256-GCM ciphertext under a wrapped data key. Tokenizer only.';
COMMENT ON COLUMN vault_cards.k1 IS 'card fingerprint (keyed HMAC)';
COMMENT ON COLUMN vault_cards.k2 IS 'data key id';

CREATE TABLE data_keys (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX data_keys_account_created ON data_keys (account, created DESC, id DESC);
CREATE INDEX data_keys_k1 ON data_keys (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX data_keys_k2 ON data_keys (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE data_keys IS 'Data-encryption keys, wrapped by an HSM-held KEK. Tokenizer only.';
COMMENT ON COLUMN data_keys.k1 IS 'KEK id that wraps it';
COMMENT ON COLUMN data_keys.k2 IS 'state';

CREATE TABLE payment_intents (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX payment_intents_account_created ON payment_intents (account, created DESC, id DESC);
CREATE INDEX payment_intents_k1 ON payment_intents (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX payment_intents_k2 ON payment_intents (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE payment_intents IS 'PaymentIntents.';
COMMENT ON COLUMN payment_intents.k1 IS 'customer id';
COMMENT ON COLUMN payment_intents.k2 IS 'status, or pending_op while a capture or void is in flight';

CREATE TABLE charges (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX charges_account_created ON charges (account, created DESC, id DESC);
CREATE INDEX charges_k1 ON charges (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX charges_k2 ON charges (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE charges IS 'Charges.';
COMMENT ON COLUMN charges.k1 IS 'payment intent id';

CREATE TABLE refunds (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX refunds_account_created ON refunds (account, created DESC, id DESC);
CREATE INDEX refunds_k1 ON refunds (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX refunds_k2 ON refunds (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE refunds IS 'Refunds.';
COMMENT ON COLUMN refunds.k1 IS 'charge id';
COMMENT ON COLUMN refunds.k2 IS 'status';

CREATE TABLE payment_attempts (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX payment_attempts_account_created ON payment_attempts (account, created DESC, id DESC);
CREATE INDEX payment_attempts_k1 ON payment_attempts (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX payment_attempts_k2 ON payment_attempts (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE payment_attempts IS 'Authorization attempts and their recovery points (atomic phases).';
COMMENT ON COLUMN payment_attempts.k1 IS 'payment intent id';
COMMENT ON COLUMN payment_attempts.k2 IS 'state';

CREATE TABLE acquirer_ops (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX acquirer_ops_account_created ON acquirer_ops (account, created DESC, id DESC);
CREATE INDEX acquirer_ops_k1 ON acquirer_ops (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX acquirer_ops_k2 ON acquirer_ops (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE acquirer_ops IS 'The acquirer simulator''s ledger; id is the caller''s idempotency key.';
COMMENT ON COLUMN acquirer_ops.k1 IS 'operation kind';
COMMENT ON COLUMN acquirer_ops.k2 IS 'authorization id';

CREATE TABLE webhook_endpoints (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX webhook_endpoints_account_created ON webhook_endpoints (account, created DESC, id DESC);
CREATE INDEX webhook_endpoints_k1 ON webhook_endpoints (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX webhook_endpoints_k2 ON webhook_endpoints (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE webhook_endpoints IS 'Webhook endpoints; signing secrets stored encrypted under the HSM.';
COMMENT ON COLUMN webhook_endpoints.k1 IS 'url';

CREATE TABLE radar_rules (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX radar_rules_account_created ON radar_rules (account, created DESC, id DESC);
CREATE INDEX radar_rules_k1 ON radar_rules (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX radar_rules_k2 ON radar_rules (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE radar_rules IS 'Radar rules.';
COMMENT ON COLUMN radar_rules.k1 IS 'action';

CREATE TABLE value_lists (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX value_lists_account_created ON value_lists (account, created DESC, id DESC);
CREATE INDEX value_lists_k1 ON value_lists (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX value_lists_k2 ON value_lists (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE value_lists IS 'Radar value lists.';
COMMENT ON COLUMN value_lists.k1 IS 'alias';

CREATE TABLE value_list_items (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX value_list_items_account_created ON value_list_items (account, created DESC, id DESC);
CREATE INDEX value_list_items_k1 ON value_list_items (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX value_list_items_k2 ON value_list_items (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE value_list_items IS 'Radar value list items.';
COMMENT ON COLUMN value_list_items.k1 IS 'value list id';
COMMENT ON COLUMN value_list_items.k2 IS 'value';

CREATE TABLE reviews (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
CREATE INDEX reviews_account_created ON reviews (account, created DESC, id DESC);
CREATE INDEX reviews_k1 ON reviews (k1, created) WHERE k1 IS NOT NULL;
CREATE INDEX reviews_k2 ON reviews (k2, created) WHERE k2 IS NOT NULL;
COMMENT ON TABLE reviews IS 'Radar reviews.';
COMMENT ON COLUMN reviews.k1 IS 'payment intent id';
COMMENT ON COLUMN reviews.k2 IS 'open|closed';

-- The transactional outbox: events committed with the change they announce.
CREATE TABLE events (
    seq       bigserial PRIMARY KEY,
    id        text   NOT NULL UNIQUE,
    account   text   NOT NULL,
    type      text   NOT NULL,
    object_id text,
    created   bigint NOT NULL,
    body      jsonb  NOT NULL,
    relayed   boolean NOT NULL DEFAULT false
);
CREATE INDEX events_account_seq ON events (account, seq DESC);
CREATE INDEX events_object ON events (object_id) WHERE object_id IS NOT NULL;
CREATE INDEX events_unrelayed ON events (seq) WHERE NOT relayed;
COMMENT ON TABLE events IS 'Outbox of Stripe-shaped events; relayed marks events handed to the webhook queue.';

-- Stripe-style idempotency keys (24 h).
CREATE TABLE idempotency_keys (
    account        text   NOT NULL,
    key            text   NOT NULL,
    fingerprint    text   NOT NULL,
    owner          text   NOT NULL,
    locked_at      bigint,
    recovery_point text,
    status         integer,
    response       text,
    expires_at     bigint NOT NULL,
    PRIMARY KEY (account, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
COMMENT ON TABLE idempotency_keys IS 'Idempotency-Key locks, recovery points and saved responses.';

-- Ids of applied transactions, so a commit whose answer was lost can be resubmitted safely.
CREATE TABLE store_txns (
    id         text PRIMARY KEY,
    applied_at bigint NOT NULL
);
CREATE INDEX store_txns_applied ON store_txns (applied_at);
