-- idem_call (0010) runs idem_begin as a function scan, `SELECT to_jsonb(b) INTO answer FROM
-- idem_begin(...) AS b`: every begin set up a scan node, a tuple store and a projection for the
-- one row. Called in an expression, the function gives the same record and the same answer
-- (the OUT parameters' names become its keys), and PL/pgSQL evaluates the expression without
-- starting an executor. 6.1 % of the instructions the asynchronous lane executes, replayed on
-- the bench's traffic (docs/performance.md, 2026-12-08, tenth session). Same signature and
-- answers; the other calls return their answer directly too.
CREATE OR REPLACE FUNCTION idem_call(call jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    CASE call->>'op'
    WHEN 'begin' THEN
        RETURN to_jsonb(idem_begin(call->>'account', call->>'key', call->>'fingerprint', call->>'owner',
                                   (call->>'ttl_ms')::bigint, (call->>'lock_timeout_ms')::bigint));
    WHEN 'finish' THEN
        RETURN to_jsonb(idem_finish(call->>'account', call->>'key', call->>'owner',
                                    (call->>'status')::integer, call->>'response'));
    WHEN 'release' THEN
        RETURN to_jsonb(idem_release(call->>'account', call->>'key', call->>'owner'));
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown idempotency key call ' || coalesce(call->>'op', 'null');
    END CASE;
END
$$;
