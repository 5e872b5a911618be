"""One pending row per (workspace, mailbox, minute, status) a statement changes, its changes summed,
rather than one per message: a hand-off claim of a hundred messages over twenty mailboxes writes
about forty rows instead of two hundred, and a batch intake of a thousand one per mailbox.

`at` is truncated to the minute (in UTC): every time zone's offset is whole minutes, so a local day
starts on a minute and the truncated time falls on the same local day. Sums can pass a small integer."""

from django.db import migrations, models

FORWARD = """
CREATE OR REPLACE FUNCTION stats_count_messages_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
    SELECT workspace_id, mailbox_id, date_trunc('minute', scheduled_at, 'UTC'), status, count(*) FROM new_rows
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION stats_count_messages_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
    SELECT side.workspace_id, side.mailbox_id, date_trunc('minute', side.scheduled_at, 'UTC'), side.status,
           sum(side.change)
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    CROSS JOIN LATERAL (VALUES (o.workspace_id, o.mailbox_id, o.scheduled_at, o.status, -1),
                               (n.workspace_id, n.mailbox_id, n.scheduled_at, n.status, 1))
        AS side (workspace_id, mailbox_id, scheduled_at, status, change)
    WHERE o.status IS DISTINCT FROM n.status OR o.scheduled_at IS DISTINCT FROM n.scheduled_at
       OR o.mailbox_id IS DISTINCT FROM n.mailbox_id
    GROUP BY 1, 2, 3, 4
    HAVING sum(side.change) <> 0;
    RETURN NULL;
END $$;
"""

BACKWARD = """
CREATE OR REPLACE FUNCTION stats_count_messages_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
    SELECT workspace_id, mailbox_id, scheduled_at, status, 1 FROM new_rows;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION stats_count_messages_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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
"""


def _run(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):

    dependencies = [("stats", "0002_statement_triggers")]

    operations = [
        migrations.AlterField("pendingcount", "change", models.IntegerField()),
        migrations.RunPython(_run(FORWARD), _run(BACKWARD)),
    ]
