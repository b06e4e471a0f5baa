-- radar_configs: one record per merchant account whose Radar rules or value lists have
-- changed, written in the same store transaction as every such change. Its version is the
-- account's Radar configuration generation: a fraud host keeps an account's compiled rules
-- and lists and, on each payment it scores, reads only this record (by id) to learn whether
-- they are still current, instead of listing the rules and the lists (and each list's items)
-- and compiling the rules again. A change saved on any host moves the version, so the next
-- payment scored on every host sees it (system/fraud/src/service.rs, `RadarCache`).
--
-- The table is read by id only: no secondary index, and it is never listed per account
-- (`Table::indexed`, `Table::listable`; `postgres_indexes_are_the_declared_lookups`).
CREATE TABLE radar_configs (
    id      text PRIMARY KEY,
    account text   NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    created bigint NOT NULL,
    k1      text,
    k2      text,
    body    jsonb  NOT NULL
);
COMMENT ON TABLE radar_configs IS 'Radar configuration generation per account: version moves with every change of its rules, lists or list items.';

CREATE OR REPLACE FUNCTION store_record_table(tbl text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT tbl IN ('accounts', 'api_keys', 'customers', 'payment_methods', 'vault_cards', 'data_keys',
                   'payment_intents', 'charges', 'refunds', 'payment_attempts', 'acquirer_ops',
                   'webhook_endpoints', 'radar_rules', 'value_lists', 'value_list_items', 'reviews',
                   'radar_configs')
$$;

-- store_commit as migration 0008 wrote it, with the two static branches of radar_configs.
CREATE OR REPLACE FUNCTION store_commit(txn jsonb) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    op jsonb;
    ev jsonb;
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
    s bigint;
    seqs bigint[] := '{}';
BEGIN
    INSERT INTO store_txns (id, applied_at) VALUES (txn->>'id', (txn->>'at')::bigint) ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    FOR op IN SELECT value FROM jsonb_array_elements(txn->'ops') LOOP
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
    FOR ev IN SELECT value FROM jsonb_array_elements(txn->'events') LOOP
        INSERT INTO events (id, account, type, object_id, created, body)
        VALUES (ev->>'id', ev->>'account', ev->>'type', ev->>'object_id', (ev->>'created')::bigint, ev->'body')
        RETURNING seq INTO s;
        seqs := seqs || s;
    END LOOP;
    RETURN seqs;
END
$$;
