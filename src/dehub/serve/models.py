"""Typed request and response bodies of the ``dehub serve`` API (pydantic).

They define the OpenAPI schema at ``/openapi.json``; :mod:`dehub.serve.schema` writes the
server's own bounds into it (batch size, the index's dimension, value range, ``k``,
text length, exactly one of vectors/text), which :mod:`dehub.serve.validation` enforces
with the same ``{"error", "expected", "received"}`` answer.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt


def _whole(value: Any) -> Any:
    """JSON Schema's integer: also a number with a zero fractional part (``28.0``), never a bool."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


#: An integer as JSON Schema defines it (``28`` or ``28.0``), strict otherwise.
WholeNumber = Annotated[StrictInt, BeforeValidator(_whole)]

__all__ = [
    "SearchRequest",
    "SearchResponse",
    "Ranking",
    "QueryResult",
    "ErrorResponse",
    "InfoResponse",
    "ItemResponse",
    "HealthResponse",
    "ReloadResponse",
    "ExampleQuery",
    "ExampleList",
    "KnnRequest",
    "KnnResult",
    "MetadataRequest",
    "MetadataEntry",
]


class ErrorResponse(BaseModel):
    """Every 4xx answer: what was wrong, what was expected, what was received."""

    error: str
    expected: str
    received: str


class SearchRequest(BaseModel):
    """Give ``vectors`` (one row per query) or ``text`` (one string per query), not both."""

    model_config = ConfigDict(extra="forbid")

    vectors: list[list[float]] | None = Field(
        default=None, description="query embeddings, shape (n_queries, d), finite floats"
    )
    text: list[str] | None = Field(
        default=None, description="query texts, embedded by the index's text encoder"
    )
    k: WholeNumber = Field(default=10, description="results per query (1..max_k)")
    compare: StrictBool = Field(default=False, description="also return the plain (uncorrected) ranking")
    details: StrictBool = Field(
        default=False,
        description="add item texts and k-occurrence N_k to every ranking (where the index has them)",
    )


class Ranking(BaseModel):
    ids: list[int] = Field(description="ids as stored in the index, best first")
    scores: list[float]
    texts: list[str | None] | None = None
    urls: list[str | None] | None = Field(
        default=None, description="each item's url (with details=true, where the index keeps a url column)"
    )
    k_occurrence: list[int | None] | None = Field(
        default=None, description="N_k of each item under the same ranking (plain or corrected)"
    )


class QueryResult(Ranking):
    plain: Ranking | None = Field(default=None, description="the uncorrected ranking (with compare=true)")
    k_occurrence_plain: list[int | None] | None = Field(
        default=None, description="plain N_k of each corrected result (with details=true)"
    )


class SearchResponse(BaseModel):
    results: list[QueryResult]
    version: int = Field(description="index version that answered")


class HealthResponse(BaseModel):
    status: str
    version: int


class InfoResponse(BaseModel):
    name: str
    method: str
    params: dict[str, Any]
    offset: bool
    n_items: int
    dim: int
    version: int
    backend: str
    hnsw: dict[str, Any] | None = Field(
        default=None,
        description="HNSW graph: form, M, efConstruction, efSearch, the recall@10 it reaches on its probe "
        "queries against the exact corrected top-10, the target, build and tuning seconds; used=false when "
        "--backend auto found it below the target and serves with the exact engine instead",
    )
    source: str
    loaded_at: float
    text_encoder: str | None
    text_encoder_runtime: str | None = Field(
        default=None, description="onnx or torch: what embeds text queries (null before the encoder loads)"
    )
    has_texts: bool
    examples: int
    k_occurrence: dict[str, Any] | None
    limits: dict[str, int]
    batching: bool
    metadata: dict[str, Any]
    precision_auto: dict[str, Any] | None = Field(
        default=None,
        description='what precision="auto" does on this machine: its candidates (fp32, and bf16 where torch and '
        "native bf16 are there), the machine key, and the measured choices for this index's dimension and size",
    )


class ItemResponse(BaseModel):
    id: int
    row: int
    text: str | None
    bias: float | None = Field(description="the correction's per-item offset b(r) (offset methods)")
    k_occurrence: dict[str, int] | None
    metadata: dict[str, Any] | None = Field(
        default=None, description="the item's metadata columns (url, caption...) where the index keeps them"
    )


class ReloadResponse(BaseModel):
    status: str
    version: int
    previous_version: int
    n_items: int
    seconds: float


class ExampleQuery(BaseModel):
    index: int
    text: str
    relevant: list[int]
    relevant_texts: list[str | None] | None = None
    vector: list[float] | None = None


class ExampleList(BaseModel):
    total: int
    examples: list[ExampleQuery]


class KnnRequest(BaseModel):
    """clip-retrieval's ``/knn-service`` request (``ClipClient`` sends all these fields)."""

    model_config = ConfigDict(extra="allow")

    text: str | None = None
    image: str | None = None
    image_url: str | None = None
    embedding_input: list[float] | None = None
    modality: str = "image"
    num_images: WholeNumber = 40
    num_result_ids: WholeNumber | None = None
    indice_name: str | None = None
    use_mclip: bool = False
    deduplicate: bool = False
    use_safety_model: bool = False
    use_violence_detector: bool = False
    aesthetic_score: Any = None
    aesthetic_weight: Any = None


class KnnResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    similarity: float
    caption: str | None = None


class MetadataRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    ids: list[WholeNumber]
    indice_name: str | None = None


class MetadataEntry(BaseModel):
    id: int
    metadata: dict[str, Any]
