"""The image ETL of the Dask + Prefect tutorial, offline, as a daskflow flow.

A "remote" archive of small grayscale frames is made on disk and fetched
through a file:// URL.  The flow downloads it (with retries, and SKIP when
the file is already in the cache), splits it into frames (a length known
only at run time), decodes every frame in a map, writes a report, and tidies
up partial downloads whatever happened.  It runs twice on a temporary local
Dask cluster; the second run skips the download.

    python examples/images.py
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import tempfile
import urllib.request

import daskflow as df

MAGIC = b"DFIMG1"
SIDE = 16  # frames are SIDE x SIDE bytes


@df.task(retries=2, retry_delay=[0.5, 2.0], retry_on=OSError)
def download(url: str, cache_dir: str) -> str:
    """Fetch the archive into the cache, unless it is already there."""
    dest = os.path.join(cache_dir, os.path.basename(url))
    if os.path.exists(dest):
        raise df.SKIP(f"{dest} is already in the cache", result=dest)
    df.get_run_logger().info("downloading %s", url)
    with urllib.request.urlopen(url) as response, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(response, out)
    os.replace(dest + ".part", dest)
    return dest


@df.task(skip_on_upstream_skip=False)
def split(path: str) -> list[bytes]:
    """Cut the archive into frames; how many is known only now."""
    with open(path, "rb") as f:
        blob = f.read()
    if not blob.startswith(MAGIC):
        raise df.FAIL(f"{path} is not an image archive")
    (count,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    size = SIDE * SIDE
    return [blob[start + i * size: start + (i + 1) * size] for i in range(count)]


@df.task
def decode(frame: bytes) -> dict:
    """Brightness, contrast and a one-line sketch of a frame."""
    pixels = list(frame)
    mean = sum(pixels) / len(pixels)
    spread = (sum((p - mean) ** 2 for p in pixels) / len(pixels)) ** 0.5
    shades = " .:-=+*#%@"
    columns = [sum(pixels[r * SIDE + c] for r in range(SIDE)) / SIDE for c in range(SIDE)]
    sketch = "".join(shades[int(v / 256 * len(shades))] for v in columns)
    return {"brightness": round(mean, 1), "contrast": round(spread, 1), "sketch": sketch}


@df.task
def report(frames: list[dict], out_path: str) -> str:
    """Write one JSON line per frame and return a short summary."""
    with open(out_path, "w") as f:
        for i, frame in enumerate(frames):
            f.write(json.dumps({"frame": i, **frame}) + "\n")
    brightest = max(range(len(frames)), key=lambda i: frames[i]["brightness"], default=None)
    df.get_run_logger().info("wrote %d frames to %s", len(frames), out_path)
    return f"{len(frames)} frames, brightest is #{brightest}"


@df.task(trigger=df.always_run)
def tidy(cache_dir: str) -> int:
    """Remove partial downloads left by failed attempts (runs whatever happened)."""
    partial = [n for n in os.listdir(cache_dir) if n.endswith(".part")]
    for name in partial:
        os.remove(os.path.join(cache_dir, name))
    return len(partial)


@df.flow
def images(url: str, cache_dir: str, out_path: str):
    path = download(url, cache_dir)
    frames = decode.map(split(path))
    summary = report(frames, out_path)
    tidy(cache_dir, wait_for=[summary])
    return summary


def make_archive(path: str, count: int, seed: int = 0) -> str:
    """The stand-in for the tutorial's remote image archive."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<I", count))
        for _ in range(count):
            level = rng.randrange(0, 200)
            f.write(bytes(min(255, level + rng.randrange(0, 56)) for _ in range(SIDE * SIDE)))
    return path


def main() -> None:
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="daskflow-demo-") as tmp:
        source = make_archive(os.path.join(tmp, "all-images.img"), count=random.randint(40, 60))
        cache = os.path.join(tmp, "cache")
        os.makedirs(cache)
        params = {"url": f"file://{source}", "cache_dir": cache,
                  "out_path": os.path.join(out_dir, "frames.jsonl")}
        for attempt in ("first run", "second run (download cached)"):
            run = images.run(**params)
            print(f"\n== {attempt}: {run.result()}")
            print(run.summary())
        assert run.states["download"].is_skipped(), "the second run should skip the download"


if __name__ == "__main__":
    main()
