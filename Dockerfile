# authsvc: a slim image that runs as an unprivileged user behind gunicorn.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY authsvc ./authsvc
COPY alembic ./alembic
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTHSVC_ENV=production \
    AUTHSVC_INSTANCE_PATH=/var/lib/authsvc
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /var/lib/authsvc --create-home authsvc
USER authsvc
WORKDIR /var/lib/authsvc
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"]
# Migrations run as their own one-shot step, and nginx holds the clients (see
# docker-compose.yml and deploy/nginx.conf).
ENV AUTHSVC_AUTO_MIGRATE=0
CMD ["authsvc", "serve", "--host", "0.0.0.0", "--port", "8000"]
