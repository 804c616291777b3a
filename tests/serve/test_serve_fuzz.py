"""Property-based fuzzing of the OpenAPI schema (schemathesis): no input gives a 5xx, and
every request valid under the schema is accepted.

Cases come from schemathesis' hypothesis strategies for every operation of
``/openapi.json`` (valid and schema-violating bodies, parameters and paths), sent to
the ASGI app in process; a bounded number of examples per operation. Schema-valid
("positive") cases are checked with schemathesis' ``positive_data_acceptance`` (a
schema-valid request rejected with 400/413/422 fails): the schema states what the
server enforces (:mod:`dehub.serve.schema`).
(schemathesis' own pytest plugin does not run under pytest 9 yet, so the strategies
are driven by hypothesis directly.)
"""

from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dehub.serve.app import Settings, create_app  # noqa: E402

EXAMPLES = 40


@pytest.fixture(scope="module")
def api_schema(index_file):
    # body limit above the largest schema-valid body (16 rows x 16 numbers, 16 texts)
    settings = Settings(
        source=str(index_file), max_batch=16, max_k=100, max_body_bytes=200_000, max_text_chars=200
    )
    app = create_app(settings)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(schema):
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 10, [op.label for op in ops]
    return ops


def _check(case, positive: bool = False) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
    if positive:
        from schemathesis.specs.openapi.checks import positive_data_acceptance

        case.validate_response(response, checks=[positive_data_acceptance])
    if 400 <= response.status_code < 500:
        body = json.loads(response.text)
        assert set(body) == {"error", "expected", "received"}, (case.path, body)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_gives_a_5xx(api_schema, mode):
    from schemathesis.generation.modes import GenerationMode

    labels = []
    calls = []
    for op in _operations(api_schema):
        labels.append(op.label)
        if mode == "negative" and not (op.body or op.path_parameters or op.query):
            continue  # nothing to violate

        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case):
            calls.append(op.label)
            _check(case, positive=mode == "positive")

        run()
    assert "POST /search" in labels and "POST /knn-service" in labels
    assert calls.count("POST /search") >= EXAMPLES // 2, calls.count("POST /search")


def test_schema_violating_search_bodies_give_4xx(api_schema):
    """Bodies of the wrong shape (from a generic JSON strategy) answer 4xx, never 5xx."""
    op = api_schema["/search"]["POST"]
    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.integers()
        | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(
                st.sampled_from(["vectors", "text", "k", "compare", "details", "x"]), children, max_size=5
            )
        ),
        max_leaves=30,
    )

    @given(body=json_values)
    @settings(
        max_examples=2 * EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(body):
        case = op.Case(body=body, media_type="application/json")
        _check(case)

    run()
