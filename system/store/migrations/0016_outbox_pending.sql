-- The outbox's waiting events in a table of their own (docs/queue.md, docs/performance.md,
-- 2026-12-07, third session).
--
-- Until now an event waited for the webhook fan-out with `relayed = false`, and the fan-out
-- marked it by setting `relayed`. The partial index `events_unrelayed` names that column, so the
-- mark was never a HOT update: it wrote the whole event again (about 1.2 KB of body) with a new
-- entry in each of the table's indexes, and the fan-out's poll walked the partial index's entries
-- for rows already marked until vacuum removed them. From here on store_commit writes each event
-- with `relayed = true` and its sequence number into `outbox_pending`, and the fan-out deletes
-- that row in the transaction that sends the event's messages: a small row in, a small row out.
--
-- Events written before this migration (relayed = false, no row in outbox_pending) are still
-- waiting the old way, and the fan-out reads and marks both kinds, so nothing waiting is lost or
-- sent twice. During a rolling upgrade an older node's fan-out still reads and marks only the
-- old kind: the events written after the migration wait until a node of this version runs the
-- webhooks role (docs/operations.md).

CREATE TABLE outbox_pending (
    seq bigint PRIMARY KEY
);
COMMENT ON TABLE outbox_pending IS 'Committed events (events.seq) the webhook fan-out has not handled yet; the row is deleted in the transaction that sends the event''s delivery messages.';
COMMENT ON COLUMN events.relayed IS 'false: written before migration 0016 and not fanned out yet. Since 0016 every event is written with true and waits in outbox_pending instead.';

-- store_commit as migration 0015 wrote it, but for the events' insert, which writes each event
-- as already marked and adds its row to outbox_pending in the same statement.
CREATE OR REPLACE FUNCTION store_commit(txn jsonb) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    ops jsonb;
    i int;
    op jsonb;
    kind text;
    tbl text;
    rid text;
    w_account text;
    w_created bigint;
    w_k1 text;
    w_k2 text;
    w_body jsonb;
    expected bigint;
    n bigint;
    v bigint;
    seqs bigint[] := '{}';
BEGIN
    INSERT INTO store_txns (id, applied_at) VALUES (txn->>'id', (txn->>'at')::bigint) ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    ops := txn->'ops';
    FOR i IN 0 .. coalesce(jsonb_array_length(ops), 0) - 1 LOOP
        op := ops->i;
        kind := op->>'op';
        tbl := op->>'table';
        rid := op->>'id';
        expected := (op->>'expected')::bigint;
        IF kind = 'insert' THEN
            w_account := op->>'account';
            w_created := (op->>'created')::bigint;
            w_k1 := op->>'k1';
            w_k2 := op->>'k2';
            w_body := op->'body';
            CASE tbl
            WHEN 'accounts' THEN
                INSERT INTO accounts (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'api_keys' THEN
                INSERT INTO api_keys (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'customers' THEN
                INSERT INTO customers (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'payment_methods' THEN
                INSERT INTO payment_methods (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'vault_cards' THEN
                INSERT INTO vault_cards (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'data_keys' THEN
                INSERT INTO data_keys (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'payment_intents' THEN
                INSERT INTO payment_intents (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'charges' THEN
                INSERT INTO charges (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'refunds' THEN
                INSERT INTO refunds (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'payment_attempts' THEN
                INSERT INTO payment_attempts (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'acquirer_ops' THEN
                INSERT INTO acquirer_ops (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'webhook_endpoints' THEN
                INSERT INTO webhook_endpoints (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'radar_rules' THEN
                INSERT INTO radar_rules (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'value_lists' THEN
                INSERT INTO value_lists (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'value_list_items' THEN
                INSERT INTO value_list_items (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'reviews' THEN
                INSERT INTO reviews (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            WHEN 'radar_configs' THEN
                INSERT INTO radar_configs (id, account, version, created, k1, k2, body)
                VALUES (rid, w_account, 1, w_created, w_k1, w_k2, w_body) ON CONFLICT (id) DO NOTHING;
            ELSE
                RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown record table ' || coalesce(tbl, 'null');
            END CASE;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN
                PERFORM store_conflict(tbl, rid, 'exists', NULL, NULL);
            END IF;
        ELSIF kind = 'update' THEN
            w_account := op->>'account';
            w_created := (op->>'created')::bigint;
            w_k1 := op->>'k1';
            w_k2 := op->>'k2';
            w_body := op->'body';
            CASE tbl
            WHEN 'accounts' THEN
                UPDATE accounts AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'api_keys' THEN
                UPDATE api_keys AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'customers' THEN
                UPDATE customers AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'payment_methods' THEN
                UPDATE payment_methods AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'vault_cards' THEN
                UPDATE vault_cards AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'data_keys' THEN
                UPDATE data_keys AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'payment_intents' THEN
                UPDATE payment_intents AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'charges' THEN
                UPDATE charges AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'refunds' THEN
                UPDATE refunds AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'payment_attempts' THEN
                UPDATE payment_attempts AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'acquirer_ops' THEN
                UPDATE acquirer_ops AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'webhook_endpoints' THEN
                UPDATE webhook_endpoints AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'radar_rules' THEN
                UPDATE radar_rules AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'value_lists' THEN
                UPDATE value_lists AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'value_list_items' THEN
                UPDATE value_list_items AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'reviews' THEN
                UPDATE reviews AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            WHEN 'radar_configs' THEN
                UPDATE radar_configs AS r SET version = r.version + 1, account = w_account, created = w_created,
                    k1 = w_k1, k2 = w_k2, body = w_body
                WHERE r.id = rid AND r.version = expected;
            ELSE
                RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown record table ' || coalesce(tbl, 'null');
            END CASE;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN
                PERFORM store_stale(tbl, rid, expected);
            END IF;
        ELSIF kind IN ('delete', 'check') THEN
            IF NOT store_record_table(tbl) THEN
                RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown record table ' || coalesce(tbl, 'null');
            END IF;
            IF kind = 'delete' THEN
                EXECUTE format('DELETE FROM %I WHERE id = $1 AND ($2::bigint IS NULL OR version = $2)', tbl)
                    USING rid, expected;
                GET DIAGNOSTICS n = ROW_COUNT;
                IF n = 0 THEN
                    PERFORM store_stale(tbl, rid, coalesce(expected, 0));
                END IF;
            ELSE
                EXECUTE format('SELECT version FROM %I WHERE id = $1 FOR SHARE', tbl) INTO v USING rid;
                IF v IS NULL THEN
                    PERFORM store_conflict(tbl, rid, 'missing', NULL, NULL);
                ELSIF v <> expected THEN
                    PERFORM store_conflict(tbl, rid, 'version_mismatch', expected, v);
                END IF;
            END IF;
        ELSE
            RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown store op ' || coalesce(kind, 'null');
        END IF;
    END LOOP;
    IF jsonb_array_length(txn->'events') > 0 THEN
        WITH ins AS (
            INSERT INTO events (id, account, type, object_id, created, body, relayed)
            SELECT e->>'id', e->>'account', e->>'type', e->>'object_id', (e->>'created')::bigint, e->'body', true
            FROM jsonb_array_elements(txn->'events') WITH ORDINALITY AS x(e, ord) ORDER BY x.ord
            RETURNING seq),
        waiting AS (
            INSERT INTO outbox_pending (seq) SELECT seq FROM ins)
        SELECT coalesce(array_agg(seq ORDER BY seq), '{}') INTO seqs FROM ins;
    END IF;
    RETURN seqs;
END
$$;
