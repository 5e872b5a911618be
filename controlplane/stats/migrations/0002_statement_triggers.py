"""On PostgreSQL, message changes are counted once per statement rather than once per row: a batch
intake (COPY of a thousand messages) or a hand-off claim then adds its pending counts with one
INSERT … SELECT from the statement's transition tables instead of a trigger call per row."""

from django.db import migrations

FORWARD = """
DROP TRIGGER IF EXISTS stats_message_changed ON controlplane_message;
DROP TRIGGER IF EXISTS stats_message_inserted ON controlplane_message;

CREATE FUNCTION stats_count_messages_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
    SELECT workspace_id, mailbox_id, scheduled_at, status, 1 FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION stats_count_messages_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
    SELECT side.workspace_id, side.mailbox_id, side.scheduled_at, side.status, side.change
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    CROSS JOIN LATERAL (VALUES (o.workspace_id, o.mailbox_id, o.scheduled_at, o.status, -1),
                               (n.workspace_id, n.mailbox_id, n.scheduled_at, n.status, 1))
        AS side (workspace_id, mailbox_id, scheduled_at, status, change)
    WHERE o.status IS DISTINCT FROM n.status OR o.scheduled_at IS DISTINCT FROM n.scheduled_at
       OR o.mailbox_id IS DISTINCT FROM n.mailbox_id;
    RETURN NULL;
END $$;

CREATE TRIGGER stats_messages_inserted AFTER INSERT ON controlplane_message
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_count_messages_inserted();

CREATE TRIGGER stats_messages_changed AFTER UPDATE ON controlplane_message
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION stats_count_messages_changed();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS stats_messages_changed ON controlplane_message;
DROP TRIGGER IF EXISTS stats_messages_inserted ON controlplane_message;
DROP FUNCTION IF EXISTS stats_count_messages_changed();
DROP FUNCTION IF EXISTS stats_count_messages_inserted();

CREATE TRIGGER stats_message_inserted AFTER INSERT ON controlplane_message
FOR EACH ROW EXECUTE FUNCTION stats_count_message();

CREATE TRIGGER stats_message_changed AFTER UPDATE OF status, scheduled_at, mailbox_id ON controlplane_message
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.scheduled_at IS DISTINCT FROM NEW.scheduled_at
                   OR OLD.mailbox_id IS DISTINCT FROM NEW.mailbox_id)
EXECUTE FUNCTION stats_count_message();
"""


def _run(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):

    dependencies = [("stats", "0001_initial")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
