-- The webhook fan-out reads the outbox directly. It used to go through a queue: a relay moved
-- each committed event into the `webhook_events` queue (marking it relayed), and the fan-out
-- received it there, sent its delivery messages and acknowledged it; five writes per event.
-- Now the fan-out reads the events not marked yet and, in one transaction, marks them and sends
-- their delivery messages; two writes per event (the event and its mark), and still exactly
-- once. `events.relayed` now means "fanned out".
--
-- Events that an older version relayed but did not fan out yet are still in the queue: they
-- are put back into the outbox (unmarked) so that the new fan-out handles them. Their delivery
-- messages, if a fan-out sent some before it stopped, keep their deduplication ids, so a
-- delivery is not sent twice. Events dead-lettered in that queue are put back too: the new
-- fan-out has no dead letters of its own, and each of them is an event merchants never got.
UPDATE events SET relayed = false
WHERE id IN (SELECT dedup FROM queue_messages WHERE queue = 'webhook_events' AND state IN ('live', 'dead') AND dedup IS NOT NULL);
DELETE FROM queue_messages WHERE queue = 'webhook_events';
COMMENT ON COLUMN events.relayed IS 'Fanned out: the event''s webhook delivery messages were sent in the transaction that set this.';
