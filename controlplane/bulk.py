"""Inserting many rows fast: PostgreSQL's COPY, or `bulk_create` elsewhere and for a few rows.

COPY costs about a third of `bulk_create` for a thousand messages (no per-value array building in
Python, no large statement to parse), which is most of what a batch intake spends in the database.
"""

import json
import operator

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import NOT_PROVIDED, signals
from django.db.models.base import ModelState

COPY_FROM = 20  # fewer rows go through bulk_create: the difference is noise there


def new(model, **values):
    """`model(**values)` for a new instance, built directly: the instance `Model.__init__` gives (each
    field's value or default, a related instance cached and its database adopted) without its
    per-field descriptor and keyword handling, which was about a tenth of a batch intake's Python per
    message (a message, its event and its audit entry). `Model.__init__` itself is used while
    something listens to the model's init signals, a database router is configured or the model has
    a one-to-one field."""
    plan = _plan(model)
    if plan is None or init_is_heard(model) or settings.DATABASE_ROUTERS:
        return model(**values)
    obj = model.__new__(model)
    state = obj._state = ModelState()
    data = obj.__dict__
    for name, attname, related_model, target, default in plan:
        if related_model is not None and name in values:
            related = values.pop(name)
            if related is not None:
                if not isinstance(related, related_model):
                    raise ValueError(f'Cannot assign "{related!r}": "{model._meta.object_name}.{name}" must be a '
                                     f'"{related_model._meta.object_name}" instance.')
                data[attname] = getattr(related, target)
                if state.db is None:
                    state.db = related._state.db or DEFAULT_DB_ALIAS
                if related._state.db is None:
                    related._state.db = state.db
            else:
                data[attname] = None
            state.fields_cache[name] = related
            continue
        value = values.pop(attname, NOT_PROVIDED)
        data[attname] = default() if value is NOT_PROVIDED else value
    if values:
        raise TypeError(f"{model.__name__}() got unexpected keyword arguments: {', '.join(map(repr, values))}")
    return obj


def init_is_heard(model) -> bool:
    """Whether something listens to `model`'s init signals: instances must then be built by
    `Model.__init__` (which sends them), not directly."""
    return signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model)


_PLANS = {}


def _plan(model):
    """Per concrete field: (name, attname, related model of a foreign key, its target attname, default)."""
    if model not in _PLANS:
        fields = [f for f in model._meta.concrete_fields if not f.generated]
        if any(f.one_to_one for f in fields):
            _PLANS[model] = None
        else:
            _PLANS[model] = [
                (f.name, f.attname, f.remote_field.model._meta.concrete_model if f.many_to_one else None,
                 f.target_field.attname if f.many_to_one else None, f.get_default)
                for f in fields]
    return _PLANS[model]


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
