"""CPU cost of Bastion's upload pipeline in-process: no sockets, no uvicorn, no twine.

    .venv/bin/python benchmarks/upload_path.py [--projects 20] [--rounds 10] [--profile]

Generates ``--projects`` x ``--rounds`` small wheels and sdists (benchmarks/dists.py; round r is
version 1.r.0 of every project), then calls ``bastion.packaging.upload.upload`` for each file on
a fresh SQLite data dir, with the form twine would send and an API token, as the route does after
parsing the request. Prints the median CPU milliseconds per file (``time.thread_time`` of the
calling thread: steady on a shared machine, unlike wall time) for the whole call and for the
phases it is made of, then the CPU of one TUF snapshot run that signs a round, per file signed.
The first round (new projects) is reported apart; the others upload new versions of existing
projects, the common case. ``--profile`` prints cProfile's top functions for the later rounds.

Use it to check a change to the upload path; ``benchmarks/run.py`` gives the end-to-end figure
against pypiserver and devpi through twine.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

# Python puts this directory first on sys.path, where benchmarks/tuf.py would shadow python-tuf:
# it goes last, after site-packages, for dists.py.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import dists  # noqa: E402


def form_for(dist: dists.Dist) -> dict[str, str]:
    """The fields twine 6 sends with a file (the metadata fields the checks compare, digests)."""
    return {
        ":action": "file_upload", "protocol_version": "1", "metadata_version": "2.1",
        "name": dist.project, "version": dist.version,
        "filetype": "bdist_wheel" if dist.kind == "wheel" else "sdist",
        "pyversion": "py3" if dist.kind == "wheel" else "source",
        "summary": "Synthetic project for the Bastion benchmark", "requires_python": ">=3.8",
        "description_content_type": "text/markdown",
        "md5_digest": hashlib.md5(dist.data, usedforsecurity=False).hexdigest(),
        "sha256_digest": hashlib.sha256(dist.data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(dist.data, digest_size=32).hexdigest(),
    }


class Phases:
    """CPU time of the functions an upload is made of, wrapped for the run (thread CPU, ms)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextmanager
    def wrap(self, module: object, name: str, label: str):  # type: ignore[no-untyped-def]
        original = getattr(module, name)

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.totals[label] = self.totals.get(label, 0.0) + time.thread_time() - start

        setattr(module, name, timed)
        try:
            yield
        finally:
            setattr(module, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key for --profile (cumulative, tottime)")
    parser.add_argument("--statements", action="store_true",
                        help="also print the SQL statements of the last upload (an existing project's new file)")
    args = parser.parse_args()

    from contextlib import ExitStack

    from bastion.accounts import service as accounts
    from bastion.authz import Principal
    from bastion.events import RequestContext
    from bastion.packaging import upload as upload_module
    from bastion.services import Bastion
    from bastion.settings import load_settings
    from bastion.tuf import service as tuf_service

    rounds = dists.small_index(args.projects, args.rounds)
    with tempfile.TemporaryDirectory(prefix="bastion-upload-path-") as tmp:
        data_dir = Path(tmp) / "data"
        bastion = Bastion(load_settings(data_dir))
        operator = Principal(user_id=None, username="operator", is_admin=True)
        with bastion.db.write() as session:
            from bastion.accounts.models import User

            session.add(User(username="bench", username_key="bench", email="bench@example.org", password_hash="-"))
        with bastion.db.write() as session:
            from datetime import timedelta

            raw = accounts.create_token(session, bastion.secret, "bench", projects=None,
                                        expires_in=timedelta(days=1), principal=operator).token
        with bastion.db.read() as session:
            principal, _ = accounts.authenticate_token(session, bastion.secret, raw)
        signer = tuf_service.prepare(bastion, announce=False)  # the TUF repository, as `bastion serve` makes it
        context = RequestContext(ip="127.0.0.1", user_agent="twine/6.1.0 upload_path")
        statements: list[str] = []
        last_upload: list[str] = []

        from sqlalchemy import event

        @event.listens_for(bastion.db.engine, "before_cursor_execute")
        def _count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            statements.append(" ".join(statement.split())[:160])

        profiler = cProfile.Profile() if args.profile else None
        per_file: list[list[float]] = []
        phase_rounds: list[dict[str, float]] = []
        snapshot_ms: list[float] = []
        for r, files in enumerate(rounds):
            phases = Phases()
            times: list[float] = []
            with ExitStack() as stack:
                stack.enter_context(phases.wrap(upload_module, "spool", "spool (copy, digests)"))
                stack.enter_context(phases.wrap(upload_module, "check_file", "checks (archive, metadata)"))
                stack.enter_context(phases.wrap(upload_module, "scan_upload", "scan"))
                stack.enter_context(phases.wrap(upload_module, "store_checked", "store (transaction)"))
                stack.enter_context(phases.wrap(upload_module, "refresh_project_pages", "  of which: page render"))
                stack.enter_context(phases.wrap(upload_module, "record_event", "  of which: audit events"))
                if profiler is not None and r > 0:
                    profiler.enable()
                for dist in files:
                    incoming = upload_module.IncomingFile(filename=dist.filename, content_type="application/octet-stream",
                                                          stream=io.BytesIO(dist.data))
                    statements.clear()
                    start = time.thread_time()
                    outcome = upload_module.upload(bastion, principal, form_for(dist), incoming, context,
                                                   {"classifiers": ["Programming Language :: Python :: 3"]})
                    times.append((time.thread_time() - start) * 1000)
                    last_upload = list(statements)
                    if not outcome.created:
                        raise RuntimeError(f"{dist.filename} was not stored")
                if profiler is not None:
                    profiler.disable()
            if signer is not None:
                start = time.thread_time()
                tuf_service.run_snapshot(bastion, signer)
                snapshot_ms.append((time.thread_time() - start) * 1000 / len(files))
            per_file.append(times)
            phase_rounds.append({k: v * 1000 / len(files) for k, v in phases.totals.items()})
        bastion.close()

    def line(label: str, values: list[float]) -> None:
        print(f"  {label:34s} {statistics.median(values):8.2f}")

    if args.statements:
        print(f"SQL statements of the last upload ({len(last_upload)}, BEGIN included):")
        for statement in last_upload:
            print("  " + statement)
    count = sum(len(f) for f in rounds)
    print(f"upload_path: {args.projects} projects x {args.rounds} rounds = {count} files "
          f"(CPU ms per file, median; SQLite)")
    for title, chosen in (("first round (new projects)", [0]), ("later rounds (existing projects)",
                                                                list(range(1, len(rounds))))):
        print(title)
        line("upload() in all", [t for i in chosen for t in per_file[i]])
        for label in phase_rounds[0]:
            line(label, [phase_rounds[i].get(label, 0.0) for i in chosen])
        if snapshot_ms:
            line("TUF snapshot run, per file signed", [snapshot_ms[i] for i in chosen])
    if profiler is not None:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(45)


if __name__ == "__main__":
    main()
