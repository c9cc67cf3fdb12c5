"""The documentation site builds with warnings as errors, its links resolve, its gallery ran, and it renders.

The session fixture runs the README's command, ``python -m sphinx -W -b html docs
docs/_build/html``, with ``SKILLFIT_EXAMPLE_SIZE=small`` unless the environment says
otherwise (the gallery then trains on reduced sizes). Sphinx rebuilds only what changed,
so a second run takes seconds. The browser test opens pages in headless Chromium
(Debian's ``chromium``) through a local HTTP server that records every request.
"""

from __future__ import annotations

import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from functools import partial
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docs]

ROOT = Path(__file__).resolve().parents[1]
DOCS, SITE = ROOT / "docs", ROOT / "docs" / "_build" / "html"
EXAMPLES = sorted(path for path in (ROOT / "examples").glob("*.py") if not path.name.startswith("_"))
# What the browser test opens: the index, one API page, one gallery page (title, main heading).
PAGES = {
    "index.html": ("skillfit", "skillfit"),
    "generated/skillfit.CPolyClassifier.html": ("CPolyClassifier", "CPolyClassifier"),
    "auto_examples/quickstart.html": ("Quickstart", "Quickstart: one C-Poly model learns six real text tasks"),
}
BUILD_TIMEOUT = 1800

pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("sphinx_gallery", reason="the docs extra is not installed: pip install -e '.[docs]'")


@pytest.fixture(scope="session")
def site() -> Path:
    """Build the site (incrementally) with -W; fail with Sphinx's output if it warns or breaks."""
    env = {**os.environ, "SKILLFIT_EXAMPLE_SIZE": os.environ.get("SKILLFIT_EXAMPLE_SIZE", "small")}
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(SITE)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return SITE


class _Links(html.parser.HTMLParser):
    """The ids of one HTML page and the links it makes (href, src)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key) and (key == "id" or tag == "a"):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False if tag == "title" else self._in_title

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _is_internal(link: str) -> bool:
    scheme = urllib.parse.urlsplit(link).scheme
    return not scheme and not link.startswith("//")


def _pages(site: Path) -> list[Path]:
    """The site's pages (not the theme's HTML fragments under _static)."""
    return sorted(path for path in site.rglob("*.html") if "_static" not in path.relative_to(site).parts)


def test_site_builds_with_every_page(site):
    pages = _pages(site)
    api_pages = list((site / "generated").glob("*.html"))
    gallery_pages = [page for page in (site / "auto_examples").glob("*.html") if page.name not in ("index.html", "sg_execution_times.html")]
    assert len(api_pages) >= 40 and len(gallery_pages) == len(EXAMPLES) and len(pages) > 60, (len(pages), len(api_pages))


def test_internal_links_and_anchors_resolve(site):
    """Every relative href/src of every page names a file of the site, and its #anchor an id in it."""
    parsed: dict[Path, _Links] = {}

    def page(path: Path) -> _Links:
        if path not in parsed:
            parsed[path] = _parse(path)
        return parsed[path]

    broken, checked = [], 0
    for source in _pages(site):
        for link in page(source).links:
            if not _is_internal(link) or link.startswith(("javascript:", "data:")):
                continue
            parts = urllib.parse.urlsplit(link)
            target = (source.parent / urllib.parse.unquote(parts.path)).resolve() if parts.path else source
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{source.relative_to(site)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html" and urllib.parse.unquote(parts.fragment) not in page(target).ids:
                broken.append(f"{source.relative_to(site)}: {link} (no such anchor)")
    assert checked > 1000, checked
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])


@pytest.mark.parametrize("example", [path.stem for path in EXAMPLES])
def test_every_example_ran_in_the_gallery(site, example):
    """No example is skipped: each has a page with the output of its run and no error."""
    page = site / "auto_examples" / f"{example}.html"
    assert page.is_file(), f"examples/{example}.py has no gallery page"
    text = page.read_text(encoding="utf-8")
    assert "sphx-glr-script-out" in text, f"examples/{example}.py shows no output: it did not run"
    assert "Traceback" not in text and "Total running time of the script:" in text
    minutes, seconds = re.search(r"Total running time of the script:</strong> \(\s*(\d+) minutes\s+([\d.]+) seconds\)", text).groups()
    assert float(minutes) * 60 + float(seconds) > 0.5, "the example finished too fast to have trained a model"


def test_gallery_examples_draw_their_plots(site):
    images = {path.name for path in (site / "_images").glob("sphx_glr_*.png")}
    for example in ("quickstart", "routing_weights", "few_shot_transfer"):
        assert any(name.startswith(f"sphx_glr_{example}_00") for name in images), f"{example} has no figure"


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site and records (path, status) of every request."""

    requests: list[tuple[str, int]]

    def log_request(self, code="-", size="-"):
        self.requests.append((urllib.parse.urlsplit(self.path).path, int(code) if str(code).isdigit() else 0))

    def log_message(self, format, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def served_site(site):
    requests: list[tuple[str, int]] = []
    handler = type("Handler", (_RecordingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium to render the site with (Debian: apt-get install chromium)")
@pytest.mark.parametrize("page", sorted(PAGES))
def test_pages_render_in_chromium_without_missing_assets(served_site, page, tmp_path):
    """Headless Chromium loads the page: its title and heading are in the rendered DOM, every asset loads.

    With ``SKILLFIT_SCREENSHOTS=<folder>`` the screenshots are kept there.
    """
    base, requests = served_site
    requests.clear()
    shots = Path(os.environ.get("SKILLFIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    screenshot = shots / (page.replace("/", "_").removesuffix(".html") + ".png")
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--virtual-time-budget=5000", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}"]
    url = f"{base}/{page}"
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    shot = subprocess.run([_chromium(), *flags, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr[-2000:] + shot.stderr[-2000:]

    title, heading = PAGES[page]
    rendered = _Links()
    rendered.feed(dom.stdout)
    assert title in rendered.title, f"title {rendered.title!r} of {page}"
    assert re.search(rf"<h1[^>]*>\s*{re.escape(heading)}", dom.stdout), f"no <h1> {heading!r} in the rendered {page}"
    assert "pydata-sphinx-theme" in dom.stdout or "bd-header" in dom.stdout, "the theme did not render"
    failed = [(path, status) for path, status in requests if status >= 400]
    assert not failed, f"assets the browser could not load for {page}: {failed}"
    assert len(requests) >= 10, f"the browser fetched only {requests}: did the page load its CSS and scripts?"
    console = [line for line in (dom.stderr + shot.stderr).splitlines() if "Failed to load resource" in line]
    assert not console, "\n".join(console)
    assert screenshot.is_file() and screenshot.stat().st_size > 20_000, "the screenshot is (nearly) empty"
