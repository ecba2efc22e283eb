"""The HTTP side of the server (ASGI middleware in each API process): the page at ``/``, and ``POST /predict``
bodies checked and turned into one 28x28 pixel row before they reach LitServe's batching queue.

Every input is decoded here, so a bad one is answered 4xx on its own, never failing the batch it would have
joined, and decoding runs in the API processes beside the model worker. An image goes through ``predict``'s own
preprocessing (inversion included); the model worker gets ``{"row": base64 of 784 bytes, "inverted": bool}`` (a
string: a tenth of the cost of a list of 784 numbers to encode, parse and pass between processes).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from fashion_conv.predict import SIDE, open_image, preprocess
from fashion_conv.utils.errors import DataError

MAX_BODY_BYTES = 10 * 1024 * 1024  # a phone photo is 2-8 MB
MAX_PIXELS = 25_000_000  # 5000x5000; decoding more would take hundreds of MB per request
INLINE_DECODE_BYTES = 100_000  # smaller files decode in well under a millisecond: faster than a hop to a thread
PAGE = Path(__file__).with_name("page.html")


class BadRequest(Exception):
    """A request the server answers with ``status`` and ``{"detail": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def image_pixels(data: bytes) -> tuple[bytes, bool]:
    """An encoded image (PNG, JPEG, ...) as ``predict`` sees it: 784 pixel bytes, row by row, and whether it was inverted."""
    try:
        x, inverted = preprocess(open_image(io.BytesIO(data), max_pixels=MAX_PIXELS))
    except DataError as exc:
        if "UnidentifiedImageError" in exc.problem:  # Pillow's own text names a memory address, not the problem
            raise BadRequest("the body is not an image file Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP)") from None
        raise BadRequest(f"the image: {exc.problem}") from None
    except ValueError as exc:  # fit_to_square: a blank image
        raise BadRequest(f"the image: {exc}") from None
    return x.mul(255).round().byte().numpy().tobytes(), inverted  # exact: preprocess divided bytes by 255


def json_pixels(data: bytes) -> bytes:
    """``{"pixels": [784 integers 0-255]}``: one row of the dataset's CSV, a light object on black, used as is."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    pixels = body.get("pixels") if isinstance(body, dict) else None
    if not isinstance(pixels, list):
        raise BadRequest('expected JSON {"pixels": [784 integers 0-255]}, a 28x28 image row by row')
    if len(pixels) != SIDE * SIDE:
        raise BadRequest(f'"pixels" has {len(pixels)} values, expected {SIDE * SIDE} (28x28, row by row)')
    for i, value in enumerate(pixels):
        if type(value) is not int or not 0 <= value <= 255:
            raise BadRequest(f'"pixels"[{i}] is {json.dumps(value)}, expected an integer in 0-255')
    return bytes(pixels)


async def read_body(scope, receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body, refused (413) past ``limit`` bytes, by its Content-Length or as it arrives."""
    too_big = BadRequest(f"the body is larger than the {limit:,} bytes accepted", status=413)
    length = dict(scope["headers"]).get(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away before the body was sent")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def form_file(scope, body: bytes) -> bytes:
    """The bytes of the multipart field ``file``, as ``curl -F file=@image.png`` sends it."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, replay).form(max_files=1, max_fields=10, max_part_size=MAX_BODY_BYTES)
    except Exception as exc:  # Starlette reports malformed multipart bodies with its own exception types
        raise BadRequest(f"the multipart body cannot be read ({getattr(exc, 'detail', exc)})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadRequest("the multipart body has no file field named 'file' (curl -F file=@image.png)")
    return await upload.read()


def pixel_row(pixels: bytes, inverted: bool) -> dict:
    return {"row": base64.b64encode(pixels).decode("ascii"), "inverted": inverted}


class Front:
    """ASGI middleware: ``GET /`` gives the page; ``POST /predict`` bodies become pixel rows (or a 4xx JSON error)."""

    def __init__(self, app, api_path: str = "/predict"):
        self.app, self.api_path = app, api_path
        self.page = PAGE.read_text(encoding="utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            return await HTMLResponse(self.page)(scope, receive, send)
        if scope["type"] != "http" or scope["path"] != self.api_path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            row = await self.read_row(scope, receive)
        except BadRequest as exc:
            return await JSONResponse({"detail": str(exc)}, status_code=exc.status)(scope, receive, send)
        body = json.dumps(row).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

        sent = False

        async def receive_row():
            nonlocal sent
            if sent:
                return await receive()  # after the body: the client's disconnect, as usual
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, receive_row, send)

    async def read_row(self, scope, receive) -> dict:
        body = await read_body(scope, receive)
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1").lower()
        if content_type.startswith("application/json"):
            return pixel_row(json_pixels(body), inverted=False)
        if content_type.startswith("multipart/form-data"):
            body = await form_file(scope, body)
        if not body:
            raise BadRequest("the body is empty: send an image file (curl -F file=@image.png) or JSON pixels")
        if len(body) > INLINE_DECODE_BYTES:  # a photo: decoding takes long enough to stall the other requests
            return pixel_row(*await run_in_threadpool(image_pixels, body))
        return pixel_row(*image_pixels(body))
