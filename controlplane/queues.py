"""RQ configuration: named queues on REDIS_URL (see settings.RQ_QUEUES)."""

import django_rq
from django.conf import settings

QUEUE_NAMES = settings.RQ_QUEUE_NAMES


def redis_connection():
    return django_rq.get_connection("default")


def queue(name: str = "default"):
    return django_rq.get_queue(name)
