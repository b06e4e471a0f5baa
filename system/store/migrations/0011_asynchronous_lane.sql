-- One lane for every call that commits asynchronously: idempotency-key calls (migration 0010)
-- and the fraud service's velocity counters (observing an attempt, recording its outcome),
-- which were single statements sent by system/fraud/src/pg.rs. They now share batches, as
-- commits share theirs (0009).
--
-- async_call(call) runs one call, chosen by call->>'op':
--   {"op": "observe", "attempt_id", "account", "now", "card", "ip", "customer", "day_ms",
--    "hour_ms", "cap"}   answers the attempt's velocity counts (velocity_observe)
--   {"op": "outcome", "attempt_id", "outcome"}   answers the rows changed
--   any other op: idem_call (0010)
-- async_batch(calls) runs several, each in its own subtransaction, in order, answering
-- {"ok": answer} or {"code": SQLSTATE, "message": ...} per call; it replaces idem_batch.
-- Every call here sets synchronous_commit off for its transaction, so a batch of them commits
-- asynchronously too (pay-fraud's pg.rs and migration 0006 say why that loses nothing);
-- commits never share these batches.

-- Inserts the attempt (ON CONFLICT does nothing for an attempt seen within the day, which
-- makes retries free) and counts the windows in the same statement. Each key (card, IP,
-- customer) reads at most its latest `cap` attempts of the day from its index, newest first,
-- so a score costs the same however busy the key is. Rows a data-modifying CTE inserts are
-- not visible to the other parts of the statement (they share one snapshot), so the inserted
-- row is added to the counted set explicitly with UNION ALL; on a retry the insert does
-- nothing and the row already stored is counted by the scan instead, never both.
CREATE FUNCTION velocity_observe(call jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    p_attempt  text   := call->>'attempt_id';
    p_account  text   := call->>'account';
    p_now      bigint := (call->>'now')::bigint;
    p_card     text   := call->>'card';
    p_ip       text   := call->>'ip';
    p_customer text   := call->>'customer';
    p_day      bigint := (call->>'day_ms')::bigint;
    p_hour     bigint := (call->>'hour_ms')::bigint;
    p_cap      bigint := (call->>'cap')::bigint;
    counts     jsonb;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH ins AS (
        INSERT INTO fraud_velocity (attempt_id, account, t, card, ip, customer)
        VALUES (p_attempt, p_account, p_now, p_card, p_ip, p_customer)
        ON CONFLICT (attempt_id) DO UPDATE
            SET account = EXCLUDED.account, t = EXCLUDED.t, card = EXCLUDED.card, ip = EXCLUDED.ip,
                customer = EXCLUDED.customer, outcome = NULL
            WHERE fraud_velocity.t <= p_now - p_day
        RETURNING fraud_velocity.attempt_id, fraud_velocity.t, fraud_velocity.card, fraud_velocity.ip,
                  fraud_velocity.customer, fraud_velocity.outcome
    ), card_seen AS (
        SELECT x.t, x.outcome FROM (
            (SELECT v.attempt_id, v.t, v.outcome FROM fraud_velocity v
              WHERE v.account = p_account AND v.card = p_card AND v.t > p_now - p_day AND v.t <= p_now
              ORDER BY v.t DESC, v.attempt_id COLLATE "C" DESC LIMIT p_cap)
            UNION ALL
            SELECT i.attempt_id, i.t, i.outcome FROM ins i WHERE i.card = p_card AND i.t > p_now - p_day AND i.t <= p_now
        ) x ORDER BY x.t DESC, x.attempt_id COLLATE "C" DESC LIMIT p_cap
    ), ip_seen AS (
        SELECT x.t, x.card FROM (
            (SELECT v.attempt_id, v.t, v.card FROM fraud_velocity v
              WHERE v.account = p_account AND v.ip = p_ip AND v.t > p_now - p_day AND v.t <= p_now
              ORDER BY v.t DESC, v.attempt_id COLLATE "C" DESC LIMIT p_cap)
            UNION ALL
            SELECT i.attempt_id, i.t, i.card FROM ins i WHERE i.ip = p_ip AND i.t > p_now - p_day AND i.t <= p_now
        ) x ORDER BY x.t DESC, x.attempt_id COLLATE "C" DESC LIMIT p_cap
    ), customer_seen AS (
        SELECT x.t, x.card FROM (
            (SELECT v.attempt_id, v.t, v.card FROM fraud_velocity v
              WHERE v.account = p_account AND v.customer = p_customer AND v.t > p_now - p_day AND v.t <= p_now
              ORDER BY v.t DESC, v.attempt_id COLLATE "C" DESC LIMIT p_cap)
            UNION ALL
            SELECT i.attempt_id, i.t, i.card FROM ins i WHERE i.customer = p_customer AND i.t > p_now - p_day AND i.t <= p_now
        ) x ORDER BY x.t DESC, x.attempt_id COLLATE "C" DESC LIMIT p_cap
    )
    SELECT jsonb_build_object(
        'card_1h',           (SELECT count(*) FROM card_seen c WHERE c.t > p_now - p_hour),
        'card_24h',          (SELECT count(*) FROM card_seen),
        'card_declines_1h',  (SELECT count(*) FROM card_seen c WHERE c.t > p_now - p_hour AND c.outcome IN ('declined', 'blocked')),
        'card_declines_24h', (SELECT count(*) FROM card_seen c WHERE c.outcome IN ('declined', 'blocked')),
        'ip_1h',             (SELECT count(*) FROM ip_seen s WHERE s.t > p_now - p_hour),
        'ip_24h',            (SELECT count(*) FROM ip_seen),
        'customer_cards',    (SELECT count(DISTINCT s.card) FROM customer_seen s),
        'ip_cards',          (SELECT count(DISTINCT s.card) FROM ip_seen s)
    ) INTO counts;
    RETURN counts;
END
$$;

CREATE FUNCTION async_call(call jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    CASE call->>'op'
    WHEN 'observe' THEN
        RETURN velocity_observe(call);
    WHEN 'outcome' THEN
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE fraud_velocity SET outcome = call->>'outcome'
         WHERE attempt_id = call->>'attempt_id' AND outcome IS NULL;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN to_jsonb(n);
    ELSE
        RETURN idem_call(call);
    END CASE;
END
$$;

CREATE FUNCTION async_batch(calls jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c jsonb;
    answers jsonb := '[]';
BEGIN
    FOR c IN SELECT value FROM jsonb_array_elements(calls) WITH ORDINALITY AS e(value, n) ORDER BY n LOOP
        BEGIN
            answers := answers || jsonb_build_array(jsonb_build_object('ok', async_call(c)));
        EXCEPTION WHEN OTHERS THEN
            answers := answers || jsonb_build_array(jsonb_build_object('code', SQLSTATE, 'message', SQLERRM));
        END;
    END LOOP;
    RETURN answers;
END
$$;

DROP FUNCTION idem_batch(jsonb);
