"""Uploads: intake before storage, refusals leave no row or blob, names are validated,
versions increase per (tenant, name)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from tests.api.conftest import state, upload


def test_model_upload_stores_a_versioned_blob(app, client, auth, mlp_file):
    r = upload(client, "models", mlp_file, "churn", auth)
    assert r.status_code == 201, r.json
    body = r.json
    assert body["name"] == "churn" and body["version"] == 1
    assert body["spec"]["input_shape"] == [4]
    assert len(body["sha256"]) == 64
    store = app.extensions["xaudit_blobs"]
    assert store.keys() == [f"{body['sha256']}.keras"]
    r2 = upload(client, "models", mlp_file, "churn", auth)
    assert r2.json["version"] == 2
    # Same content: one blob, two versions.
    assert store.keys() == [f"{body['sha256']}.keras"]
    assert upload(client, "models", mlp_file, "other", auth).json["version"] == 1
    listed = client.get("/api/v1/models?name=churn", headers=auth).json["items"]
    assert [m["version"] for m in listed] == [2, 1]
    one = client.get(f"/api/v1/models/{body['id']}", headers=auth)
    assert one.status_code == 200 and one.json["sha256"] == body["sha256"]
    assert state(app)["tmp"] == 0


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("filename,content,code", [
    ("m.keras", b"not a zip at all", "corrupt_file"),
    ("m.keras", _zip_bytes({"../../evil.txt": b"x"}), None),
    ("m.pkl", b"\x80\x04K\x01.", "unsupported_format"),
    ("m.keras", b"", "corrupt_file"),
])
def test_bad_model_files_are_refused_and_leave_nothing(app, client, auth, tmp_path,
                                                       filename, content, code):
    before = state(app)
    r = client.post("/api/v1/models", data={"file": (io.BytesIO(content), filename),
                                            "name": "m"},
                    headers=auth, content_type="multipart/form-data")
    assert 400 <= r.status_code < 500, r.json
    assert set(r.json["error"]) >= {"code", "message"}
    if code:
        assert r.json["error"]["code"] == code
    assert state(app) == before


@pytest.mark.parametrize("name", ["", "<script>alert(1)</script>", "../../etc/passwd",
                                  "a" * 200, "name with spaces", "\u202eevil", "-leading"])
def test_hostile_names_are_refused(app, client, auth, mlp_file, name):
    before = state(app)
    r = upload(client, "models", mlp_file, name, auth)
    assert r.status_code == 422
    assert r.json["error"]["code"] == "validation_error"
    assert "name" in r.json["error"]["message"]
    assert state(app) == before


def test_missing_file_field_is_a_validation_error(client, auth):
    r = client.post("/api/v1/models", data={"name": "m"}, headers=auth,
                    content_type="multipart/form-data")
    assert r.status_code == 422 and "file" in r.json["error"]["message"]
    r = client.post("/api/v1/models", json={"name": "m"}, headers=auth)
    assert r.status_code == 422


def test_oversized_upload_is_413_and_leaves_nothing(tmp_path, mlp_file):
    from tests.api.conftest import bearer, make_app, new_key

    app = make_app(tmp_path, MAX_CONTENT_LENGTH=2048)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    before = state(app)
    r = upload(client, "models", mlp_file, "big", headers)
    assert r.status_code == 413 and r.json["error"]["code"] == "too_large"
    assert state(app) == before


def test_hostile_model_zoo_is_refused_with_its_code(app, client, auth, tmp_path):
    from tests import hostile

    zoo = hostile.build_hostile_zoo(tmp_path / "zoo", include_savedmodel=True)
    checked = 0
    for name, (path, expected, marker) in sorted(zoo.items()):
        if path.is_dir():
            continue  # a directory cannot be uploaded as one file
        before = state(app)
        r = upload(client, "models", path, "hostile", auth)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.json)
        assert r.json["error"]["code"] == expected, (name, r.json)
        assert not marker.exists(), f"{name}: the payload ran"
        assert state(app) == before, name
        checked += 1
    assert checked >= 5


def test_dataset_upload_and_refusals(app, client, auth, data_file, tmp_path):
    r = upload(client, "datasets", data_file, "rows", auth)
    assert r.status_code == 201, r.json
    assert r.json["spec"]["rows"] == 40 and r.json["spec"]["row_shape"] == [4]
    assert r.json["spec"]["has_labels"] is True
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n1,2,x\n3,4,y\n")
    r = upload(client, "datasets", csv, "table", auth, label="label")
    assert r.status_code == 201 and r.json["spec"]["class_names"] == ["x", "y"]

    before = state(app)
    pickled = tmp_path / "p.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    r = upload(client, "datasets", pickled, "p", auth)
    assert r.status_code == 422 and r.json["error"]["code"] == "pickled_data"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,zzz\n")
    r = upload(client, "datasets", bad, "bad", auth)
    assert r.status_code == 422 and r.json["error"]["code"] == "non_numeric"
    r = upload(client, "datasets", csv, "table", auth, label="nope")
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_labels"
    weird = tmp_path / "x.exe"
    weird.write_bytes(b"MZ....")
    r = upload(client, "datasets", weird, "w", auth)
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_format"
    assert state(app) == before
