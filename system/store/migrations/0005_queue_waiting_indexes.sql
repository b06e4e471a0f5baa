-- Receives no longer read a queue's whole backlog. Dead-lettering looks only at messages
-- received before, and a batch-FIFO receive finds the groups held back only among messages
-- in flight or delayed. Both sets stay small while a backlog of never-received messages grows.
-- A message is in flight only after a receive (invisible_until is set by receives, nacks and
-- extensions, all of which need a receipt), so receive_count > 0 covers every in-flight message.
CREATE INDEX queue_messages_received ON queue_messages (queue, seq) WHERE state = 'live' AND receive_count > 0;
CREATE INDEX queue_messages_available ON queue_messages (queue, available_at) WHERE state = 'live';
