# xaudit service image: the API (gunicorn), Celery workers, the beat and Flower.
#
#   docker build -t xaudit .                          CPU (TensorFlow from PyPI)
#   docker build --build-arg EXTRAS=gpu -t xaudit:gpu .   adds tensorflow[and-cuda]
#
# The same image runs every service; docker-compose.yml picks the command.
FROM python:3.11-slim

ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2 \
    XAUDIT_DATA_DIR=/var/lib/xaudit

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin xaudit \
    && mkdir -p /var/lib/xaudit \
    && chown xaudit:xaudit /var/lib/xaudit

WORKDIR /src
COPY pyproject.toml README.md ./
COPY explain ./explain
COPY reports ./reports
COPY api ./api
COPY worker ./worker

# A non-editable install: the source folder is not needed at run time.
RUN if [ -n "$EXTRAS" ]; then pip install ".[${EXTRAS}]"; else pip install .; fi \
    && pip install "flower>=2.0" \
    && rm -rf /src

WORKDIR /var/lib/xaudit
USER xaudit
EXPOSE 8000

# The API. The app is built in each gunicorn worker (no --preload): TensorFlow is not
# fork-safe.
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--worker-class", "gthread", \
     "--threads", "8", "--timeout", "300", "--access-logfile", "-", "api:create_app()"]
