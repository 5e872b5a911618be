# The control plane's image: one image, three process types (see Procfile and docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PORT=8000

WORKDIR /app
COPY pyproject.toml ./
COPY controlplane ./controlplane
COPY workspaces ./workspaces
COPY mailboxes ./mailboxes
COPY suppression ./suppression
COPY audit ./audit
COPY providers ./providers
COPY templates ./templates
COPY manage.py Procfile ./
# Editable: the code runs from /app, where settings find templates/ beside it.
RUN pip install -e . \
    && DEBUG=true python manage.py collectstatic --noinput -v0 \
    && useradd --system --uid 10001 --home-dir /app controlplane \
    && mkdir -p /app/var && chown -R controlplane /app/var

USER controlplane
EXPOSE 8000
# The Procfile's `web`; docker-compose.yml runs `release` and `worker` from the same image.
CMD ["sh", "-c", "exec gunicorn controlplane.wsgi --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-3}"]
