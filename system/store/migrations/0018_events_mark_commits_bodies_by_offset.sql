-- Two changes to the commit lane's functions (docs/performance.md, 2026-12-07, ninth session).
--
-- 1. A commit with events is marked by its events, not by a row in the applied-transaction log.
--
-- store_commit_framed wrote one `store_txns` row per transaction so that a transaction sent
-- again after its answer was lost (the writer retries under the same id) is applied once. That
-- was 5.2 of the 21.5 rows a payment flow inserted, each with two index entries and a later
-- delete by the reaper. A transaction with events already writes rows no other transaction can:
-- each event's id is drawn fresh for it. So from here on the events go in first, marked with
-- the transaction's id (`events.txn_id`, new), with `ON CONFLICT (id) DO NOTHING`:
--   * every event inserted: the transaction is new, and its writes follow as before;
--   * none inserted, and the first one stored carries this transaction's id (or, for one
--     applied by an older version of this function, its id is in `store_txns`): applied
--     before, answered as before (NULL: already applied), nothing written;
--   * anything else: an event id another transaction stored; refused with the unique
--     violation the plain insert raised.
-- A transaction without events is marked in `store_txns` as before. Events are never reaped,
-- so their mark outlasts the log's retention.
--
-- 2. A batch hands each transaction its bodies by offset instead of by slice. The batch function
-- gave each call `bodies[taken + 1 : taken + counts[i]]`. PL/pgSQL keeps an array variable
-- expanded, and every slice flattened the whole array again (EOH_flatten_into, memcpy): work
-- that grows with the square of the batch, 12 % of the instructions of executing the commit
-- lane in a replay of the bench's traffic. store_commit_framed_at(txn, bodies, first, nbodies)
-- reads the call's bodies at first + 1 .. first + nbodies of the whole array, which an
-- element read finds without copying; store_commit_framed(txn, bodies) is the call with all of
-- them, and store_commit_framed_batch passes its running offset.
--
-- Rolling upgrade: the functions are the database's, so every node's commits go through them
-- (store_commit, which older nodes call, wraps store_commit_framed). `events.txn_id` is NULL for events written
-- before; their transactions are in `store_txns` until the reaper's retention has passed.
-- Adding a nullable column without a default does not rewrite the table.

ALTER TABLE events ADD COLUMN txn_id text;
COMMENT ON COLUMN events.txn_id IS 'Id of the store transaction that wrote the event (migration 0018): marks the transaction as applied. NULL for events written before 0018.';

-- store_commit_framed as migration 0017 wrote it, but for the mark (events first, and
-- store_txns only for a transaction without events) and for reading its bodies at an offset.
CREATE FUNCTION store_commit_framed_at(txn jsonb, bodies text[], first int, nbodies int) RETURNS bigint[]
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
    nevents int := coalesce(jsonb_array_length(txn->'events'), 0);
    nopbodies int := nbodies - nevents;
    expected bigint;
    n bigint;
    v bigint;
    seqs bigint[] := '{}';
    b text;
    k int;
BEGIN
    IF first < 0 OR nbodies < 0 OR first + nbodies > coalesce(array_length(bodies, 1), 0) THEN
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = format('store_commit_framed_at: bodies %s to %s of %s',
            first + 1, first + nbodies, coalesce(array_length(bodies, 1), 0));
    END IF;
    -- `json` keeps a `\u0000` escape that `jsonb` refuses, and the queue's message bodies (into
    -- which the webhook fan-out copies events) are still `jsonb`: an event holding one would be
    -- stored and then fail every fan-out after it. So a body holding a NUL character is refused
    -- here as `jsonb` refused it, with the same SQLSTATE. The position test keeps the pattern
    -- off nearly every body; the pattern tells the escape from a backslash written as `\\`.
    FOR k IN first + 1 .. first + nbodies LOOP
        b := bodies[k];
        IF strpos(b, '\u0000') > 0 AND b ~ '(^|[^\\])(\\\\)*\\u0000' THEN
            RAISE EXCEPTION USING ERRCODE = '22P05', MESSAGE = 'unsupported Unicode escape sequence',
                DETAIL = 'A body holds the escape of a NUL character, which the queue cannot store.';
        END IF;
    END LOOP;
    IF nopbodies < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = format('store_commit_framed: %s bodies for %s events', nbodies, nevents);
    END IF;
    IF nevents > 0 THEN
        -- The events go in first and mark the transaction: their ids are drawn fresh for it, so
        -- an id already stored by this transaction means it was applied before (its answer was
        -- lost and the writer retried), and nothing else has been written yet.
        WITH ins AS (
            INSERT INTO events (id, account, type, object_id, created, body, relayed, txn_id)
            SELECT e->>'id', e->>'account', e->>'type', e->>'object_id', (e->>'created')::bigint,
                bodies[first + nopbodies + x.ord::int]::json, true, txn->>'id'
            FROM jsonb_array_elements(txn->'events') WITH ORDINALITY AS x(e, ord) ORDER BY x.ord
            ON CONFLICT (id) DO NOTHING
            RETURNING seq),
        waiting AS (
            INSERT INTO outbox_pending (seq) SELECT seq FROM ins)
        SELECT coalesce(array_agg(seq ORDER BY seq), '{}'), count(*) INTO seqs, n FROM ins;
        IF n < nevents THEN
            -- Applied before by this node's version (the first event carries the transaction's
            -- id) or by an older one (its id is in the log).
            IF n = 0 AND (EXISTS (SELECT 1 FROM events WHERE id = txn->'events'->0->>'id' AND events.txn_id = txn->>'id')
                          OR EXISTS (SELECT 1 FROM store_txns WHERE id = txn->>'id')) THEN
                RETURN NULL;
            END IF;
            RAISE EXCEPTION USING ERRCODE = '23505', MESSAGE = 'duplicate key value violates unique constraint "events_id_key"',
                DETAIL = 'An event id of this transaction is stored already, by another transaction.';
        END IF;
    ELSE
        -- Without events, the applied-transaction log marks it.
        INSERT INTO store_txns (id, applied_at) VALUES (txn->>'id', (txn->>'at')::bigint) ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 0 THEN
            RETURN NULL;
        END IF;
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
            IF nb > nopbodies THEN
                RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'store_commit_framed: more writes than bodies';
            END IF;
            w_body := bodies[first + nb]::json;
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
    IF nb <> nopbodies THEN
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = format('store_commit_framed: %s bodies for %s writes and %s events', nbodies, nb, nevents);
    END IF;
    RETURN seqs;
END
$$;

CREATE OR REPLACE FUNCTION store_commit_framed(txn jsonb, bodies text[]) RETURNS bigint[]
LANGUAGE sql AS $$
    SELECT store_commit_framed_at(txn, bodies, 0, coalesce(array_length(bodies, 1), 0))
$$;

CREATE OR REPLACE FUNCTION store_commit_framed_batch(txns text[], bodies text[], counts int[]) RETURNS jsonb
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
                to_jsonb(store_commit_framed_at(txns[i]::jsonb, bodies, taken, counts[i]))));
        EXCEPTION WHEN OTHERS THEN
            answers := array_append(answers, jsonb_build_object('code', SQLSTATE, 'message', SQLERRM));
        END;
        taken := taken + counts[i];
    END LOOP;
    RETURN to_jsonb(answers);
END
$$;
