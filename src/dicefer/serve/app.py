"""`dicefer serve`: a local HTTP server for a trained model (FastAPI on uvicorn, `pip install 'dicefer[serve]'`).

GET /            one page: a live webcam with boxes, labels and per-class bars, and photos by drag and drop
POST /v1/predict an image (its bytes as the body, or a multipart form field) -> the faces in JSON;
                 ?stream=NAME keeps each person's track id from one request of that stream to the next
GET /docs        the API, read from the OpenAPI schema (/openapi.json); no file from elsewhere

Every bad request is a 4xx with {"error": ...}: no body, a body too large, a type that is not an
image, bytes that do not decode, a decompression bomb. One recogniser serves all clients, a
request at a time (its detector and thread pool are not meant to be shared); uvicorn keeps
accepting connections meanwhile.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from importlib.resources import files
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dicefer.data.images import UnreadableImage, image_from_bytes
from dicefer.inference.recognizer import ExpressionRecognizer
from dicefer.inference.tracks import Tracker

MAX_UPLOAD = 10 * 2**20  # bytes of one uploaded image
MAX_STREAMS = 64  # tracked streams kept; the one used longest ago is dropped first
STREAM_WINDOW = 5  # frames a stream's probabilities are averaged over
IMAGE_TYPES = ("image/", "application/octet-stream")


class FaceOut(BaseModel):
    box: list[int] = Field(description="[x, y, width, height] in pixels of the image sent")
    label: str = Field(description="the most likely expression")
    probabilities: dict[str, float] = Field(description="calibrated probability of each expression")
    track: int | None = Field(None, description="the person's id within the stream (with ?stream=), else null")


class Prediction(BaseModel):
    width: int
    height: int
    faces: list[FaceOut]
    milliseconds: float = Field(description="time the server spent on this image")


class Problem(BaseModel):
    error: str


class Streams:
    """A Tracker per named stream, the least recently used dropped past MAX_STREAMS."""

    def __init__(self) -> None:
        self.trackers: OrderedDict[str, Tracker] = OrderedDict()

    def __call__(self, name: str) -> Tracker:
        tracker = self.trackers.pop(name, None) or Tracker(window=STREAM_WINDOW)
        self.trackers[name] = tracker
        while len(self.trackers) > MAX_STREAMS:
            self.trackers.popitem(last=False)
        return tracker


def create_app(recognizer: ExpressionRecognizer, max_upload: int = MAX_UPLOAD) -> FastAPI:
    app = FastAPI(title="dicefer", summary="Facial expressions in images: faces, labels, calibrated probabilities",
                  docs_url=None, redoc_url=None)
    lock, streams = threading.Lock(), Streams()
    page = (files("dicefer.serve") / "page.html").read_text(encoding="utf-8")
    docs = (files("dicefer.serve") / "docs.html").read_text(encoding="utf-8")

    def problem(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        return problem(422, f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', 'invalid request')}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs() -> str:
        return docs

    @app.get("/v1/info", summary="What the server runs")
    def info() -> dict:
        return {"classes": list(recognizer.classes), "temperature": recognizer.backend.temperature,
                "max_upload_bytes": max_upload}

    @app.post("/v1/predict", response_model=Prediction, summary="The faces in one image",
              responses={400: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem},
                         422: {"model": Problem}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "image": {"type": "string", "format": "binary"}}}}}}})
    async def predict(request: Request, stream: Annotated[str | None, Query(
            max_length=100, pattern=r"^[\w.-]+$", description="name of a stream whose people are tracked")] = None):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            return problem(400, f"Content-Length {declared[:20]!r} is not a number of bytes")
        if declared is not None and int(declared) > max_upload:
            return problem(413, f"the image is larger than {max_upload} bytes")
        if kind == "multipart/form-data":
            data = await _form_image(request, max_upload)
            if isinstance(data, JSONResponse):
                return data
        elif kind.startswith(IMAGE_TYPES):
            data = await _body(request, max_upload)
            if data is None:
                return problem(413, f"the image is larger than {max_upload} bytes")
        else:
            return problem(415, f"send an image (Content-Type image/jpeg, image/png, ...) or a multipart form with a "
                                f"field 'image', not {kind or 'no Content-Type'}")
        if not data:
            return problem(400, "the request holds no image")
        start = time.perf_counter()
        try:
            image = await run_in_threadpool(image_from_bytes, data)
        except UnreadableImage as err:
            return problem(400, f"the image {err}")

        def faces_in(image: np.ndarray) -> list:
            with lock:
                faces = recognizer.predict(image)
                return faces if stream is None else streams(stream).update(faces)

        faces = await run_in_threadpool(faces_in, image)  # the event loop keeps taking requests meanwhile
        return Prediction(width=image.shape[1], height=image.shape[0],
                          faces=[FaceOut(box=list(f.box), label=f.label, probabilities=f.probabilities, track=f.track)
                                 for f in faces],
                          milliseconds=round(1000 * (time.perf_counter() - start), 1))

    return app


async def _body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (read no further)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _form_image(request: Request, limit: int) -> bytes | JSONResponse:
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=limit)
    except Exception as err:  # noqa: BLE001 -- python-multipart and Starlette raise several kinds on a bad form
        return JSONResponse({"error": f"the multipart form cannot be read ({err})"}, status_code=400)
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        return JSONResponse({"error": "the multipart form has no file field 'image'"}, status_code=400)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        return JSONResponse({"error": f"the image is larger than {limit} bytes"}, status_code=413)
    return data
