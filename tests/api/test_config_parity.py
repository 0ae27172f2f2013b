"""One validation of an audit config: ``POST /audits``, ``POST /schedules``, the CLI and the
worker refuse the same configs with the same code, and the API does it at the door (422,
nothing stored, nothing queued)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.api.conftest import state, upload

BAD = [
    ({"samples": "many"}, "bad_config"),
    ({"samples": 1}, "bad_config"),
    ({"methods": ["lime"]}, "unknown_method"),
    ({"methods": [["saliency"]]}, "bad_config"),
    ({"methods": "saliency"}, "bad_config"),
    ({"bogus_option": 3}, "bad_config"),
    ({"quality": {"stability": "yes"}}, "bad_config"),
    ({"method_options": {"shap": 3}}, "bad_config"),
    ({"method_options": {"lime": {}}}, "bad_config"),
    ({"method_options": {"integrated_gradients": {"stepz": 8}}}, "bad_config"),
    ({"thresholds": {"drift_min_ndcg": "high"}}, "bad_config"),
    ({"image_shortcuts": {"min_mass": 0.1}}, "bad_config"),
    ({"image_shortcuts": {"min_drop": "high"}}, "bad_config"),
    ({"image_shortcuts": {"min_consistency": 1.5}}, "bad_config"),
    ({"image_shortcuts": [0.1]}, "bad_config"),
]


@pytest.fixture
def ids(app, client, auth, mlp_file, data_file):
    model = upload(client, "models", mlp_file, "mlp", auth).json
    data = upload(client, "datasets", data_file, "rows", auth).json
    return model["id"], data["id"]


@pytest.mark.parametrize(("config", "code"), BAD)
def test_a_bad_config_is_refused_alike_everywhere(app, client, auth, ids, config, code,
                                                  tmp_path):
    from api.lifecycle import classify
    from explain.audit import AuditConfig
    from explain.cli import main
    from explain.errors import XauditError

    # The pipeline's own parse (what the worker runs) ...
    with pytest.raises(XauditError) as err:
        AuditConfig.from_dict(config)
    assert err.value.code == code
    # ... which the worker records as the user's error with that code ...
    assert classify(err.value)[0] == code

    # ... and the API refuses at the door, storing and queueing nothing.
    before = state(app)
    model_id, dataset_id = ids
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": model_id, "dataset_id": dataset_id, "config": config})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == code
    r = client.post("/api/v1/schedules", headers=auth,
                    json={"cron": "0 3 * * *", "model_name": "mlp", "dataset_name": "rows",
                          "config": config})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == code
    assert state(app) == before

    # The CLI: one line, the same code, before anything is loaded.
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config), encoding="utf-8")
    out = CliRunner().invoke(main, ["audit", str(tmp_path / "no-model.keras"),
                                    "--data", str(tmp_path / "no-data.npz"),
                                    "--config", str(cfg)])
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}]"), out.output


def test_a_good_config_is_accepted(client, auth, ids):
    model_id, dataset_id = ids
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": model_id, "dataset_id": dataset_id,
                          "config": {"samples": 4, "methods": ["saliency"]}})
    assert r.status_code == 202, r.json
    # Image shortcut settings are part of the config, checked the same way.
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": model_id, "dataset_id": dataset_id,
                          "config": {"image_shortcuts": {"min_mass_share": 0.1,
                                                         "random_regions": 4}}})
    assert r.status_code == 202, r.json
