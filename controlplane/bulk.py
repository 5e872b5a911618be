"""Inserting many rows fast: PostgreSQL's COPY, or `bulk_create` elsewhere and for a few rows.

COPY costs about a third of `bulk_create` for a thousand messages (no per-value array building in
Python, no large statement to parse), which is most of what a batch intake spends in the database.
"""

import json
import operator

from django.db import connection

COPY_FROM = 20  # fewer rows go through bulk_create: the difference is noise there


def insert(model, objs) -> list:
    """Saves new instances of `model` (defaults and auto_now fields applied) and returns them.

    An auto-increment primary key is drawn from its sequence first, so every instance has its pk."""
    objs = list(objs)
    if connection.vendor != "postgresql" or len(objs) < COPY_FROM:
        return model.objects.bulk_create(objs)
    fields = list(model._meta.concrete_fields)
    auto = model._meta.pk if model._meta.pk.get_internal_type() in ("AutoField", "BigAutoField") else None
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        if auto is not None:
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                           [model._meta.db_table, auto.column, len(objs)])
            for obj, (value,) in zip(objs, cursor.fetchall()):
                setattr(obj, auto.attname, value)
        columns = ", ".join(quote(f.column) for f in fields)
        values = [_reader(field) for field in fields]
        with cursor.cursor.copy(f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN") as copy:
            for obj in objs:
                copy.write_row([value(obj) for value in values])
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


def _reader(field):
    """How to read `field`'s value to insert from an instance, worked out once per field rather than per value:
    `pre_save` only where it does something (auto_now dates), JSON as text."""
    if field.get_internal_type() == "JSONField":
        def value(obj, attname=field.attname, encoder=field.encoder):
            data = getattr(obj, attname)
            return None if data is None else json.dumps(data, cls=encoder)
        return value
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return lambda obj: field.pre_save(obj, True)
    return operator.attrgetter(field.attname)
