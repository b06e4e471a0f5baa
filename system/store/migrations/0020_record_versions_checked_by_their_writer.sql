-- The record tables' CHECK (version > 0) (migrations 0001 and 0013) are dropped
-- (docs/performance.md, 2026-12-08, tenth session).
--
-- PostgreSQL rebuilds a CHECK expression from its stored text for every statement that inserts
-- into or updates the table (ExecConstraints, stringToNode): 4.4 % of the instructions the commit
-- lane executes, replayed on the bench's traffic, for a condition that cannot fail. Records are
-- written only by the commit functions (store_commit_framed_at and the ones before it): an
-- insert writes version 1 and an update writes the version it found plus one, under
-- `WHERE version = expected`. Nothing else inserts or updates a record table; the store's tests
-- hold the versions to 1, 2, 3, ... (`Record::version`). The columns stay NOT NULL.
--
-- Dropping a CHECK constraint takes a brief ACCESS EXCLUSIVE lock on each table and rewrites
-- nothing.

ALTER TABLE accounts DROP CONSTRAINT accounts_version_check;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_version_check;
ALTER TABLE customers DROP CONSTRAINT customers_version_check;
ALTER TABLE payment_methods DROP CONSTRAINT payment_methods_version_check;
ALTER TABLE vault_cards DROP CONSTRAINT vault_cards_version_check;
ALTER TABLE data_keys DROP CONSTRAINT data_keys_version_check;
ALTER TABLE payment_intents DROP CONSTRAINT payment_intents_version_check;
ALTER TABLE charges DROP CONSTRAINT charges_version_check;
ALTER TABLE refunds DROP CONSTRAINT refunds_version_check;
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_version_check;
ALTER TABLE acquirer_ops DROP CONSTRAINT acquirer_ops_version_check;
ALTER TABLE webhook_endpoints DROP CONSTRAINT webhook_endpoints_version_check;
ALTER TABLE radar_rules DROP CONSTRAINT radar_rules_version_check;
ALTER TABLE value_lists DROP CONSTRAINT value_lists_version_check;
ALTER TABLE value_list_items DROP CONSTRAINT value_list_items_version_check;
ALTER TABLE reviews DROP CONSTRAINT reviews_version_check;
ALTER TABLE radar_configs DROP CONSTRAINT radar_configs_version_check;
