"""Metric metadata, verdicts and JSON-safe results."""

import json

import numpy as np

from explain.metrics import (
    Category,
    CompletenessGap,
    Deletion,
    Direction,
    MaxSensitivity,
    MethodAgreement,
    MetricResult,
    ModelParameterRandomization,
)


def test_metadata_is_on_the_class():
    table = {
        Deletion: (Category.FAITHFULNESS, Direction.LOWER),
        ModelParameterRandomization: (Category.RANDOMISATION, Direction.LOWER),
        CompletenessGap: (Category.AXIOMATIC, Direction.LOWER),
        MethodAgreement: (Category.AGREEMENT, Direction.HIGHER),
        MaxSensitivity: (Category.ROBUSTNESS, Direction.LOWER),
    }
    for cls, (category, direction) in table.items():
        assert cls.name and cls.category is category and cls.direction is direction


def test_direction_decides_the_verdict():
    assert MethodAgreement(np.ones((1, 3)), threshold=0.5).passes(0.6) is True
    assert MethodAgreement(np.ones((1, 3)), threshold=0.5).passes(0.4) is False
    assert CompletenessGap(0.01).passes(0.005) is True
    assert CompletenessGap(0.01).passes(float("nan")) is False


def test_result_to_dict_is_json_safe():
    result = MetricResult(score=float("nan"), detail={"curve": np.arange(3.0),
                                                      "n": np.int64(2), "inf": np.inf},
                          name="x", category=Category.FAITHFULNESS, direction=Direction.LOWER)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["score"] is None and d["detail"]["inf"] is None
    assert d["detail"]["curve"] == [0.0, 1.0, 2.0] and d["category"] == "faithfulness"
