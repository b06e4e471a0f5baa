-- Record and event bodies stored as `json`, and sent to store_commit beside the transaction
-- instead of inside it (docs/performance.md, 2026-12-07, fifth session).
--
-- No statement reads a field inside a body: bodies are written whole and read whole. Yet
-- store_commit took each transaction as one `jsonb` argument, so PostgreSQL parsed every body
-- into a binary tree (about 9.5 ns a byte) only to keep it, and printed it back to text on
-- every read (about 11 ns a byte): together about a seventh of PostgreSQL's CPU on the bench.
-- From here on
--   * the body columns are `json`, which checks that the text is one JSON value (about 3 ns a
--     byte) and keeps it as written, so a read sends the stored text back as it is;
--   * store_commit_framed takes the transaction without its bodies (a small `jsonb`) and the
--     bodies as a `text[]`, one per insert and update in the order of the ops, then one per
--     event in the order of the events;
--   * store_commit_framed_batch is store_commit_batch for it.
-- `json` keeps what `jsonb` would have normalised (key order, spacing, duplicate keys): the
-- bodies are serialized by the services, which write each key once, and JsonText compares
-- bodies by value, so nothing reads a difference. It also keeps the escape `\u0000`, which
-- `jsonb` refuses; store_commit_framed refuses it as `jsonb` did (see there).
--
-- Rolling upgrade: a node of an older version still calls store_commit(jsonb) and
-- store_commit_batch(jsonb), and reads through store_get_many and plain SELECTs. store_commit
-- becomes a wrapper that takes the bodies out of the transaction and calls store_commit_framed;
-- its batch function calls it as before; the driver reads a `json` column as it read `jsonb`.
-- The ALTERs rewrite every record table and `events` under an ACCESS EXCLUSIVE lock
-- (docs/operations.md says how long that takes and when to run it).

ALTER TABLE accounts ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE api_keys ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE customers ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE payment_methods ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE vault_cards ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE data_keys ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE payment_intents ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE charges ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE refunds ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE payment_attempts ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE acquirer_ops ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE webhook_endpoints ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE radar_rules ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE value_lists ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE value_list_items ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE reviews ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE radar_configs ALTER COLUMN body TYPE json USING body::json;
ALTER TABLE events ALTER COLUMN body TYPE json USING body::json;

-- store_commit as migration 0016 wrote it, but for where each body comes from.
CREATE FUNCTION store_commit_framed(txn jsonb, bodies text[]) RETURNS bigint[]
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
    w_body json;
    nb int := 0;
    nbodies int := coalesce(array_length(bodies, 1), 0);
    nevents int := coalesce(jsonb_array_length(txn->'events'), 0);
    expected bigint;
    n bigint;
    v bigint;
    seqs bigint[] := '{}';
    b text;
BEGIN
    -- `json` keeps a `\u0000` escape that `jsonb` refuses, and the queue's message bodies (into
    -- which the webhook fan-out copies events) are still `jsonb`: an event holding one would be
    -- stored and then fail every fan-out after it. So a body holding a NUL character is refused
    -- here as `jsonb` refused it, with the same SQLSTATE. The position test keeps the pattern
    -- off nearly every body; the pattern tells the escape from a backslash written as `\\`.
    FOREACH b IN ARRAY coalesce(bodies, '{}') LOOP
        IF strpos(b, '\u0000') > 0 AND b ~ '(^|[^\\])(\\\\)*\\u0000' THEN
            RAISE EXCEPTION USING ERRCODE = '22P05', MESSAGE = 'unsupported Unicode escape sequence',
                DETAIL = 'A body holds the escape of a NUL character, which the queue cannot store.';
        END IF;
    END LOOP;
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
        -- An insert or update writes the op's columns and takes the next body.
        IF kind IN ('insert', 'update') THEN
            w_account := op->>'account';
            w_created := (op->>'created')::bigint;
            w_k1 := op->>'k1';
            w_k2 := op->>'k2';
            nb := nb + 1;
            IF nb > nbodies THEN
                RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'store_commit_framed: more writes than bodies';
            END IF;
            w_body := bodies[nb]::json;
        END IF;
        IF kind = 'insert' THEN
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
    IF nb + nevents <> nbodies THEN
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = format('store_commit_framed: %s bodies for %s writes and %s events', nbodies, nb, nevents);
    END IF;
    IF nevents > 0 THEN
        WITH ins AS (
            INSERT INTO events (id, account, type, object_id, created, body, relayed)
            SELECT e->>'id', e->>'account', e->>'type', e->>'object_id', (e->>'created')::bigint, bodies[nb + x.ord::int]::json, true
            FROM jsonb_array_elements(txn->'events') WITH ORDINALITY AS x(e, ord) ORDER BY x.ord
            RETURNING seq),
        waiting AS (
            INSERT INTO outbox_pending (seq) SELECT seq FROM ins)
        SELECT coalesce(array_agg(seq ORDER BY seq), '{}') INTO seqs FROM ins;
    END IF;
    RETURN seqs;
END
$$;

-- The transaction as versions before this one send it, bodies inside: taken out in the order
-- store_commit_framed reads them, then applied by it.
CREATE OR REPLACE FUNCTION store_commit(txn jsonb) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    bodies text[];
BEGIN
    SELECT coalesce(array_agg(b ORDER BY part, ord), '{}') INTO bodies FROM (
        SELECT 1 AS part, w.ord, (w.op->'body')::text AS b
        FROM jsonb_array_elements(coalesce(txn->'ops', '[]')) WITH ORDINALITY AS w(op, ord)
        WHERE w.op->>'op' IN ('insert', 'update')
        UNION ALL
        SELECT 2, e.ord, (e.ev->'body')::text
        FROM jsonb_array_elements(coalesce(txn->'events', '[]')) WITH ORDINALITY AS e(ev, ord)) AS parts;
    RETURN store_commit_framed(txn, bodies);
END
$$;

-- Several transactions in one round trip, each in a subtransaction of its own, answered as
-- store_commit_batch answers: txns[i] is the i-th transaction without its bodies, and its
-- counts[i] bodies follow those of the transactions before it in `bodies`.
CREATE FUNCTION store_commit_framed_batch(txns text[], bodies text[], counts int[]) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    i int;
    taken int := 0;
    answers jsonb[] := '{}';
BEGIN
    IF coalesce(array_length(txns, 1), 0) <> coalesce(array_length(counts, 1), 0) THEN
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'store_commit_framed_batch needs one body count per transaction';
    END IF;
    IF (SELECT count(*) FILTER (WHERE c IS NULL OR c < 0) > 0 OR coalesce(sum(c), 0) <> coalesce(array_length(bodies, 1), 0)
        FROM unnest(counts) AS c) THEN
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'store_commit_framed_batch: the body counts do not add up to the bodies';
    END IF;
    FOR i IN 1 .. coalesce(array_length(txns, 1), 0) LOOP
        BEGIN
            answers := array_append(answers, jsonb_build_object('seqs',
                to_jsonb(store_commit_framed(txns[i]::jsonb, coalesce(bodies[taken + 1 : taken + counts[i]], '{}')))));
        EXCEPTION WHEN OTHERS THEN
            answers := array_append(answers, jsonb_build_object('code', SQLSTATE, 'message', SQLERRM));
        END;
        taken := taken + counts[i];
    END LOOP;
    RETURN to_jsonb(answers);
END
$$;

-- migration 0014's store_get_many, answering the body as the `json` it now is.
DROP FUNCTION store_get_many(text[], text[]);
CREATE FUNCTION store_get_many(tbls text[], ids text[])
RETURNS TABLE (n integer, id text, account text, version bigint, created bigint, k1 text, k2 text, body json)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF coalesce(array_length(tbls, 1), 0) <> coalesce(array_length(ids, 1), 0) THEN
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'store_get_many needs one id per table';
    END IF;
    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
        CASE tbls[i]
        WHEN 'accounts' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM accounts AS r WHERE r.id = ids[i];
        WHEN 'api_keys' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM api_keys AS r WHERE r.id = ids[i];
        WHEN 'customers' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM customers AS r WHERE r.id = ids[i];
        WHEN 'payment_methods' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM payment_methods AS r WHERE r.id = ids[i];
        WHEN 'vault_cards' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM vault_cards AS r WHERE r.id = ids[i];
        WHEN 'data_keys' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM data_keys AS r WHERE r.id = ids[i];
        WHEN 'payment_intents' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM payment_intents AS r WHERE r.id = ids[i];
        WHEN 'charges' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM charges AS r WHERE r.id = ids[i];
        WHEN 'refunds' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM refunds AS r WHERE r.id = ids[i];
        WHEN 'payment_attempts' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM payment_attempts AS r WHERE r.id = ids[i];
        WHEN 'acquirer_ops' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM acquirer_ops AS r WHERE r.id = ids[i];
        WHEN 'webhook_endpoints' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM webhook_endpoints AS r WHERE r.id = ids[i];
        WHEN 'radar_rules' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM radar_rules AS r WHERE r.id = ids[i];
        WHEN 'value_lists' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM value_lists AS r WHERE r.id = ids[i];
        WHEN 'value_list_items' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM value_list_items AS r WHERE r.id = ids[i];
        WHEN 'reviews' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM reviews AS r WHERE r.id = ids[i];
        WHEN 'radar_configs' THEN
            RETURN QUERY SELECT i, r.id, r.account, r.version, r.created, r.k1, r.k2, r.body FROM radar_configs AS r WHERE r.id = ids[i];
        ELSE
            RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown record table ' || coalesce(tbls[i], 'null');
        END CASE;
    END LOOP;
END
$$;
