-- store_get_many: several reads of one record by id in one round trip (the store's read
-- lane, system/store/src/postgres.rs).
--
-- A read by id executes in a few microseconds; its round trip costs PostgreSQL about 40 µs of
-- CPU on the bench machine and the node about as much again (docs/performance.md,
-- 2026-12-07). So reads that arrive while others are being read wait and go together, as
-- commits do (group commit, migration 0009). `tbls[i]` and `ids[i]` name the i-th read; the
-- answer has a row, numbered `n` = i, for each record found and none for one that is not.
-- The function is STABLE: every read of a batch sees one snapshot, taken when the batch's
-- statement starts, so each sees at least what was committed before its caller asked.
-- A record table added later needs its branch here (and its name in store_record_table);
-- `postgres_every_table_reads_through_store_get_many` in system/store/tests/contract.rs fails
-- for a table whose branch is missing.
CREATE FUNCTION store_get_many(tbls text[], ids text[])
RETURNS TABLE (n integer, id text, account text, version bigint, created bigint, k1 text, k2 text, body jsonb)
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
