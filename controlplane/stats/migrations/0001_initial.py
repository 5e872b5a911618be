import django.db.models.deletion
from django.db import migrations, models

# Each pending change names the message's workspace, mailbox, scheduled_at and what is counted.
POSTGRESQL = """
CREATE FUNCTION stats_count_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
        VALUES (OLD.workspace_id, OLD.mailbox_id, OLD.scheduled_at, OLD.status, -1);
    END IF;
    INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
    VALUES (NEW.workspace_id, NEW.mailbox_id, NEW.scheduled_at, NEW.status, 1);
    RETURN NULL;
END $$;

CREATE TRIGGER stats_message_inserted AFTER INSERT ON controlplane_message
FOR EACH ROW EXECUTE FUNCTION stats_count_message();

CREATE TRIGGER stats_message_changed AFTER UPDATE OF status, scheduled_at, mailbox_id ON controlplane_message
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.scheduled_at IS DISTINCT FROM NEW.scheduled_at
                   OR OLD.mailbox_id IS DISTINCT FROM NEW.mailbox_id)
EXECUTE FUNCTION stats_count_message();

-- A message counts once as hard-bounced and once as complained, however many reports arrive.
CREATE FUNCTION stats_count_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM controlplane_event e
               WHERE e.message_id = NEW.message_id AND e.type = NEW.type AND e.seq <> NEW.seq
                 AND (e.type = 'message.complained' OR e.data->>'bounce_type' = 'hard')) THEN
        RETURN NULL;
    END IF;
    INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
    SELECT m.workspace_id, m.mailbox_id, m.scheduled_at,
           CASE NEW.type WHEN 'message.complained' THEN 'complaint' ELSE 'hard_bounce' END, 1
    FROM controlplane_message m WHERE m.id = NEW.message_id;
    RETURN NULL;
END $$;

CREATE TRIGGER stats_outcome_inserted AFTER INSERT ON controlplane_event
FOR EACH ROW WHEN (NEW.message_id IS NOT NULL AND (NEW.type = 'message.complained'
                   OR (NEW.type = 'message.bounced' AND NEW.data->>'bounce_type' = 'hard')))
EXECUTE FUNCTION stats_count_outcome();
"""

POSTGRESQL_REVERSE = """
DROP TRIGGER IF EXISTS stats_outcome_inserted ON controlplane_event;
DROP TRIGGER IF EXISTS stats_message_changed ON controlplane_message;
DROP TRIGGER IF EXISTS stats_message_inserted ON controlplane_message;
DROP FUNCTION IF EXISTS stats_count_outcome();
DROP FUNCTION IF EXISTS stats_count_message();
"""

SQLITE = [
    """CREATE TRIGGER stats_message_inserted AFTER INSERT ON controlplane_message BEGIN
        INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
        VALUES (NEW.workspace_id, NEW.mailbox_id, NEW.scheduled_at, NEW.status, 1);
    END""",
    """CREATE TRIGGER stats_message_changed AFTER UPDATE OF status, scheduled_at, mailbox_id ON controlplane_message
    WHEN OLD.status IS NOT NEW.status OR OLD.scheduled_at IS NOT NEW.scheduled_at
      OR OLD.mailbox_id IS NOT NEW.mailbox_id
    BEGIN
        INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
        VALUES (OLD.workspace_id, OLD.mailbox_id, OLD.scheduled_at, OLD.status, -1);
        INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
        VALUES (NEW.workspace_id, NEW.mailbox_id, NEW.scheduled_at, NEW.status, 1);
    END""",
    """CREATE TRIGGER stats_outcome_inserted AFTER INSERT ON controlplane_event
    WHEN NEW.message_id IS NOT NULL AND (NEW.type = 'message.complained'
         OR (NEW.type = 'message.bounced' AND json_extract(NEW.data, '$.bounce_type') = 'hard'))
      AND NOT EXISTS (SELECT 1 FROM controlplane_event e
                      WHERE e.message_id = NEW.message_id AND e.type = NEW.type AND e.seq <> NEW.seq
                        AND (e.type = 'message.complained' OR json_extract(e.data, '$.bounce_type') = 'hard'))
    BEGIN
        INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
        SELECT m.workspace_id, m.mailbox_id, m.scheduled_at,
               CASE NEW.type WHEN 'message.complained' THEN 'complaint' ELSE 'hard_bounce' END, 1
        FROM controlplane_message m WHERE m.id = NEW.message_id;
    END""",
]

# What was sent before the triggers existed: the last 45 days, so the 30-day charts start full.
BACKFILL = [
    """INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
       SELECT workspace_id, mailbox_id, scheduled_at, status, 1 FROM controlplane_message WHERE scheduled_at >= %s""",
    """INSERT INTO stats_pendingcount (workspace_id, mailbox_id, at, metric, change)
       SELECT m.workspace_id, m.mailbox_id, m.scheduled_at,
              CASE e.type WHEN 'message.complained' THEN 'complaint' ELSE 'hard_bounce' END, 1
       FROM controlplane_message m
       JOIN (SELECT DISTINCT message_id, type FROM controlplane_event
             WHERE message_id IS NOT NULL AND (type = 'message.complained'
                   OR (type = 'message.bounced' AND {hard}))) e ON e.message_id = m.id
       WHERE m.scheduled_at >= %s""",
]


def install_triggers(apps, schema_editor):
    import datetime as dt

    from django.utils import timezone

    connection = schema_editor.connection
    since = connection.ops.adapt_datetimefield_value(timezone.now() - dt.timedelta(days=45))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(POSTGRESQL)
            hard = "data->>'bounce_type' = 'hard'"
        elif connection.vendor == "sqlite":
            for statement in SQLITE:
                cursor.execute(statement)
            hard = "json_extract(data, '$.bounce_type') = 'hard'"
        else:
            raise NotImplementedError(f"Daily counts need PostgreSQL or SQLite, not {connection.vendor}.")
        for statement in BACKFILL:
            cursor.execute(statement.format(hard=hard), [since])


def remove_triggers(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(POSTGRESQL_REVERSE)
        else:
            for name in ("stats_outcome_inserted", "stats_message_changed", "stats_message_inserted"):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('controlplane', '0004_hourly_reservation'),
        ('mailboxes', '0004_hourly_and_minute_caps'),
        ('workspaces', '0003_retention'),
    ]

    operations = [
        migrations.CreateModel(
            name='PendingCount',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('workspace_id', models.CharField(max_length=40)),
                ('mailbox_id', models.CharField(max_length=40, null=True)),
                ('at', models.DateTimeField(help_text="The message's scheduled_at: its day is the count's day.")),
                ('metric', models.CharField(help_text='A message status, hard_bounce or complaint.', max_length=20)),
                ('change', models.SmallIntegerField()),
            ],
            options={
                'indexes': [models.Index(fields=['workspace_id', 'at'], name='stats_pending_ws_at')],
            },
        ),
        migrations.CreateModel(
            name='MailboxDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('metric', models.CharField(max_length=20)),
                ('count', models.IntegerField(default=0)),
                ('mailbox', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='mailboxes.mailbox')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('mailbox', 'day', 'metric'), name='stats_mailbox_day')],
            },
        ),
        migrations.CreateModel(
            name='WorkspaceDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('metric', models.CharField(max_length=20)),
                ('count', models.IntegerField(default=0)),
                ('workspace', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='workspaces.workspace')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('workspace', 'day', 'metric'), name='stats_workspace_day')],
            },
        ),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
