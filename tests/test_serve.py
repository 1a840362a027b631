"""`dicefer serve`: every endpoint in process, good and bad requests (a 4xx with a JSON error for
every bad one, never a 500), tracks across a stream's requests, and concurrent clients."""
import asyncio
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from conftest import face_photo
from fastapi.testclient import TestClient
from PIL import Image
from test_predict import bomb_png

from dicefer.cli import main
from dicefer.data.base import CLASSES
from dicefer.inference import ExpressionRecognizer
from dicefer.serve.app import MAX_STREAMS, Streams, create_app


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def app(tiny_run):
    return create_app(ExpressionRecognizer.from_run(tiny_run), max_upload=200_000)


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


def post(client, body: bytes, kind: str | None = "image/png", params: dict | None = None, **kw):
    headers = {} if kind is None else {"Content-Type": kind}
    return client.post("/v1/predict", content=body, headers=headers, params=params, **kw)


def assert_faces(result: dict, width: int = 192, height: int = 192) -> None:
    assert result["width"] == width and result["height"] == height and result["faces"]
    for f in result["faces"]:
        assert len(f["box"]) == 4 and f["label"] in CLASSES and list(f["probabilities"]) == list(CLASSES)
        assert sum(f["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert f["label"] == max(f["probabilities"], key=f["probabilities"].get)


def test_an_image_body_gives_its_faces(client):
    response = post(client, png(face_photo(0, 3)))
    assert response.status_code == 200
    result = response.json()
    assert_faces(result)
    assert result["faces"][0]["track"] is None and result["milliseconds"] > 0


def test_a_multipart_form_gives_the_same_faces(client):
    body = png(face_photo(0, 3))
    raw = post(client, body).json()["faces"]
    form = client.post("/v1/predict", files={"image": ("a.png", body, "image/png")}).json()["faces"]
    assert form == raw


def test_a_stream_keeps_each_persons_track(client):
    body = png(face_photo(0, 3))
    tracks = [post(client, body, params={"stream": "cam-1"}).json()["faces"][0]["track"] for _ in range(3)]
    assert tracks == [1, 1, 1]
    assert post(client, body, params={"stream": "cam-2"}).json()["faces"][0]["track"] == 1  # its own ids


def test_streams_forget_the_least_recently_used():
    streams = Streams()
    first = streams("a")
    for i in range(MAX_STREAMS):
        streams(f"s{i}")
    assert "a" not in streams.trackers and streams("a") is not first and len(streams.trackers) == MAX_STREAMS


def test_the_page_docs_and_schema_are_served_from_here(client):
    page = client.get("/")
    assert page.status_code == 200 and "getUserMedia" in page.text and "/v1/predict" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, nothing from elsewhere
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "https://" not in docs.text
    schema = client.get("/openapi.json").json()
    assert "/v1/predict" in schema["paths"] and "image/jpeg" in json.dumps(schema["paths"]["/v1/predict"])
    info = client.get("/v1/info").json()
    assert info["classes"] == list(CLASSES) and info["temperature"] > 0


def bad_requests(tmp_path: Path) -> dict[str, tuple[int, dict]]:
    """name -> (expected status, request keywords for post())."""
    bomb = tmp_path / "bomb.png"
    bomb_png(bomb)
    photo = png(face_photo(0, 3))
    return {
        "empty body": (400, {"body": b""}),
        "text": (415, {"body": b"hello", "kind": "text/plain"}),
        "no content type": (415, {"body": photo, "kind": None}),
        "json": (415, {"body": b"{}", "kind": "application/json"}),
        "garbage as jpeg": (400, {"body": b"\xff\xd8garbage" * 10, "kind": "image/jpeg"}),
        "truncated png": (400, {"body": photo[: len(photo) // 2]}),
        "decompression bomb": (400, {"body": bomb.read_bytes()}),
        "enormous": (413, {"body": b"\0" * 300_000}),
        "bad stream name": (422, {"body": photo, "params": {"stream": "../etc"}}),
        "form without an image field": (400, {"body": b"--x\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\n1\r\n--x--\r\n",
                                              "kind": "multipart/form-data; boundary=x"}),
        "broken form": (400, {"body": b"not a form", "kind": "multipart/form-data; boundary=x"}),
    }


def test_bad_requests_are_4xx_with_a_json_error(client, tmp_path):
    for name, (status, request) in bad_requests(tmp_path).items():
        response = post(client, request.pop("body"), **request)
        assert response.status_code == status, (name, response.text)
        assert isinstance(response.json()["error"], str) and response.json()["error"], name
    wrong_method = client.get("/v1/predict")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    assert client.get("/nowhere").status_code == 404


def test_a_body_past_the_limit_is_refused_without_a_length_header(client):
    """A chunked upload announces no length: it is cut off once it passes the limit."""
    chunks = (b"\0" * 50_000 for _ in range(10))
    response = client.post("/v1/predict", content=chunks, headers={"Content-Type": "image/png"})
    assert response.status_code == 413


@contextmanager
def serving(app):
    """The app on a real port, in a thread, as `dicefer serve` runs it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def live_server(app):
    with serving(app) as url:
        yield url


FRAME_DELAY = 3.0


@pytest.fixture
def slow_frames_server(app):
    """The app with each webcam frame (a request with ?stream=) held FRAME_DELAY seconds before it
    is answered, as on a loaded server, so a photo can be chosen while a frame is on the server."""
    async def slow_frames(scope, receive, send):
        if scope["type"] == "http" and b"stream=" in scope.get("query_string", b""):
            await asyncio.sleep(FRAME_DELAY)
        await app(scope, receive, send)

    with serving(slow_frames) as url:
        yield url


def test_concurrent_clients_all_get_answers(live_server, tmp_path):
    good, bad = png(face_photo(0, 3)), b"garbage"

    def call(i: int) -> int:
        body = bad if i % 3 == 0 else good
        with httpx.Client(base_url=live_server, timeout=60) as c:
            r = c.post("/v1/predict", content=body, headers={"Content-Type": "image/png"}, params={"stream": f"c{i % 4}"})
            return r.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(call, range(24)))
    assert codes.count(200) == 16 and codes.count(400) == 8
    assert httpx.get(live_server + "/v1/info").status_code == 200  # still serving


def test_serve_cli_refuses_bad_options_in_one_line(tiny_run, capsys):
    assert main(["serve", "--run", str(tiny_run), "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["serve", "--run", str(tiny_run), "--max-upload-mb", "0"]) == 2
    assert main(["serve", "--run", "/nowhere"]) == 2


# ---------------------------------------------------------------- the page, in headless Chromium

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"  # kept after the run (gitignored)


def fake_webcam(path: Path, frames: int = 20) -> Path:
    """A Y4M video (what Chromium's fake camera reads) of a rendered face on a 640x480 gray frame."""
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n")
        for i in range(frames):
            y = np.full((480, 640), 128, np.uint8)
            y[140:332, 224 + i:416 + i] = face_photo(0, 3)
            f.write(b"FRAME\n" + y.tobytes() + np.full(640 * 480 // 2, 128, np.uint8).tobytes())
    return path


@pytest.fixture
def browser(tmp_path):
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,800",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={fake_webcam(tmp_path / 'webcam.y4m')}"):
        options.add_argument(flag)
    from selenium.webdriver.chrome.service import Service

    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


def wait_for_faces(browser, seconds: float = 60) -> list[str]:
    """The labels the page lists (read in one script: the list is redrawn for every frame)."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + seconds
    while time.time() < deadline:
        labels = browser.execute_script(
            "return Array.from(document.querySelectorAll('#faces li.face'), li => li.dataset.label)")
        if labels:
            return labels
        time.sleep(0.25)
    raise AssertionError(f"no faces listed within {seconds} s; status: "
                         f"{browser.find_element(By.ID, 'status').text!r}")


def choose_photo(browser, tmp_path: Path, seconds: float) -> str:
    """Choose a rendered face as photo.png in the page's file field; the status once it is answered."""
    from selenium.webdriver.common.by import By

    photo = tmp_path / "photo.png"
    Image.fromarray(face_photo(4, 0)).save(photo)
    browser.find_element(By.ID, "file").send_keys(str(photo))
    deadline = time.time() + seconds
    while "photo.png:" not in browser.find_element(By.ID, "status").text and time.time() < deadline:
        time.sleep(0.1)
    return browser.find_element(By.ID, "status").text


def test_the_page_shows_faces_from_the_webcam_and_from_a_dropped_photo(live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(live_server + "/?webcam")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        labels = wait_for_faces(browser)
    finally:
        browser.save_screenshot(str(ARTIFACTS / "serve-webcam.png"))
    assert all(label in CLASSES for label in labels)
    assert browser.find_element(By.ID, "status").text.startswith("live:")
    # the canvas shows the camera with a box drawn on it: some pixels are the box's green
    green = browser.execute_script(
        "const d = document.getElementById('view').getContext('2d').getImageData(0, 0, 640, 480).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i+1] > 200 && d[i] < 100 && d[i+2] < 100) n++; return n;")
    assert green > 100
    # a photo chosen in the page's file field (what a drop does): its faces replace the webcam's
    assert choose_photo(browser, tmp_path, seconds=60).startswith("photo.png: 1 face")
    browser.save_screenshot(str(ARTIFACTS / "serve-photo.png"))


def test_a_webcam_frame_answered_after_a_photo_does_not_replace_it(slow_frames_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(slow_frames_server + "/?webcam")
    wait_for_faces(browser)  # the first frame is answered; the next is now held on the server
    status = choose_photo(browser, tmp_path, seconds=FRAME_DELAY)
    assert status.startswith("photo.png: 1 face"), "the photo was not answered first"
    time.sleep(FRAME_DELAY + 1)  # the held frame comes back
    assert browser.find_element(By.ID, "status").text.startswith("photo.png: 1 face")
