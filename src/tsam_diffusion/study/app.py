"""``tsam study serve``: the study as a small server-rendered web app (FastAPI; no build step, no CDN).

A participant gets an anonymous id (shown on every page, to come back with), reads the
instructions, then sees one comparison per page: the prompt and two images side by side, left and
right in an order drawn per participant and item, method names hidden; answers with a click or the
keys 1 / 2 / 3 (left / right / tie). The items come in an order of the participant's own; answered
items never come back; a reload shows the same item with the same sides. Images are served by item,
never by path, and only files inside the run directory; prompts are escaped; request bodies over
4 KiB are refused; with ``admin_token`` the results page asks for it.
"""
from __future__ import annotations

import hashlib
import html
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..bench.db import BenchError
from .results import markdown, study_results
from .store import StudyError, StudyStore

MAX_BODY = 4096
KEYS_JS = """<script>
document.addEventListener('keydown', function (e) {
  var map = {'1': 'left', '2': 'right', '3': 'tie', 'ArrowLeft': 'left', 'ArrowRight': 'right', 'ArrowDown': 'tie'};
  var b = document.querySelector('button[value="' + map[e.key] + '"]');
  if (b) { b.click(); }
});
</script>"""
STYLE = """<style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
.pair { display: flex; gap: 2em; justify-content: center; } .pair figure { margin: 0; text-align: center; }
.pair img { width: 420px; max-width: 42vw; image-rendering: pixelated; border: 1px solid #ccc; }
.prompt { font-size: 1.4em; text-align: center; margin: 0.6em 0 1em; } .answers { text-align: center; margin-top: 1em; }
button { font-size: 1.1em; margin: 0 0.5em; padding: 0.5em 1.2em; } .muted { color: #777; font-size: 0.9em; }
progress { width: 100%; }
</style>"""


def order_of(pid: str, item_ids: list[int]) -> list[int]:
    """The participant's own order of the items (a stable shuffle keyed by the id)."""
    return sorted(item_ids, key=lambda i: hashlib.sha256(f"{pid}/{i}".encode()).hexdigest())


def left_side(pid: str, item_id: int) -> str:
    """Which method's image (``a`` or ``b``) this participant sees on the left for this item."""
    return "a" if hashlib.sha256(f"left/{pid}/{item_id}".encode()).digest()[0] % 2 == 0 else "b"


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}</head>"
            f"<body>{body}</body></html>")


@contextmanager
def serving(run_dir: str | Path, **kwargs: Any) -> Iterator[str]:
    """The study on a real uvicorn server in a background thread (tests, screenshots); yields its base URL."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(run_dir, **kwargs), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + "/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def create_app(run_dir: str | Path, *, admin_token: str | None = None, title: str = "Which image matches the text?") -> Any:
    """The ASGI app for the study in ``run_dir`` (``StudyError`` if the run has no study)."""
    from fastapi import FastAPI, Form, Request
    from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse

    store = StudyStore(run_dir)
    item_ids = [it["item_id"] for it in store.items()]
    app = FastAPI(title="tsam study", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if (length is not None and (not length.isdigit() or int(length) > MAX_BODY)) or \
                (length is None and request.headers.get("transfer-encoding")):
            return PlainTextResponse("request too large", status_code=413)
        return await call_next(request)

    @app.exception_handler(StudyError)
    async def study_error(_request: Request, e: StudyError) -> HTMLResponse:
        return HTMLResponse(page("Error", f"<h1>Something is off</h1><p>{html.escape(str(e))}</p>"
                                          "<p><a href='/'>Back to the start</a></p>"), status_code=400)

    @app.exception_handler(BenchError)
    async def missing_image(_request: Request, e: BenchError) -> HTMLResponse:
        return HTMLResponse(page("Not found", f"<p>{html.escape(str(e))}</p>"), status_code=404)

    @app.get("/", response_class=HTMLResponse)
    def start_page() -> str:
        return page(title, f"""<h1>{html.escape(title)}</h1>
<p>You will see a text and two pictures made from it. Choose the picture that matches the text better: every object it
names, with the colours and details it gives. If both match equally well (or equally badly), choose <b>tie</b>.</p>
<p>There are {len(item_ids)} comparisons; one per page. Keys: <b>1</b> left, <b>2</b> right, <b>3</b> tie. You can stop
and come back later with the id shown at the bottom of each page.</p>
<form method="post" action="/start"><button type="submit">Start</button></form>
<h2>Come back</h2><form method="post" action="/resume"><input name="pid" size="34" placeholder="your id">
<button type="submit">Continue</button></form>""")

    @app.post("/start")
    def start() -> RedirectResponse:
        return RedirectResponse(f"/p/{store.new_participant()}", status_code=303)

    @app.post("/resume")
    def resume(pid: str = Form(...)) -> RedirectResponse:
        pid = pid.strip()
        store.check_participant(pid)
        return RedirectResponse(f"/p/{pid}", status_code=303)

    @app.get("/p/{pid}", response_class=HTMLResponse)
    def item_page(pid: str) -> str:
        store.check_participant(pid)
        done = store.answered(pid)
        todo = [i for i in order_of(pid, item_ids) if i not in done]
        footer = f"<p class='muted'>Your id (to come back later): <code>{html.escape(pid)}</code></p>"
        if not todo:
            return page("Thank you", f"<h1>Thank you!</h1><p>You answered all {len(item_ids)} comparisons.</p>{footer}")
        item = store.item(todo[0])
        store.serve(pid, item["item_id"], left_side(pid, item["item_id"]))
        n = len(done) + 1
        return page(title, f"""<progress value="{n - 1}" max="{len(item_ids)}"></progress>
<p class="muted">Comparison {n} of {len(item_ids)}</p>
<p class="prompt">&ldquo;{html.escape(item['prompt'])}&rdquo;</p>
<div class="pair"><figure><img src="/img/{pid}/{item['item_id']}/left" alt="left image"><figcaption>left (1)</figcaption></figure>
<figure><img src="/img/{pid}/{item['item_id']}/right" alt="right image"><figcaption>right (2)</figcaption></figure></div>
<form class="answers" method="post" action="/p/{pid}/answer"><input type="hidden" name="item_id" value="{item['item_id']}">
<button name="choice" value="left">Left matches better</button><button name="choice" value="tie">Tie (3)</button>
<button name="choice" value="right">Right matches better</button></form>{footer}{KEYS_JS}""")

    @app.post("/p/{pid}/answer")
    def answer(pid: str, item_id: int = Form(...), choice: str = Form(...)) -> RedirectResponse:
        store.answer(pid, item_id, choice)
        return RedirectResponse(f"/p/{pid}", status_code=303)

    @app.get("/img/{pid}/{item_id}/{side}")
    def image(pid: str, item_id: int, side: str) -> FileResponse:
        if side not in ("left", "right"):
            raise StudyError("an image is 'left' or 'right'")
        store.check_participant(pid)
        item = store.item(item_id)
        left = store.shown_left(pid, item_id)  # only images of items this participant's pages showed
        which = left if side == "left" else ("b" if left == "a" else "a")
        return FileResponse(store.image_path(item[f"image_{which}"]), media_type="image/png")

    @app.get("/results", response_class=HTMLResponse)
    def results(token: str = "") -> HTMLResponse:
        if admin_token and not secrets.compare_digest(token, admin_token):
            return HTMLResponse(page("Results", "<p>The results page needs ?token=ADMIN_TOKEN.</p>"), status_code=403)
        return HTMLResponse(page("Results", f"<h1>Results</h1><pre>{html.escape(markdown(study_results(store)))}</pre>"))

    return app
