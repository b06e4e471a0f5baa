-- The webhook queue: SQS-like messages with visibility timeouts, FIFO groups, deduplication
-- and dead letters, in the same database as the outbox that feeds it.
CREATE TABLE queue_messages (
    id              text PRIMARY KEY,
    queue           text    NOT NULL,
    seq             bigserial NOT NULL UNIQUE,
    grp             text,
    dedup           text,
    body            jsonb   NOT NULL,
    created         bigint  NOT NULL,
    available_at    bigint  NOT NULL,
    invisible_until bigint,
    receive_count   integer NOT NULL DEFAULT 0,
    state           text    NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'acked', 'dead')),
    done_at         bigint,
    dead_reason     text
);
CREATE UNIQUE INDEX queue_messages_dedup ON queue_messages (queue, dedup) WHERE dedup IS NOT NULL;
CREATE INDEX queue_messages_live ON queue_messages (queue, seq) WHERE state = 'live';
CREATE INDEX queue_messages_groups ON queue_messages (queue, (COALESCE(grp, id)), seq) WHERE state = 'live';
CREATE INDEX queue_messages_done ON queue_messages (done_at) WHERE state = 'acked';
COMMENT ON TABLE queue_messages IS 'Queue messages; acknowledged rows stay (state acked) for the deduplication window, then the reaper deletes them.';
