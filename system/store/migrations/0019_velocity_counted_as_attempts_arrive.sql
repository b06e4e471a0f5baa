-- Fraud velocity counted as attempts arrive (docs/architecture.md, "fraud velocity";
-- docs/performance.md, 2026-12-08).
--
-- velocity_observe (0011) counted a score's windows from the attempts themselves: each key
-- (card, IP, customer) read and sorted up to `cap` of its rows of the day. A key that sees many
-- payments (a merchant whose server is the client, so one IP address; a few cards in a test)
-- costs a score about as much as a whole payment's commits. From here on the counts are kept
-- as attempts arrive, and a score reads at most one row per key, writer and ten minutes of the
-- day, however busy its keys are:
--
--   fraud_velocity_buckets  attempts and declines per card, attempts per IP, in ten-minute
--                           buckets (`start`, a multiple of 600,000 ms);
--   fraud_velocity_cards    each IP's and each customer's cards, with the last time seen;
--   fraud_velocity_declines each declined or blocked attempt on a card, at the attempt's time.
--
-- A window of length W at `now` holds the attempts with t > now − W. The buckets that start
-- inside it are summed; the part of the oldest bucket inside it is counted from the attempts
-- (or declines) themselves, and only while the sum is under the cap: every count saturates at
-- `cap`, so that part is read for a key that is not busy, whose rows are few. Distinct cards
-- are the cards whose last attempt from the IP or customer is in the day, at most `cap`.
--
-- Nothing is read-modify-written by two transactions at once: each row of the two count tables
-- belongs to one writer (a number each node's store draws from fraud_velocity_writers, and sends
-- with every call), and a node writes its asynchronous calls one batch at a time. Rows shared
-- between nodes would be locked by one batch while another waited, and two batches taking two
-- keys in opposite orders would deadlock. A score sums its keys' rows over all writers.
--
-- Rolling upgrade: a node older than this migration sends no writer and writes as writer 0.
-- Its calls are counted as everyone's are; only nodes writing as 0 can wait on each other's
-- rows. The attempts already stored are counted into the new tables below (as writer 0);
-- attempts recorded by other sessions after this pass has read the table are stored but not
-- counted (no lock is taken, so that scoring never waits for the pass).
-- velocity_prune(cutoff) deletes, in all four tables, the rows no window can hold any more;
-- the fraud role runs it every minute (before this, nothing pruned fraud_velocity).
--
-- No CHECK constraint on these tables: PostgreSQL reads a CHECK expression back from its text
-- form for every statement that inserts or updates the table, which was a tenth of a score's
-- instructions (docs/performance.md). The outcome's values, which 0003 checked on
-- fraud_velocity, are checked by velocity_record_outcome, the only writer of that column; the
-- kinds are written only by the functions below.

CREATE SEQUENCE fraud_velocity_writers;
ALTER TABLE fraud_velocity DROP CONSTRAINT fraud_velocity_outcome_check;

CREATE TABLE fraud_velocity_buckets (
    account  text    NOT NULL,
    kind     "char"  NOT NULL,
    key      text    NOT NULL,
    start    bigint  NOT NULL,
    writer   integer NOT NULL,
    attempts integer NOT NULL,
    declines integer NOT NULL,
    PRIMARY KEY (account, kind, key, start, writer)
);
COMMENT ON TABLE fraud_velocity_buckets IS 'Fraud velocity: attempts (and, for cards, declines) per key and ten-minute bucket, one row per writer (migration 0019).';

CREATE TABLE fraud_velocity_cards (
    account text    NOT NULL,
    kind    "char"  NOT NULL,
    key     text    NOT NULL,
    card    text    NOT NULL,
    writer  integer NOT NULL,
    last_t  bigint  NOT NULL,
    PRIMARY KEY (account, kind, key, card, writer)
);
COMMENT ON TABLE fraud_velocity_cards IS 'Fraud velocity: the cards of each IP (kind i) and customer (kind u), with the time of the last attempt, one row per writer (migration 0019).';

CREATE TABLE fraud_velocity_declines (
    account    text   NOT NULL,
    card       text   NOT NULL,
    t          bigint NOT NULL,
    attempt_id text   NOT NULL,
    PRIMARY KEY (account, card, t, attempt_id)
);
COMMENT ON TABLE fraud_velocity_declines IS 'Fraud velocity: declined and blocked attempts on a card, at the time of the attempt (migration 0019).';
CREATE INDEX fraud_velocity_declines_t ON fraud_velocity_declines (t);

-- The customers' distinct cards are kept in fraud_velocity_cards; nothing reads this any more.
DROP INDEX fraud_velocity_customer;

-- The buckets' length, ten minutes, and the start of the bucket holding t (floor, also for a
-- t before 1970). Every other use of the length calls velocity_bucket_ms(); velocity_bucket
-- spells it out because it runs on every score, where the nested call measured 0.3 % more.
CREATE FUNCTION velocity_bucket_ms() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 600000::bigint $$;
CREATE FUNCTION velocity_bucket(t bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT t - ((t % 600000) + 600000) % 600000 $$;

INSERT INTO fraud_velocity_buckets (account, kind, key, start, writer, attempts, declines)
SELECT account, 'c', card, velocity_bucket(t), 0, count(*),
       count(*) FILTER (WHERE outcome IN ('declined', 'blocked'))
  FROM fraud_velocity WHERE card IS NOT NULL
 GROUP BY account, card, velocity_bucket(t);
INSERT INTO fraud_velocity_buckets (account, kind, key, start, writer, attempts, declines)
SELECT account, 'i', ip, velocity_bucket(t), 0, count(*), 0
  FROM fraud_velocity WHERE ip IS NOT NULL
 GROUP BY account, ip, velocity_bucket(t);
INSERT INTO fraud_velocity_cards (account, kind, key, card, writer, last_t)
SELECT account, 'i', ip, card, 0, max(t)
  FROM fraud_velocity WHERE ip IS NOT NULL AND card IS NOT NULL
 GROUP BY account, ip, card;
INSERT INTO fraud_velocity_cards (account, kind, key, card, writer, last_t)
SELECT account, 'u', customer, card, 0, max(t)
  FROM fraud_velocity WHERE customer IS NOT NULL AND card IS NOT NULL
 GROUP BY account, customer, card;
INSERT INTO fraud_velocity_declines (account, card, t, attempt_id)
SELECT account, card, t, attempt_id
  FROM fraud_velocity WHERE card IS NOT NULL AND outcome IN ('declined', 'blocked');

-- Records the attempt (a retry within the day changes nothing; an attempt id last seen more
-- than a day ago is recorded afresh), counts it into its keys' rows, and answers the counts.
-- The call is 0011's with "writer" added. Each key's buckets are read from the one holding the
-- day window's start; the attempts (or declines) in the part of a window's oldest bucket inside
-- it are read only when that bucket has any and the sum of the buckets after it is under the cap.
CREATE OR REPLACE FUNCTION velocity_observe(call jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    p_attempt  text    := call->>'attempt_id';
    p_account  text    := call->>'account';
    p_now      bigint  := (call->>'now')::bigint;
    p_card     text    := call->>'card';
    p_ip       text    := call->>'ip';
    p_customer text    := call->>'customer';
    p_day      bigint  := (call->>'day_ms')::bigint;
    p_hour     bigint  := (call->>'hour_ms')::bigint;
    p_cap      bigint  := (call->>'cap')::bigint;
    p_writer   integer := coalesce((call->>'writer')::integer, 0);
    -- Each window's first time, and the start of the first bucket wholly inside it.
    s_hour     bigint  := p_now - p_hour + 1;
    s_day      bigint  := p_now - p_day + 1;
    f_hour     bigint  := velocity_bucket(p_now - p_hour + velocity_bucket_ms());
    f_day      bigint  := velocity_bucket(p_now - p_day + velocity_bucket_ms());
    fresh      boolean;
    -- Attempts and declines of the buckets wholly inside the hour (a1, d1) and the day (a24,
    -- d24), and of the bucket holding each window's start (e1, ed1, e24, ed24).
    a1 bigint; d1 bigint; a24 bigint; d24 bigint; e1 bigint; ed1 bigint; e24 bigint; ed24 bigint;
    card_1h bigint; card_24h bigint; card_d1 bigint; card_d24 bigint;
    ip_1h bigint; ip_24h bigint; ip_cards bigint; customer_cards bigint;
    n bigint;
    r record;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO fraud_velocity (attempt_id, account, t, card, ip, customer)
    VALUES (p_attempt, p_account, p_now, p_card, p_ip, p_customer)
    ON CONFLICT (attempt_id) DO UPDATE
        SET account = EXCLUDED.account, t = EXCLUDED.t, card = EXCLUDED.card, ip = EXCLUDED.ip,
            customer = EXCLUDED.customer, outcome = NULL
        WHERE fraud_velocity.t <= p_now - p_day
    RETURNING true INTO fresh;
    IF p_card IS NOT NULL THEN
        IF fresh THEN
            INSERT INTO fraud_velocity_buckets AS b (account, kind, key, start, writer, attempts, declines)
            VALUES (p_account, 'c', p_card, velocity_bucket(p_now), p_writer, 1, 0)
            ON CONFLICT (account, kind, key, start, writer) DO UPDATE SET attempts = b.attempts + 1;
        END IF;
        a1 := 0; d1 := 0; a24 := 0; d24 := 0; e1 := 0; ed1 := 0; e24 := 0; ed24 := 0;
        FOR r IN SELECT CASE WHEN b.start >= f_hour THEN 1 WHEN b.start = f_hour - velocity_bucket_ms() THEN 2
                             WHEN b.start >= f_day THEN 3 ELSE 4 END AS cat,
                        sum(b.attempts) AS a, sum(b.declines) AS d
                   FROM fraud_velocity_buckets b
                  WHERE b.account = p_account AND b.kind = 'c' AND b.key = p_card AND b.start >= f_day - velocity_bucket_ms()
                  GROUP BY 1 LOOP
            -- 1: wholly inside both windows; 2: holds the hour's start, wholly inside the day
            -- (an hour is six buckets, a day 144); 3: wholly inside the day only; 4: holds the
            -- day's start.
            CASE r.cat
            WHEN 1 THEN a1 := r.a; d1 := r.d; a24 := a24 + r.a; d24 := d24 + r.d;
            WHEN 2 THEN e1 := r.a; ed1 := r.d; a24 := a24 + r.a; d24 := d24 + r.d;
            WHEN 3 THEN a24 := a24 + r.a; d24 := d24 + r.d;
            ELSE e24 := r.a; ed24 := r.d;
            END CASE;
        END LOOP;
        IF e1 > 0 AND a1 < p_cap THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM fraud_velocity v WHERE v.account = p_account
                AND v.card = p_card AND v.t >= s_hour AND v.t < f_hour LIMIT p_cap - a1) e;
            a1 := a1 + n;
        END IF;
        IF e24 > 0 AND a24 < p_cap THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM fraud_velocity v WHERE v.account = p_account
                AND v.card = p_card AND v.t >= s_day AND v.t < f_day LIMIT p_cap - a24) e;
            a24 := a24 + n;
        END IF;
        IF ed1 > 0 AND d1 < p_cap THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM fraud_velocity_declines d WHERE d.account = p_account
                AND d.card = p_card AND d.t >= s_hour AND d.t < f_hour LIMIT p_cap - d1) e;
            d1 := d1 + n;
        END IF;
        IF ed24 > 0 AND d24 < p_cap THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM fraud_velocity_declines d WHERE d.account = p_account
                AND d.card = p_card AND d.t >= s_day AND d.t < f_day LIMIT p_cap - d24) e;
            d24 := d24 + n;
        END IF;
        card_1h := least(a1, p_cap); card_24h := least(a24, p_cap);
        card_d1 := least(d1, p_cap); card_d24 := least(d24, p_cap);
        IF fresh AND p_ip IS NOT NULL THEN
            INSERT INTO fraud_velocity_cards AS c (account, kind, key, card, writer, last_t)
            VALUES (p_account, 'i', p_ip, p_card, p_writer, p_now)
            ON CONFLICT (account, kind, key, card, writer) DO UPDATE SET last_t = greatest(c.last_t, EXCLUDED.last_t);
        END IF;
        IF fresh AND p_customer IS NOT NULL THEN
            INSERT INTO fraud_velocity_cards AS c (account, kind, key, card, writer, last_t)
            VALUES (p_account, 'u', p_customer, p_card, p_writer, p_now)
            ON CONFLICT (account, kind, key, card, writer) DO UPDATE SET last_t = greatest(c.last_t, EXCLUDED.last_t);
        END IF;
    END IF;
    IF p_ip IS NOT NULL THEN
        IF fresh THEN
            INSERT INTO fraud_velocity_buckets AS b (account, kind, key, start, writer, attempts, declines)
            VALUES (p_account, 'i', p_ip, velocity_bucket(p_now), p_writer, 1, 0)
            ON CONFLICT (account, kind, key, start, writer) DO UPDATE SET attempts = b.attempts + 1;
        END IF;
        a1 := 0; a24 := 0; e1 := 0; e24 := 0;
        FOR r IN SELECT CASE WHEN b.start >= f_hour THEN 1 WHEN b.start = f_hour - velocity_bucket_ms() THEN 2
                             WHEN b.start >= f_day THEN 3 ELSE 4 END AS cat,
                        sum(b.attempts) AS a
                   FROM fraud_velocity_buckets b
                  WHERE b.account = p_account AND b.kind = 'i' AND b.key = p_ip AND b.start >= f_day - velocity_bucket_ms()
                  GROUP BY 1 LOOP
            CASE r.cat
            WHEN 1 THEN a1 := r.a; a24 := a24 + r.a;
            WHEN 2 THEN e1 := r.a; a24 := a24 + r.a;
            WHEN 3 THEN a24 := a24 + r.a;
            ELSE e24 := r.a;
            END CASE;
        END LOOP;
        IF e1 > 0 AND a1 < p_cap THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM fraud_velocity v WHERE v.account = p_account
                AND v.ip = p_ip AND v.t >= s_hour AND v.t < f_hour LIMIT p_cap - a1) e;
            a1 := a1 + n;
        END IF;
        IF e24 > 0 AND a24 < p_cap THEN
            SELECT count(*) INTO n FROM (SELECT 1 FROM fraud_velocity v WHERE v.account = p_account
                AND v.ip = p_ip AND v.t >= s_day AND v.t < f_day LIMIT p_cap - a24) e;
            a24 := a24 + n;
        END IF;
        ip_1h := least(a1, p_cap); ip_24h := least(a24, p_cap);
        SELECT count(*) INTO ip_cards FROM (SELECT DISTINCT c.card FROM fraud_velocity_cards c
            WHERE c.account = p_account AND c.kind = 'i' AND c.key = p_ip AND c.last_t >= s_day LIMIT p_cap) e;
    END IF;
    IF p_customer IS NOT NULL THEN
        SELECT count(*) INTO customer_cards FROM (SELECT DISTINCT c.card FROM fraud_velocity_cards c
            WHERE c.account = p_account AND c.kind = 'u' AND c.key = p_customer AND c.last_t >= s_day LIMIT p_cap) e;
    END IF;
    -- A key the call does not have is answered 0, as 0011 did; the caller masks it.
    RETURN jsonb_build_object(
        'card_1h', coalesce(card_1h, 0), 'card_24h', coalesce(card_24h, 0),
        'card_declines_1h', coalesce(card_d1, 0), 'card_declines_24h', coalesce(card_d24, 0),
        'ip_1h', coalesce(ip_1h, 0), 'ip_24h', coalesce(ip_24h, 0),
        'customer_cards', coalesce(customer_cards, 0), 'ip_cards', coalesce(ip_cards, 0));
END
$$;

-- velocity_record_outcome: the first outcome of an attempt wins (answers 1; 0 for a later one
-- or an unknown attempt); a decline or block on a card is counted at the attempt's own time.
CREATE FUNCTION velocity_record_outcome(call jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    p_outcome text    := call->>'outcome';
    p_writer  integer := coalesce((call->>'writer')::integer, 0);
    v_account text;
    v_card    text;
    v_t       bigint;
BEGIN
    IF p_outcome IS NULL OR p_outcome NOT IN ('approved', 'declined', 'blocked') THEN
        RAISE check_violation USING MESSAGE = 'unknown attempt outcome';
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE fraud_velocity SET outcome = p_outcome
     WHERE attempt_id = call->>'attempt_id' AND outcome IS NULL
    RETURNING account, card, t INTO v_account, v_card, v_t;
    IF NOT FOUND THEN
        RETURN to_jsonb(0);
    END IF;
    IF v_card IS NOT NULL AND p_outcome IN ('declined', 'blocked') THEN
        INSERT INTO fraud_velocity_declines (account, card, t, attempt_id)
        VALUES (v_account, v_card, v_t, call->>'attempt_id');
        INSERT INTO fraud_velocity_buckets AS b (account, kind, key, start, writer, attempts, declines)
        VALUES (v_account, 'c', v_card, velocity_bucket(v_t), p_writer, 0, 1)
        ON CONFLICT (account, kind, key, start, writer) DO UPDATE SET declines = b.declines + 1;
    END IF;
    RETURN to_jsonb(1);
END
$$;

CREATE OR REPLACE FUNCTION async_call(call jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    CASE call->>'op'
    WHEN 'observe' THEN
        RETURN velocity_observe(call);
    WHEN 'outcome' THEN
        RETURN velocity_record_outcome(call);
    ELSE
        RETURN idem_call(call);
    END CASE;
END
$$;

-- Deletes what no window at or after `cutoff` + 1 day can count: attempts, declines and cards
-- last seen at or before `cutoff`, and buckets that end by then. Answers the attempts deleted.
CREATE FUNCTION velocity_prune(cutoff bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM fraud_velocity WHERE t <= cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM fraud_velocity_declines WHERE t <= cutoff;
    DELETE FROM fraud_velocity_cards WHERE last_t <= cutoff;
    DELETE FROM fraud_velocity_buckets WHERE start + velocity_bucket_ms() <= cutoff + 1;
    RETURN n;
END
$$;
