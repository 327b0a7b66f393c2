"""Cost of Bastion's read hot path in-process: the ASGI app called directly, no sockets, no uvicorn.

    .venv/bin/python benchmarks/hotpath.py [DATA_DIR] [--requests 100000] [--profile]

Without DATA_DIR a 20-project index is loaded into a temp dir (benchmarks/catalog.py). Prints
microseconds per request spent in ``bastion.simple.serve.ReadAPI`` (and what it calls) for each
read endpoint, cache warm. Compare with the server's CPU µs/req in run.py's table to see how much
of a request is Bastion's code and how much is uvicorn and the kernel. This number is steady on a
noisy machine, so it is the one to check a change to serve.py against.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


async def _send(message: dict) -> None:
    return None


async def _receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope(path: str, accept: bytes | None) -> dict:
    headers = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"hotpath")]
    if accept:
        headers.append((b"accept", accept))
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers, "scheme": "http", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5000),
            "http_version": "1.1", "asgi": {"version": "3.0"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top functions for project HTML")
    args = parser.parse_args()
    data_dir = args.data_dir
    if data_dir is None:
        import catalog

        data_dir = Path(tempfile.mkdtemp(prefix="bastion-hotpath-")) / "data"
        catalog.load_catalog(data_dir, projects=20, files_per_project=6, show_progress=False)
    os.environ["BASTION_DATA_DIR"] = str(data_dir)
    from sqlalchemy import select

    from bastion.app import app_from_env
    from bastion.packaging.models import File, Project
    from bastion.services import Bastion
    from bastion.settings import load_settings

    bastion = Bastion(load_settings(data_dir), run_migrations=False)
    with bastion.db.read() as session:
        project = session.execute(select(Project.normalized_name).order_by(Project.id)).scalars().first()
        blob = session.execute(select(File.path).order_by(File.size.desc())).scalars().first()
    bastion.close()
    app = app_from_env()
    cases = [
        ("GET /simple/", "/simple/", b"text/html"),
        ("GET /simple/<project>/ HTML", f"/simple/{project}/", b"text/html"),
        ("GET /simple/<project>/ JSON", f"/simple/{project}/", b"application/vnd.pypi.simple.v1+json"),
        ("GET /packages/... (largest file)", f"/{blob}", None),
    ]

    async def measure(scope: dict, count: int) -> float:
        for _ in range(min(1000, count)):
            await app(scope, _receive, _send)
        start = time.perf_counter()
        for _ in range(count):
            await app(scope, _receive, _send)
        return (time.perf_counter() - start) / count * 1e6

    print(f"data dir {data_dir}; {args.requests:,} requests per case, cache warm")
    for label, path, accept in cases:
        count = args.requests if not path.startswith("/packages/") else max(1, args.requests // 20)
        micros = asyncio.run(measure(_scope(path, accept), count))
        print(f"  {label:34s} {micros:8.2f} µs/request")
    scope = _scope(f"/simple/{project}/", b"text/html")

    async def misses(count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            app.pages.clear()  # every request misses the page cache and reads the database
            await app(scope, _receive, _send)
        return (time.perf_counter() - start) / count * 1e6

    print(f"  {'GET /simple/<project>/ HTML, miss':34s} {asyncio.run(misses(max(1, args.requests // 20))):8.2f} µs/request"
          "  (page cache cleared before each request)")
    if args.profile:
        scope = _scope(f"/simple/{project}/", b"text/html")

        async def loop() -> None:
            for _ in range(args.requests):
                await app(scope, _receive, _send)

        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(loop())
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
