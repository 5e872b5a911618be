"""Daily counts of messages by status, and of hard bounces and complaints, per workspace and per mailbox.

Charts read these instead of the messages table. Database triggers (see the first migration) write one
pending change per message insert, per change of a message's status, day or mailbox, and per first hard
bounce or complaint of a message, in the writer's own transaction, so no code path can forget them;
`services.fold` adds the pending changes to the daily rows (every minute, and the readers add what is not
folded yet).
"""
