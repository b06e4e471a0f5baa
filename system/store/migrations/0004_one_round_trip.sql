-- One round trip per store request. A commit (its record writes, its outbox events and the
-- applied-transaction mark) and taking an idempotency key each run as one function call, in
-- the one implicit transaction of that statement, instead of BEGIN, a statement per write and
-- COMMIT. The semantics are those of the statement-per-write path they replace (see
-- system/store/src/postgres.rs); a refused commit raises SQLSTATE PY001 with the conflict as
-- JSON in the message, which rolls back everything the call did.

-- The record tables a transaction may write (the Table enum of pay-store).
CREATE FUNCTION store_record_table(tbl text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT tbl IN ('accounts', 'api_keys', 'customers', 'payment_methods', 'vault_cards', 'data_keys',
                   'payment_intents', 'charges', 'refunds', 'payment_attempts', 'acquirer_ops',
                   'webhook_endpoints', 'radar_rules', 'value_lists', 'value_list_items', 'reviews')
$$;

CREATE FUNCTION store_conflict(tbl text, rid text, kind text, expected bigint, actual bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'PY001',
        MESSAGE = json_build_object('table', tbl, 'id', rid, 'kind', kind, 'expected', expected, 'actual', actual)::text;
END
$$;

-- An update or delete of `rid` at version `expected` touched no row: raises the conflict that
-- says why (the record is missing, or it is at another version).
CREATE FUNCTION store_stale(tbl text, rid text, expected bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    EXECUTE format('SELECT version FROM %I WHERE id = $1', tbl) INTO v USING rid;
    IF v IS NULL THEN
        PERFORM store_conflict(tbl, rid, 'missing', NULL, NULL);
    END IF;
    PERFORM store_conflict(tbl, rid, 'version_mismatch', expected, v);
END
$$;

-- txn: {"id", "at", "ops": [{"op", "table", "id", "account", "created", "k1", "k2", "body",
-- "expected"}], "events": [{"id", "account", "type", "object_id", "created", "body"}]}.
-- Returns the events' sequence numbers, or NULL when the transaction id was applied before
-- (nothing is written then).
CREATE FUNCTION store_commit(txn jsonb) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    op jsonb;
    ev jsonb;
    tbl text;
    rid text;
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
        tbl := op->>'table';
        rid := op->>'id';
        expected := (op->>'expected')::bigint;
        IF NOT store_record_table(tbl) THEN
            RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown record table ' || coalesce(tbl, 'null');
        END IF;
        CASE op->>'op'
        WHEN 'insert' THEN
            EXECUTE format('INSERT INTO %I (id, account, version, created, k1, k2, body) '
                           'VALUES ($1, $2, 1, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING', tbl)
                USING rid, op->>'account', (op->>'created')::bigint, op->>'k1', op->>'k2', op->'body';
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN
                PERFORM store_conflict(tbl, rid, 'exists', NULL, NULL);
            END IF;
        WHEN 'update' THEN
            EXECUTE format('UPDATE %I SET version = version + 1, account = $3, created = $4, k1 = $5, k2 = $6, '
                           'body = $7 WHERE id = $1 AND version = $2', tbl)
                USING rid, expected, op->>'account', (op->>'created')::bigint, op->>'k1', op->>'k2', op->'body';
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN
                PERFORM store_stale(tbl, rid, expected);
            END IF;
        WHEN 'delete' THEN
            EXECUTE format('DELETE FROM %I WHERE id = $1 AND ($2::bigint IS NULL OR version = $2)', tbl)
                USING rid, expected;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN
                PERFORM store_stale(tbl, rid, coalesce(expected, 0));
            END IF;
        WHEN 'check' THEN
            EXECUTE format('SELECT version FROM %I WHERE id = $1 FOR SHARE', tbl) INTO v USING rid;
            IF v IS NULL THEN
                PERFORM store_conflict(tbl, rid, 'missing', NULL, NULL);
            ELSIF v <> expected THEN
                PERFORM store_conflict(tbl, rid, 'version_mismatch', expected, v);
            END IF;
        ELSE
            RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown store op ' || coalesce(op->>'op', 'null');
        END CASE;
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

-- Takes or inspects an idempotency key, with lock ages and expiry measured on the database's
-- clock. state is 'started' (resumed, recovery_point set), 'in_progress', 'completed' (status,
-- response set) or 'mismatch'.
CREATE FUNCTION idem_begin(p_account text, p_key text, p_fingerprint text, p_owner text, p_ttl_ms bigint,
                           p_lock_timeout_ms bigint,
                           OUT state text, OUT resumed boolean, OUT recovery_point text,
                           OUT status integer, OUT response text)
LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (extract(epoch from clock_timestamp()) * 1000)::bigint;
    n bigint;
    r record;
BEGIN
    resumed := false;
    -- First use, or the key expired: take it. A live key is left as it is (and locked).
    INSERT INTO idempotency_keys AS k (account, key, fingerprint, owner, locked_at, recovery_point, status, response, expires_at)
    VALUES (p_account, p_key, p_fingerprint, p_owner, now_ms, NULL, NULL, NULL, now_ms + p_ttl_ms)
    ON CONFLICT (account, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, owner = EXCLUDED.owner, locked_at = EXCLUDED.locked_at,
            recovery_point = NULL, status = NULL, response = NULL, expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= now_ms;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 1 THEN
        state := 'started';
        RETURN;
    END IF;
    SELECT k.fingerprint, k.owner, k.locked_at, k.recovery_point, k.status, k.response
      INTO r FROM idempotency_keys k WHERE k.account = p_account AND k.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        state := 'retry';
        RETURN;
    END IF;
    IF r.fingerprint <> p_fingerprint THEN
        state := 'mismatch';
    ELSIF r.status IS NOT NULL AND r.response IS NOT NULL THEN
        state := 'completed';
        status := r.status;
        response := r.response;
    ELSIF r.owner = p_owner OR r.locked_at IS NULL OR now_ms - r.locked_at >= p_lock_timeout_ms THEN
        UPDATE idempotency_keys k SET owner = p_owner, locked_at = now_ms WHERE k.account = p_account AND k.key = p_key;
        state := 'started';
        resumed := r.owner <> p_owner OR r.recovery_point IS NOT NULL;
        recovery_point := r.recovery_point;
    ELSE
        state := 'in_progress';
    END IF;
END
$$;
