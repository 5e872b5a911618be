"""Dropping the `LIKE` indexes Django adds on PostgreSQL beside a character primary key or unique column.

Nothing searches ids by prefix, and every insert and status change paid for them. Used by migrations."""

from django.db import migrations


def _like_indexes(schema_editor, model):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
                       [model._meta.db_table, "%varchar_pattern_ops%"])
        return [row[0] for row in cursor.fetchall()]


def drop_operation(*labels, field="id"):
    """A migration operation dropping those indexes of the models `labels` ("app.Model")."""

    def drop(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for label in labels:
            for index in _like_indexes(schema_editor, apps.get_model(label)):
                schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(index)}")

    def restore(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for label in labels:
            model = apps.get_model(label)
            if not _like_indexes(schema_editor, model):
                schema_editor.execute(schema_editor._create_like_index_sql(model, model._meta.get_field(field)))

    return migrations.RunPython(drop, restore)
