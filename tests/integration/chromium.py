"""Headless Chromium for the tests: Debian's ``chromium``, installed once when missing; the DOM
it builds from a file, a screenshot, and a pure-Python PNG decoder to look at the pixels."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

INSTALL_LOCK = Path("/tmp/devtrail-chromium-install.lock")
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 120


def chromium() -> str:
    """The ``chromium`` binary; installed with apt-get (once, under a file lock) when missing.

    Skips the test only when apt-get itself is not there; a failed installation fails it.
    """
    found = shutil.which("chromium")
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and apt-get is not available to install it (apt-get install chromium)")
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be installing it
        if shutil.which("chromium") is None:
            _apt_install("chromium")
    found = shutil.which("chromium")
    assert found is not None, "apt-get installed chromium but there is no chromium on PATH"
    return found


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    if done.returncode != 0:  # package lists missing or stale: update them, try once more
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=INSTALL_TIMEOUT_S, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"apt-get install {package} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def _run(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *flags,
        page.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(profile)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM Chromium built from ``page``, serialised."""
    return _run(page, profile, "--dump-dom").stdout


def screenshot(page: Path, profile: Path, out: Path, width: int = 1280, height: int = 4000) -> bytes:
    """A PNG screenshot of ``page`` in a ``width`` x ``height`` window."""
    _run(page, profile, f"--screenshot={out}", f"--window-size={width},{height}", "--hide-scrollbars")
    return out.read_bytes()


class _Shapes(HTMLParser):
    """Counts the SVG shapes inside each element with an id starting with ``prefix``."""

    SHAPES = frozenset({"rect", "path", "circle", "line", "polyline", "polygon"})
    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "col", "area", "base", "wbr", "source"})

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.open: list[tuple[str, str | None]] = []  # (tag, chart id it opened)
        self.shapes: dict[str, Counter[str]] = {}
        self.svgs: Counter[str] = Counter()
        self.empty: set[str] = set()

    def _chart(self) -> str | None:
        return next((chart for _, chart in reversed(self.open) if chart is not None), None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        element_id = values.get("id") or ""
        chart = self._chart()
        if chart is not None and tag in self.SHAPES:
            self.shapes[chart][tag] += 1
        if chart is not None and tag == "svg":
            self.svgs[chart] += 1
        if chart is not None and "empty" in (values.get("class") or "").split():
            self.empty.add(chart)
        if element_id.startswith(self.prefix):
            self.shapes.setdefault(element_id, Counter())
        if tag not in self.VOID:
            self.open.append((tag, element_id if element_id.startswith(self.prefix) else None))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.open.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                return


@dataclass(frozen=True)
class Chart:
    """What one chart element holds: its ``<svg>``s, shapes by tag, and whether it says it is empty."""

    svgs: int
    shapes: Counter[str]
    empty: bool


def charts(dom: str, prefix: str = "chart-") -> dict[str, Chart]:
    """The charts of a DOM, by the id of their element."""
    parser = _Shapes(prefix)
    parser.feed(dom)
    parser.close()
    return {chart: Chart(parser.svgs[chart], shapes, chart in parser.empty) for chart, shapes in parser.shapes.items()}


@dataclass(frozen=True)
class Image:
    """A decoded PNG: ``rows`` of ``width`` pixels, ``channels`` bytes each."""

    width: int
    height: int
    channels: int
    rows: list[bytes]

    def colours(self) -> Counter[bytes]:
        """How many pixels have each colour."""
        found: Counter[bytes] = Counter()
        c = self.channels
        for row in self.rows:
            found.update(row[i : i + c] for i in range(0, len(row), c))
        return found


def decode_png(data: bytes) -> Image:
    """Decode an 8-bit, non-interlaced greyscale, RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    header = next(body for kind, body in chunks if kind == b"IHDR")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0 and colour in (0, 2, 6), f"unsupported PNG: {depth=} {colour=} {interlace=}"
    channels = {0: 1, 2: 3, 6: 4}[colour]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    return Image(width, height, channels, _unfilter(raw, width * channels, height, channels))


def _unfilter(raw: bytes, stride: int, height: int, bpp: int) -> list[bytes]:
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
        previous = bytes(line)
        rows.append(previous)
    return rows


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c
