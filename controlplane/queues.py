"""RQ configuration: named queues on REDIS_URL (see settings.RQ_QUEUES).

One Redis client (and its connection pool) per URL and process: making a client per enqueue
would open a new connection each time."""

import django_rq
import redis
from django.conf import settings

QUEUE_NAMES = settings.RQ_QUEUE_NAMES
_clients = {}


def _client(url: str):
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, health_check_interval=30)
    return client


def redis_connection():
    return _client(settings.RQ_QUEUES["default"]["URL"])


def queue(name: str = "default"):
    return django_rq.get_queue(name, connection=_client(settings.RQ_QUEUES[name]["URL"]))
