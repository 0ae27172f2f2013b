"""Shared test setup: Keras on TensorFlow, deterministic seeds, quiet logs."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """This test session's own ``redis-server`` (see :mod:`tests.redis_server`)."""
    from tests import redis_server as rs

    if not rs.available():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = rs.RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    rs.set_current(server)
    yield server
    rs.set_current(None)
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """A URL of the session's own Redis, flushed for this test."""
    redis_server.flush()
    yield redis_server.url()
    if redis_server.up():
        redis_server.client().flushall()
