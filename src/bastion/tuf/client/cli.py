"""``bastion verify-proxy`` and ``bastion download``: install and download through TUF.

Exit codes: 0 success; 1 a verification failure or nothing found; 2 bad input (a --root that is
not a readable TUF root, an index that serves no TUF metadata, a bad NAME==VERSION).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bastion.cli import _fail, err, out

DEFAULT_PROXY_PORT = 8458

index_option = click.option(
    "--index", "index_url", required=True, metavar="URL",
    help="The index's base URL (e.g. https://pypi.example.org/; a .../simple/ URL is cut back to it).")
root_option = click.option(
    "--root", "root_path", required=True, metavar="FILE", type=click.Path(path_type=Path),
    help="The index's trusted root metadata (1.root.json), obtained once over a channel you trust.")
cache_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Metadata and file cache (default: ~/.cache/bastion/tuf/<hash of the index URL>).")


def _open_index(index_url: str, root_path: Path, cache_dir: Path | None) -> Any:
    """A VerifiedIndex whose root, cache dir and index URL were checked (exit 2 otherwise)."""
    from bastion.tuf.client import ClientError, VerifiedIndex, default_cache_dir, load_trusted_root, \
        normalize_index_url

    try:
        root = load_trusted_root(root_path)
        url = normalize_index_url(index_url)
        index = VerifiedIndex(url, root, cache_dir or default_cache_dir(url), root_label=f"--root {root_path}")
        index.check_serves_tuf()
    except ClientError as exc:
        _fail(str(exc), 2)
    return index


@click.command("verify-proxy")
@index_option
@root_option
@click.option("--port", default=DEFAULT_PROXY_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0: a free port, printed when ready).")
@cache_option
def verify_proxy(index_url: str, root_path: Path, port: int, cache_dir: Path | None) -> None:
    """A local simple index that serves only what the index's TUF metadata verifies.

    Point pip or uv at it: `pip install --index-url http://127.0.0.1:PORT/simple/ NAME`. Pages and
    files are checked with python-tuf before they are served; anything that fails verification
    is answered with HTTP 502 "TUF verification failed: <reason>". Listens on 127.0.0.1 only.
    """
    from bastion.tuf.client import VerificationError
    from bastion.tuf.client.proxy import VerifyProxy, serve

    index = _open_index(index_url, root_path, cache_dir)
    proxy = VerifyProxy(index)
    try:
        index.refresh()
    except VerificationError as exc:
        # Still serve: every request retries, and answers 502 while the metadata stays refused.
        proxy.log(f"warning: TUF verification failed: {exc}")
    try:
        server = proxy.make_server(port)
    except OSError as exc:
        _fail(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): choose another --port (0 picks a free one)", 2)
    serve(proxy, server)


@click.command("download")
@click.argument("spec", metavar="NAME==VERSION")
@index_option
@root_option
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Directory to save the file in.")
@click.option("--file", "filename", default=None, metavar="FILENAME",
              help="Take this file of the release (default: the best wheel for this Python, else the sdist).")
@cache_option
def download(spec: str, index_url: str, root_path: Path, dest: Path, filename: str | None,
             cache_dir: Path | None) -> None:
    """Download one file of NAME==VERSION after TUF verified the project's page and the file."""
    from bastion.tuf.client import ClientError, VerificationError
    from bastion.tuf.client.download import NotFound, download as fetch, parse_spec

    try:
        name, version = parse_spec(spec)
    except ClientError as exc:
        _fail(str(exc), 2)
    index = _open_index(index_url, root_path, cache_dir)
    try:
        saved = fetch(index, name, version, dest, filename)
    except VerificationError as exc:
        _fail(f"TUF verification failed: {exc}", 1)
    except NotFound as exc:
        _fail(f"{name}=={version}: {exc}", 1)
    except ClientError as exc:
        _fail(str(exc), 2)
    out.print(f"{saved.path}", highlight=False, soft_wrap=True)
    out.print(f"sha256 {saved.sha256}", highlight=False)
    err.print(f"verified with TUF against {index.index_url}", highlight=False)
