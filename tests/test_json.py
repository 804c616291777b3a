import json

import numpy as np

from dehub._json import jsonable


def test_numpy_values_become_json():
    obj = {1: np.float32(0.5), "a": (np.int64(3), [np.bool_(True)]), "x": np.arange(3), "s": "t"}
    out = jsonable(obj)
    assert out == {"1": 0.5, "a": [3, [True]], "x": [0, 1, 2], "s": "t"}
    json.dumps(out)  # no numpy type left
    assert type(out["a"][0]) is int and type(out["1"]) is float
