"""``/items/{id}`` (one stored item) and ``/examples`` (benchmark queries shipped with an index)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from ..errors import ApiError, responses
from ..loading import KOCC_K, Served
from ..models import ExampleList, ExampleQuery, ItemResponse
from ..state import IndexDep

__all__ = ["router", "item_response"]

router = APIRouter(tags=["items"])


def _ids_of(served: Served, rows: tuple[int, ...]) -> list[int]:
    return [int(served.ids[r]) for r in rows]


def item_response(served: Served, item_id: int, row: int) -> ItemResponse:
    """What ``/items/{id}`` answers for the item at gallery row ``row``."""
    kocc = None
    if served.kocc_plain is not None and served.kocc_corrected is not None:
        kocc = {
            "k": KOCC_K,
            "plain": int(served.kocc_plain[row]),
            "corrected": int(served.kocc_corrected[row]),
        }
    return ItemResponse(
        id=item_id,
        row=row,
        text=served.texts[row] if served.texts is not None else None,
        bias=float(served.bias[row]) if served.bias is not None else None,
        k_occurrence=kocc,
        metadata=served.item_metadata.rows([item_id])[0] if served.item_metadata is not None else None,
    )


@router.get("/items/{item_id}", response_model=ItemResponse, responses=responses(404))
async def item(item_id: int, served: IndexDep) -> ItemResponse:
    """Stored text, bias and k-occurrence of one item (by its id in the index)."""
    row = int(served.rows_of_ints([item_id])[0])
    if row < 0:
        raise ApiError(
            404, "no item with this id", f"an id stored in the index ({served.n_items} items)", str(item_id)
        )
    return item_response(served, item_id, row)


@router.get("/examples", response_model=ExampleList, responses=responses())
async def examples(
    served: IndexDep,
    offset: int = Query(0, ge=0, le=2**31, description="first example to list"),
    limit: int = Query(100, ge=1, le=1000, description="how many to list"),
) -> ExampleList:
    """Benchmark queries shipped with the index (the demo's test definitions)."""
    ex = served.examples
    if ex is None:
        return ExampleList(total=0, examples=[])
    stop = min(offset + limit, len(ex.texts))
    out = [
        ExampleQuery(index=i, text=ex.texts[i], relevant=_ids_of(served, ex.relevant[i]))
        for i in range(offset, stop)
    ]
    return ExampleList(total=len(ex.texts), examples=out)


@router.get("/examples/{index}", response_model=ExampleQuery, responses=responses(404))
async def example(index: int, served: IndexDep) -> ExampleQuery:
    """One benchmark query with its embedding (search it with POST /search)."""
    n = len(served.examples.texts) if served.examples else 0
    if served.examples is None or not 0 <= index < n:
        raise ApiError(
            404, "no example query with this number", f"0..{n - 1}" if n else "none (no examples)", str(index)
        )
    ex = served.examples
    rel = ex.relevant[index]
    return ExampleQuery(
        index=index,
        text=ex.texts[index],
        relevant=_ids_of(served, rel),
        relevant_texts=[served.texts[r] for r in rel] if served.texts is not None else None,
        vector=ex.vectors[index].tolist(),
    )
