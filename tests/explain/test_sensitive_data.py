"""Sensitive attributes in user data and the bundled lending twins."""

from __future__ import annotations

import numpy as np
import pytest

from explain.datasets import LENDING_PROXY, Dataset, load_any, load_bundled, load_data_file
from explain.errors import DataError


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


CSV = "a,b,sex,age,y\n1,2,f,34,0\n3,4,m,51,1\n5,6,f,29,1\n7,8,m,62,0\n"


def test_csv_sensitive_columns_are_kept_out_of_the_inputs(tmp_path):
    ds = load_data_file(_csv(tmp_path, CSV), label="y", sensitive="sex, age")
    assert ds.feature_names == ["a", "b"]
    assert ds.x.shape == (4, 2)
    assert list(ds.sensitive) == ["sex", "age"]
    assert ds.sensitive["sex"].tolist() == ["f", "m", "f", "m"]
    # Text that reads as whole numbers comes back as integers (so it can be binned).
    assert ds.sensitive["age"].dtype == np.int64
    assert ds.sensitive["age"].tolist() == [34, 51, 29, 62]


def test_csv_without_sensitive_reads_every_column_as_a_feature(tmp_path):
    with pytest.raises(DataError) as err:
        load_data_file(_csv(tmp_path, CSV), label="y")
    assert err.value.code == "non_numeric" and "sex" in str(err.value)


@pytest.mark.parametrize("text,sensitive,match", [
    (CSV, "race", "'race' is not in"),
    (CSV, "y", "both the label and a sensitive"),
    (CSV, "sex,sex", "named twice"),
    ("a,sex,y\n1,f,0\n2,,1\n", "sex", "missing in row 1"),
])
def test_csv_sensitive_errors_are_clear(tmp_path, text, sensitive, match):
    with pytest.raises(DataError, match=match) as err:
        load_data_file(_csv(tmp_path, text), label="y", sensitive=sensitive)
    assert err.value.code == "bad_sensitive"


def test_npz_sensitive_one_and_several_columns(tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    p = tmp_path / "one.npz"
    np.savez(p, x=x, y=np.array([0, 1, 0, 1]), sensitive=np.array(["a", "b", "a", "b"]))
    ds = load_data_file(p)
    assert ds.sensitive["sensitive"].tolist() == ["a", "b", "a", "b"]

    p = tmp_path / "two.npz"
    np.savez(p, x=x, y=np.array([0, 1, 0, 1]),
             sensitive=np.array([[0, 30], [1, 40], [0, 50], [1, 60]]),
             sensitive_names=np.array(["sex", "age"]))
    ds = load_data_file(p, sensitive=["age"])
    assert list(ds.sensitive) == ["age"] and ds.sensitive["age"].tolist() == [30, 40, 50, 60]
    with pytest.raises(DataError, match="'race'") as err:
        load_data_file(p, sensitive="race")
    assert err.value.code == "bad_sensitive"


@pytest.mark.parametrize("arrays,match", [
    ({"sensitive": np.array(["a", "b", "a"])}, "3 values but"),
    ({"sensitive": np.array([[1, 2], [3, 4], [5, 6], [7, 8]]),
      "sensitive_names": np.array(["only_one"])}, "names 1 sensitive"),
    ({"sensitive": np.array([1.0, np.nan, 2.0, 3.0])}, "finite value"),
    ({"sensitive": np.zeros((4, 1, 1))}, r"\(N,\) or \(N, k\)"),
])
def test_npz_sensitive_must_line_up(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]), **arrays)
    with pytest.raises(DataError, match=match) as err:
        load_data_file(p)
    assert err.value.code == "bad_sensitive"


def test_npy_has_no_room_for_sensitive(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((3, 2)))
    with pytest.raises(DataError, match="no room") as err:
        load_data_file(p, sensitive="sex")
    assert err.value.code == "bad_sensitive"


def test_round_trip_and_subset_keep_the_attributes(tmp_path):
    ds = Dataset(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), name="d",
                 sensitive={"sex": np.array(["f", "m", "f", "m"]),
                            "age": np.array([20, 30, 40, 50])})
    back = load_data_file(ds.to_npz(tmp_path / "d.npz"))
    assert back.sensitive["sex"].tolist() == ["f", "m", "f", "m"]
    assert back.sensitive["age"].tolist() == [20, 30, 40, 50]
    sub = ds.subset([3, 0])
    assert sub.sensitive["sex"].tolist() == ["m", "f"]
    assert sub.sensitive["age"].tolist() == [50, 20]
    # The attributes are not model inputs: they do not change the data's identity.
    assert Dataset(x=ds.x, y=ds.y, name="d").sha256 == ds.sha256


def test_lending_twins_plant_a_penalty_that_leaks_through_the_proxy():
    from sklearn.metrics import roc_auc_score

    biased = load_bundled("lending", seed=1)
    clean = load_bundled("lending", seed=1, bias=False)
    assert "group" not in biased.feature_names and "age" not in biased.feature_names
    j = biased.feature_names.index(LENDING_PROXY)
    honest = [i for i in range(biased.x.shape[1]) if i != j]
    np.testing.assert_array_equal(biased.x[:, honest], clean.x[:, honest])
    np.testing.assert_array_equal(biased.sensitive["group"], clean.sensitive["group"])
    b = biased.sensitive["group"] == "B"
    # Biased labels: B approved far less often; clean labels: about the same.
    assert biased.y[~b].mean() - biased.y[b].mean() > 0.15
    assert abs(clean.y[~b].mean() - clean.y[b].mean()) < 0.06
    assert roc_auc_score(b, biased.x[:, j]) > 0.9
    assert abs(roc_auc_score(b, clean.x[:, j]) - 0.5) < 0.05
    assert biased.meta["proxy_feature"] == LENDING_PROXY
    assert clean.meta["proxy_feature"] is None


def test_load_any_selects_bundled_attributes():
    ds = load_any("lending", sensitive="group")
    assert list(ds.sensitive) == ["group"]


def test_csv_written_by_to_csv_reads_back_with_label_and_sensitive(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32) * 1e3
    data = Dataset(x=x, y=np.arange(40) % 2, feature_names=["a", "b", "c"],
                   sensitive={"group": np.array(["A", "B"] * 20),
                              "age": rng.integers(18, 80, 40)})
    path = data.to_csv(tmp_path / "d.csv", label="approved")
    back = load_data_file(path, label="approved", sensitive="group,age")
    np.testing.assert_array_equal(back.x, x)  # float32 values round-trip exactly
    np.testing.assert_array_equal(back.y, data.y)
    assert back.feature_names == ["a", "b", "c"]
    np.testing.assert_array_equal(back.sensitive["group"].astype(str), data.sensitive["group"])
    np.testing.assert_array_equal(back.sensitive["age"].astype(int), data.sensitive["age"])


def test_to_csv_refuses_what_a_csv_cannot_hold(tmp_path):
    with pytest.raises(DataError, match="tabular"):
        Dataset(x=np.zeros((2, 4, 4, 1), np.float32), kind="image").to_csv(tmp_path / "i.csv")
    with pytest.raises(DataError, match="one label column"):
        Dataset(x=np.zeros((2, 3), np.float32), y=np.zeros((2, 2))).to_csv(tmp_path / "y.csv")
    with pytest.raises(DataError, match="repeat"):
        Dataset(x=np.zeros((2, 1), np.float32), y=np.zeros(2), feature_names=["label"]
                ).to_csv(tmp_path / "r.csv")
