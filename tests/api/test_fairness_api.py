"""Group fairness through the service: a CSV with sensitive columns uploaded, audited with
``config.sensitive``, and a schedule whose runs track the gap (tasks run eagerly)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tests.api.conftest import upload

FAST = {"methods": ["integrated_gradients"], "samples": 4, "global_rows": 100}


@pytest.fixture(scope="module")
def lending(tmp_path_factory):
    from explain.training import train_reference_model

    folder = tmp_path_factory.mktemp("lending_api")
    res = train_reference_model("lending", out=folder / "lending.keras", seed=0, verbose=0)
    # Its retrained successor: same data, unbiased labels (the gap closes).
    train_reference_model("lending", out=folder / "lending_fixed.keras", seed=0,
                          shortcut=False, verbose=0)
    test = res.test
    test.to_npz(folder / "loans.npz")
    data = test.to_csv(folder / "loans.csv", label="approved")
    return res.model_path, data


def _ids(client, auth, lending, sensitive="group,age"):
    model, data = lending
    r = upload(client, "models", model, "lender", auth)
    assert r.status_code == 201, r.json
    form = {"label": "approved"}
    if sensitive:
        form["sensitive"] = sensitive
    r = upload(client, "datasets", data, "loans", auth, **form)
    return r.json["id"] if r.status_code == 201 else None, r


def test_dataset_upload_names_its_sensitive_columns(client, auth, lending):
    ds, r = _ids(client, auth, lending)
    assert r.status_code == 201, r.json
    assert r.json["spec"]["sensitive"] == ["group", "age"]
    assert "group" not in r.json["spec"]["feature_names"]
    # Without them, the text column is refused as an input; a missing column is a 422.
    _, r = _ids(client, auth, lending, sensitive=None)
    assert r.status_code == 422 and r.json["error"]["code"] == "non_numeric"
    _, r = _ids(client, auth, lending, sensitive="group,race")
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_sensitive"
    assert "race" in r.json["error"]["message"]


def test_audit_with_config_sensitive_reports_fairness(client, auth, lending):
    ds, _ = _ids(client, auth, lending)
    mid = client.get("/api/v1/models", headers=auth).json["items"][0]["id"]
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": mid, "dataset_id": ds, "config": {**FAST, "sensitive": ["group"]}})
    assert r.status_code == 202, r.json
    status = client.get(f"/api/v1/audits/{r.json['id']}", headers=auth).json
    assert status["status"] == "succeeded", status
    report = client.get(f"/api/v1/audits/{r.json['id']}/report.json", headers=auth).json
    assert [a["name"] for a in report["fairness"]["attributes"]] == ["group"]
    codes = {f["code"] for f in report["findings"]}
    assert "group_disparity" in codes
    html = client.get(f"/api/v1/audits/{r.json['id']}/report", headers=auth).data.decode()
    assert 'id="fairness"' in html


@pytest.mark.parametrize("config,code", [
    ({"sensitive": ["race"]}, "bad_sensitive"),
    ({"sensitive": "group", "thresholds": {"fairness_min_group": 1000}}, "bad_sensitive"),
    ({"sensitive": [3]}, "bad_config"),
    ({"fairness": {"n_boot": 1}}, "bad_config"),
])
def test_bad_sensitive_config_is_refused_before_queueing(client, auth, lending, config, code):
    ds, _ = _ids(client, auth, lending)
    mid = client.get("/api/v1/models", headers=auth).json["items"][0]["id"]
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": mid, "dataset_id": ds, "config": {**FAST, **config}})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == code
    assert client.get("/api/v1/audits", headers=auth).json["items"] == []


def test_scheduled_audits_track_the_gap(app, client, auth, lending):
    from api import db
    from worker.beat import dispatch_due

    _ids(client, auth, lending)
    r = client.post("/api/v1/schedules", headers=auth, json={
        "cron": "0 * * * *", "model_name": "lender", "dataset_name": "loans",
        "config": {**FAST, "sensitive": ["group"]}})
    assert r.status_code == 201, r.json
    r = client.post("/api/v1/schedules", headers=auth, json={
        "cron": "0 * * * *", "model_name": "lender", "dataset_name": "loans",
        "config": {**FAST, "sensitive": ["race"]}})
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_sensitive"
    now = db.utcnow()
    first = dispatch_due(app, now + timedelta(hours=1))
    second = dispatch_due(app, now + timedelta(hours=2))
    assert len(first) == len(second) == 1
    report = client.get(f"/api/v1/audits/{second[0]}/report.json", headers=auth).json
    drift = report["fairness"]["drift"]
    assert drift and {d["attribute"] for d in drift} == {"group"}
    # Same model, same data: the gap did not move, so no drift finding.
    assert all(abs(d["change"]) < 1e-9 for d in drift)
    assert "disparity_drift" not in {f["code"] for f in report["findings"]}
    assert np.isfinite([d["current"] for d in drift]).all()


def test_a_schedule_reports_when_the_gap_moves(app, client, auth, lending):
    from api import db
    from worker.beat import dispatch_due

    model, _ = lending
    _ids(client, auth, lending)
    r = client.post("/api/v1/schedules", headers=auth, json={
        "cron": "0 * * * *", "model_name": "lender", "dataset_name": "loans",
        "config": {**FAST, "sensitive": ["group"]}})
    assert r.status_code == 201, r.json
    now = db.utcnow()
    first = dispatch_due(app, now + timedelta(hours=1))
    # A new version of the model, trained on unbiased labels, is audited at the next run.
    r = upload(client, "models", model.with_name("lending_fixed.keras"), "lender", auth)
    assert r.status_code == 201 and r.json["version"] == 2
    second = dispatch_due(app, now + timedelta(hours=2))
    before = client.get(f"/api/v1/audits/{first[0]}/report.json", headers=auth).json
    after = client.get(f"/api/v1/audits/{second[0]}/report.json", headers=auth).json
    def flagged(report):
        return {g["metric"] for f in report["findings"] if f["code"] == "group_disparity"
                for g in f["evidence"]["flagged"]}

    # The approval gap closes (error-rate gaps against the historical labels remain).
    assert "demographic_parity_difference" in flagged(before)
    assert "demographic_parity_difference" not in flagged(after)
    drift = [f for f in after["findings"] if f["code"] == "disparity_drift"]
    assert len(drift) == 1 and drift[0]["evidence"]["attribute"] == "group"
    moved = {c["metric"]: c for c in drift[0]["evidence"]["changes"]}
    assert moved["demographic_parity_difference"]["change"] < -0.1


def test_npz_attributes_are_listed_and_picked_by_the_audit(client, auth, lending):
    model, data = lending
    assert upload(client, "models", model, "lender", auth).status_code == 201
    r = upload(client, "datasets", data.with_name("loans.npz"), "loans", auth)
    assert r.status_code == 201, r.json
    assert r.json["spec"]["sensitive"] == ["group", "age"]
    mid = client.get("/api/v1/models", headers=auth).json["items"][0]["id"]
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": mid, "dataset_id": r.json["id"], "config": {**FAST, "sensitive": ["age"]}})
    assert r.status_code == 202, r.json
    report = client.get(f"/api/v1/audits/{r.json['id']}/report.json", headers=auth).json
    assert [a["name"] for a in report["fairness"]["attributes"]] == ["age"]
    assert report["fairness"]["attributes"][0]["binned"] is True
