-- Each record table keeps only the indexes some caller reads, and the tables whose rows are
-- updated in place leave room on their pages for the new row version.
--
-- Migration 0001 gave every record table the same three secondary indexes (account and
-- creation time for lists, k1, k2). An index nobody reads still costs every insert an entry,
-- and an update that changes an indexed column (an attempt's k2 is its state) cannot be a HOT
-- update, so it writes a new entry into every index of its table. The lookups each table
-- serves are declared in Rust (`Table::indexed`, `Table::listable` in system/store/src/model.rs),
-- every backend refuses the others, and `postgres_indexes_are_the_declared_lookups` checks this
-- schema against that declaration:
--   payment_attempts: read by id only (an intent names its attempts), never listed;
--   vault_cards: read by token, and by expiry month for the retention sweep (k2), never listed;
--   acquirer_ops: read by id (the operation's idempotency key) and listed per merchant; the
--     ledger's filter on k1 (`op`) narrows the per-account index and needs no index of its own.
--
-- fillfactor 80 leaves a fifth of each new page free, so that the update that follows an insert
-- (an attempt's outcome, an idempotency key's saved response, a charge's capture or refund)
-- finds room on the row's own page and is a HOT update: no index entries, less WAL.
-- docs/performance.md ("Results (2026-12-06, night …)") has the replayed figures.
DROP INDEX payment_attempts_account_created, payment_attempts_k1, payment_attempts_k2;
DROP INDEX vault_cards_account_created, vault_cards_k1;
DROP INDEX acquirer_ops_k1, acquirer_ops_k2;

ALTER TABLE payment_attempts SET (fillfactor = 80);
ALTER TABLE idempotency_keys SET (fillfactor = 80);
ALTER TABLE charges SET (fillfactor = 80);
