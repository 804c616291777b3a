"""The routers of ``dehub serve``, one per concern (FastAPI's "bigger applications" layout).

* :mod:`.search` — ``POST /search``;
* :mod:`.clip` — clip-retrieval's ``/knn-service``, ``/indices-list``, ``/metadata``;
* :mod:`.items` — ``/items/{id}``, ``/examples``, ``/examples/{index}``;
* :mod:`.admin` — ``/health``, ``/info``, ``/metrics``, ``/admin/reload``;
* :mod:`.page` — the page at ``/``.
"""
