-- Fraud velocity: one row per payment attempt (idempotent on attempt_id), counted in exact
-- sliding windows by the fraud service (pay-fraud, src/pg.rs) with one statement per score.
CREATE TABLE fraud_velocity (
    attempt_id text PRIMARY KEY,
    account    text   NOT NULL,
    t          bigint NOT NULL,
    card       text,
    ip         text,
    customer   text,
    outcome    text CHECK (outcome IN ('approved', 'declined', 'blocked'))
);
CREATE INDEX fraud_velocity_card ON fraud_velocity (account, card, t) WHERE card IS NOT NULL;
CREATE INDEX fraud_velocity_ip ON fraud_velocity (account, ip, t) WHERE ip IS NOT NULL;
CREATE INDEX fraud_velocity_customer ON fraud_velocity (account, customer, t) WHERE customer IS NOT NULL;
CREATE INDEX fraud_velocity_t ON fraud_velocity (t);
COMMENT ON TABLE fraud_velocity IS 'Fraud velocity attempts (t = Unix ms of the first observation); rows older than a day are pruned.';
