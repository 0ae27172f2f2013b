"""Property-based API testing: schemathesis generates requests from `/openapi.json` (valid
and invalid ones) and no response may be a 5xx, because a 5xx is a bug.

The app runs in-process (WSGI) with a valid Bearer key, tasks eager; the examples per
operation are bounded and derandomized so the run is repeatable and stays short.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.api.conftest import bearer, make_app, new_key, upload  # noqa: E402

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25
#: With real ids a valid audit or /explain request runs its (eager) task: fewer examples.
MAX_EXAMPLES_PINNED = 10


@pytest.fixture(scope="module")
def st_app(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("schemathesis"))
    yield app
    app.extensions["xaudit_db"]["engine"].dispose()


@pytest.fixture(scope="module")
def st_key(st_app):
    return new_key(st_app, "fuzz")


@pytest.fixture(scope="module")
def seeded(st_app, st_key, mlp_file, data_file):
    """Real ids to pin into generated requests, so generation reaches past the 404s:
    a model, a dataset, a queued audit (never run), a schedule."""
    from api import db, services

    client = st_app.test_client()
    model = upload(client, "models", mlp_file, "mlp", bearer(st_key)).get_json()
    data = upload(client, "datasets", data_file, "rows", bearer(st_key)).get_json()
    with st_app.test_request_context():
        session = db.session()
        tenant = session.get(db.ModelRow, model["id"]).tenant_id
        audit = services.create_audit(session, tenant, session.get(db.ModelRow, model["id"]),
                                      session.get(db.DatasetRow, data["id"]), {})
        audit_id = audit.id
    schedule = client.post("/api/v1/schedules", headers=bearer(st_key), json={
        "cron": "0 3 * * *", "model_name": "mlp", "dataset_name": "rows"}).get_json()
    return {"model_id": model["id"], "dataset_id": data["id"], "object_id": model["id"],
            "audit_id": audit_id, "schedule_id": schedule["id"], "model_name": "mlp",
            "dataset_name": "rows"}


@pytest.fixture(scope="module")
def api_schema(st_app):
    return schemathesis.openapi.from_wsgi("/openapi.json", st_app)


def test_the_spec_lists_every_api_operation(api_schema):
    paths = set(api_schema.raw_schema["paths"])
    for path in ("/api/v1/models", "/api/v1/datasets", "/api/v1/audits",
                 "/api/v1/audits/{audit_id}", "/api/v1/audits/{audit_id}/report",
                 "/api/v1/explain", "/api/v1/schedules", "/healthz"):
        assert path in paths
    assert "/" not in paths and "/ui" not in paths  # the web page is not an API operation


# schemathesis' own pytest integration (``parametrize`` on a fixture-built schema) needs
# the schema at collection time or a pytest internal that pytest 9 removed, so each
# operation is driven here with its hypothesis strategy, one generation mode at a time.
@pytest.mark.parametrize(("mode", "pin"), [
    (GenerationMode.POSITIVE, False),
    (GenerationMode.NEGATIVE, False),
    (GenerationMode.POSITIVE, True),
], ids=["positive", "negative", "positive-real-ids"])
def test_no_server_errors(api_schema, st_key, mode, pin, request):
    headers = {"Authorization": f"Bearer {st_key}"}
    ids = request.getfixturevalue("seeded") if pin else {}

    def pin_ids(case):
        # The generated body and path keep their other values; only the ids are real.
        for name in list(case.path_parameters or {}):
            if name in ids:
                case.path_parameters[name] = ids[name]
        if isinstance(case.body, dict):
            for name in list(case.body):
                if name in ids:
                    case.body[name] = ids[name]
        return case

    failures: dict[str, str] = {}
    checked = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy(generation_mode=mode)
        if pin:
            strategy = strategy.map(pin_ids)

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES_PINNED if pin else MAX_EXAMPLES, derandomize=True, deadline=None,
                  database=None, suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            call()
            checked += 1
        except Unsatisfiable:
            continue  # no invalid request can be built for this operation in this mode
        except Exception as exc:
            failures[operation.label] = str(exc)[:2000]
    assert checked >= 10
    assert not failures, "\n\n".join(f"{label}:\n{msg}" for label, msg in failures.items())
