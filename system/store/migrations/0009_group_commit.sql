-- store_commit_batch: several store transactions in one round trip and one database
-- transaction (group commit).
--
-- Each element of `txns` is what store_commit takes. Each runs in its own subtransaction
-- (the BEGIN ... EXCEPTION block), so one that conflicts or fails rolls back alone and the
-- others still apply, exactly as if each had been its own call of store_commit in this order.
-- The answers come back in the same order, one object per transaction:
--   {"seqs": [...]}            applied; the sequence numbers of its events
--   {"seqs": null}             its id was applied before; nothing written (store_commit's NULL)
--   {"code": "...", "message": "..."}   the SQLSTATE and message store_commit raised
-- Nothing is durable until the whole batch commits, and the caller answers no transaction
-- before that; if the batch's commit fails, every transaction in it is unapplied and its caller
-- retries it under the same id.
CREATE FUNCTION store_commit_batch(txns jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t jsonb;
    answers jsonb := '[]';
BEGIN
    FOR t IN SELECT value FROM jsonb_array_elements(txns) WITH ORDINALITY AS e(value, n) ORDER BY n LOOP
        BEGIN
            answers := answers || jsonb_build_array(jsonb_build_object('seqs', to_jsonb(store_commit(t))));
        EXCEPTION WHEN OTHERS THEN
            answers := answers || jsonb_build_array(jsonb_build_object('code', SQLSTATE, 'message', SQLERRM));
        END;
    END LOOP;
    RETURN answers;
END
$$;
