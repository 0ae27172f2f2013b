#!/usr/bin/env bash
# Makes sure what the test suite talks to is present and running:
# Redis, PostgreSQL (trust auth, database "test") and Debian's headless Chromium.
set -uo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
SUDO=""
if [ "$(id -u)" != "0" ] && have sudo; then SUDO="sudo"; fi

apt_install() {
    if have apt-get; then
        $SUDO apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null 2>&1 \
            || echo "ensure-system: could not install $*" >&2
    fi
}

# Chromium + driver for the browser tests.
if [ ! -x /usr/bin/chromium ]; then
    echo "ensure-system: installing chromium"
    apt_install chromium chromium-driver
fi

# Redis
if ! (have redis-cli && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG); then
    have redis-server || apt_install redis-server
    echo "ensure-system: starting redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log \
        || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
fi

# PostgreSQL
if ! (have pg_isready && pg_isready -h 127.0.0.1 -p 5432 -q); then
    if [ -d /etc/postgresql ]; then
        echo "ensure-system: starting postgresql"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
        for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
    else
        echo "ensure-system: PostgreSQL is not installed; its tests will be skipped" >&2
    fi
fi
if have psql && pg_isready -h 127.0.0.1 -p 5432 -q; then
    psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
        || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
fi
exit 0
