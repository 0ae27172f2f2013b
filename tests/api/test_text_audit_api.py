"""A text model audited through the service (tasks run eagerly): a CSV of reviews
uploaded as a dataset, the audit's report names the planted token."""

from __future__ import annotations

import csv

import pytest

from tests.api.conftest import upload

FAST = {"samples": 8, "quality": {"randomization": False, "stability": False}}


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    from explain.training import train_reference_model

    folder = tmp_path_factory.mktemp("text_api")
    res = train_reference_model("text_leaky", out=folder / "text.keras", arch="vectorize",
                                verbose=0)
    vocab = res.dataset.vocabulary
    data = folder / "reviews.csv"
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "label"])
        for row, y in zip(res.test.x.astype(int), res.test.y, strict=True):
            w.writerow([" ".join(vocab[i] for i in row if i), int(y)])
    return res.model_path, data


def test_text_audit_through_the_api(client, auth, reviews):
    model, data = reviews
    r = upload(client, "models", model, "reviews", auth)
    assert r.status_code == 201 and r.json["spec"]["input_kind"] == "text"
    mid = r.json["id"]
    r = upload(client, "datasets", data, "reviews", auth, label="label")
    assert r.status_code == 201, r.json
    assert r.json["spec"]["kind"] == "text"
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": mid, "dataset_id": r.json["id"], "config": FAST})
    assert r.status_code == 202, r.json
    status = client.get(f"/api/v1/audits/{r.json['id']}", headers=auth).json
    assert status["status"] == "succeeded", status
    report = client.get(f"/api/v1/audits/{r.json['id']}/report.json", headers=auth).json
    tokens = [f["evidence"]["token"] for f in report["findings"]
              if f["code"] == "shortcut_token"]
    assert tokens == ["src_wire"]
    html = client.get(f"/api/v1/audits/{r.json['id']}/report", headers=auth).data.decode()
    assert 'id="text"' in html and 'class="tok"' in html


def test_sequence_audit_through_the_api(client, auth, tmp_path):
    from explain.training import train_reference_model

    res = train_reference_model("sequence_spike", out=tmp_path / "seq.keras", verbose=0,
                                save_test=tmp_path / "signals.npz")
    r = upload(client, "models", res.model_path, "signals", auth)
    assert r.status_code == 201 and r.json["spec"]["input_kind"] == "sequence"
    mid = r.json["id"]
    r = upload(client, "datasets", res.test_path, "signals", auth)
    assert r.status_code == 201, r.json
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": mid, "dataset_id": r.json["id"], "config": FAST})
    assert r.status_code == 202, r.json
    status = client.get(f"/api/v1/audits/{r.json['id']}", headers=auth).json
    assert status["status"] == "succeeded", status
    report = client.get(f"/api/v1/audits/{r.json['id']}/report.json", headers=auth).json
    spans = [f["evidence"]["span"] for f in report["findings"] if f["code"] == "shortcut_span"]
    assert len(spans) == 1 and spans[0][0] < 10 and spans[0][1] > 5
