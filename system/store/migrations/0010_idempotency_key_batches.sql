-- Group commit for idempotency keys: taking, finishing and releasing keys (migration 0006's
-- idem_begin, idem_finish and idem_release) through one JSON entry point, alone or in batches.
--
-- idem_call(call) runs one call, chosen by call->>'op':
--   {"op": "begin", "account", "key", "fingerprint", "owner", "ttl_ms", "lock_timeout_ms"}
--       answers idem_begin's row as an object (state, resumed, recovery_point, status,
--       response, taken_by)
--   {"op": "finish", "account", "key", "owner", "status", "response"}   answers the rows changed
--   {"op": "release", "account", "key", "owner"}                        answers the rows changed
-- An unknown op raises PY002.
--
-- idem_batch(calls) runs several, each in its own subtransaction, in order, and answers one
-- object per call: {"ok": answer} or {"code": SQLSTATE, "message": ...}, as
-- store_commit_batch (migration 0009) does for commits. Every one of these functions commits
-- asynchronously (0006 says why that loses nothing), and so does a batch of them; commits go
-- in batches of their own (store_commit_batch), never with these, so that they keep waiting for
-- their flush.
CREATE FUNCTION idem_call(call jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    answer jsonb;
BEGIN
    CASE call->>'op'
    WHEN 'begin' THEN
        SELECT to_jsonb(b) INTO answer
          FROM idem_begin(call->>'account', call->>'key', call->>'fingerprint', call->>'owner',
                          (call->>'ttl_ms')::bigint, (call->>'lock_timeout_ms')::bigint) AS b;
    WHEN 'finish' THEN
        answer := to_jsonb(idem_finish(call->>'account', call->>'key', call->>'owner',
                                       (call->>'status')::integer, call->>'response'));
    WHEN 'release' THEN
        answer := to_jsonb(idem_release(call->>'account', call->>'key', call->>'owner'));
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'PY002', MESSAGE = 'unknown idempotency key call ' || coalesce(call->>'op', 'null');
    END CASE;
    RETURN answer;
END
$$;

CREATE FUNCTION idem_batch(calls jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c jsonb;
    answers jsonb := '[]';
BEGIN
    FOR c IN SELECT value FROM jsonb_array_elements(calls) WITH ORDINALITY AS e(value, n) ORDER BY n LOOP
        BEGIN
            answers := answers || jsonb_build_array(jsonb_build_object('ok', idem_call(c)));
        EXCEPTION WHEN OTHERS THEN
            answers := answers || jsonb_build_array(jsonb_build_object('code', SQLSTATE, 'message', SQLERRM));
        END;
    END LOOP;
    RETURN answers;
END
$$;
