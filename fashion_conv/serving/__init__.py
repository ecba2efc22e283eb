"""The HTTP server of ``python -m fashion_conv.serve``: the LitServe API (model side) and the front (HTTP side)."""
