-- A key used again after it expired is a new request (Stripe: "a new request is generated if a
-- key is reused after the original has been pruned"). The ids a request derives from its key
-- must then differ from those of the earlier use, or the new request would find, and answer
-- with, what the earlier one created (another card's PaymentMethod, another amount's
-- PaymentIntent). Each use of a key records the request that took it (`taken_by`); the use is
-- kept when another request resumes it, and callers derive ids from it.
--
-- A request that fails with a 5xx releases its key (no answer is saved, so that a retry runs
-- again and resumes). The row used to be deleted; it is now kept, unlocked and without an
-- answer, so that the retry is known to be the same use: with the same parameters it resumes it,
-- with other parameters it starts a new use.
--
-- Rows taken before this migration have no `taken_by`: their callers keep deriving from the
-- key alone, so a request in flight across the upgrade still resumes what it started. A key
-- released before the upgrade was deleted, though, and its retry cannot be told from a first
-- use; if it derived new ids it could authorize a payment a second time. So on a database that
-- already served requests, uses taken in the first seven days after this migration get no
-- `taken_by` either (`idem_legacy_until`): for that week a key reused after it expired still
-- answers with the earlier use's objects, as before. A new database has no such week.
--
-- Taking, finishing and releasing a key commit asynchronously (synchronous_commit off for that
-- transaction only): they do not wait for their WAL to reach the disk. Nothing is lost that a
-- client could have relied on. Every effect of a request that outlives a crash (a record, an
-- authorization at the network) is made after a synchronous commit of the same database, and
-- that commit flushes the WAL up to itself, so the key taken before it is durable with it. A
-- finish lost in a crash leaves the key as a failed finish always has: the business state it
-- answers for is durable, and a retry resumes it once the lock times out. A key whose request
-- made no durable change may be lost with its answer; a retry then runs the request again.
-- This takes two to three flushes off every POST's path.
ALTER TABLE idempotency_keys ADD COLUMN taken_by text;
COMMENT ON COLUMN idempotency_keys.taken_by IS
    'The request that took this use of the key; ids derived for the request include it. NULL for keys taken before migration 0006 or in the week after it.';

CREATE TABLE store_settings (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
COMMENT ON TABLE store_settings IS 'Values the store''s functions read: idem_legacy_until (Unix ms, see migration 0006).';
INSERT INTO store_settings (name, value)
SELECT 'idem_legacy_until', (extract(epoch from clock_timestamp()) * 1000)::bigint + 7 * 86400000
WHERE EXISTS (SELECT 1 FROM accounts) OR EXISTS (SELECT 1 FROM idempotency_keys);

DROP FUNCTION idem_begin(text, text, text, text, bigint, bigint);

-- As in 0004, and: returns `taken_by` when the caller holds the key; a released key (unlocked,
-- no answer) is resumed by the same parameters and taken afresh by others.
CREATE FUNCTION idem_begin(p_account text, p_key text, p_fingerprint text, p_owner text, p_ttl_ms bigint,
                           p_lock_timeout_ms bigint,
                           OUT state text, OUT resumed boolean, OUT recovery_point text,
                           OUT status integer, OUT response text, OUT taken_by text)
LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (extract(epoch from clock_timestamp()) * 1000)::bigint;
    new_use text := p_owner;
    n bigint;
    r record;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF now_ms < coalesce((SELECT s.value FROM store_settings s WHERE s.name = 'idem_legacy_until'), 0) THEN
        new_use := NULL;
    END IF;
    resumed := false;
    -- First use, or the key expired: take it. A live key is left as it is (and locked).
    INSERT INTO idempotency_keys AS k (account, key, fingerprint, owner, locked_at, recovery_point, status, response,
                                       expires_at, taken_by)
    VALUES (p_account, p_key, p_fingerprint, p_owner, now_ms, NULL, NULL, NULL, now_ms + p_ttl_ms, new_use)
    ON CONFLICT (account, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, owner = EXCLUDED.owner, locked_at = EXCLUDED.locked_at,
            recovery_point = NULL, status = NULL, response = NULL, expires_at = EXCLUDED.expires_at,
            taken_by = EXCLUDED.taken_by
        WHERE k.expires_at <= now_ms;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 1 THEN
        state := 'started';
        taken_by := new_use;
        RETURN;
    END IF;
    SELECT k.fingerprint, k.owner, k.locked_at, k.recovery_point, k.status, k.response, k.taken_by
      INTO r FROM idempotency_keys k WHERE k.account = p_account AND k.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        state := 'retry';
        RETURN;
    END IF;
    IF r.status IS NOT NULL AND r.response IS NOT NULL THEN
        IF r.fingerprint <> p_fingerprint THEN
            state := 'mismatch';
        ELSE
            state := 'completed';
            status := r.status;
            response := r.response;
        END IF;
    ELSIF r.locked_at IS NULL AND r.fingerprint <> p_fingerprint THEN
        -- Released by a run that failed, and these are other parameters: a new use of the key.
        UPDATE idempotency_keys k
           SET fingerprint = p_fingerprint, owner = p_owner, locked_at = now_ms, recovery_point = NULL,
               expires_at = now_ms + p_ttl_ms, taken_by = new_use
         WHERE k.account = p_account AND k.key = p_key;
        state := 'started';
        taken_by := new_use;
    ELSIF r.fingerprint <> p_fingerprint THEN
        state := 'mismatch';
    ELSIF r.owner = p_owner OR r.locked_at IS NULL OR now_ms - r.locked_at >= p_lock_timeout_ms THEN
        -- The holder retrying, a lock abandoned by a crash, or a released key retried with the
        -- same parameters: the same use of the key, resumed.
        UPDATE idempotency_keys k SET owner = p_owner, locked_at = now_ms WHERE k.account = p_account AND k.key = p_key;
        state := 'started';
        resumed := r.owner <> p_owner OR r.recovery_point IS NOT NULL;
        recovery_point := r.recovery_point;
        taken_by := r.taken_by;
    ELSE
        state := 'in_progress';
    END IF;
END
$$;

-- Saves the answer of the request holding the key; returns the rows changed (0: not the holder).
CREATE FUNCTION idem_finish(p_account text, p_key text, p_owner text, p_status integer, p_response text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE idempotency_keys SET response = p_response, status = p_status, locked_at = NULL
     WHERE account = p_account AND key = p_key AND owner = p_owner;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Unlocks the key of a request that failed (5xx) without saving an answer; returns the rows
-- changed (0: not the holder, or the key is gone).
CREATE FUNCTION idem_release(p_account text, p_key text, p_owner text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE idempotency_keys SET locked_at = NULL
     WHERE account = p_account AND key = p_key AND owner = p_owner;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
