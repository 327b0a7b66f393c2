"""``bastion audit``: audit requirements, a pylock.toml or an installed environment against an index.

Talks HTTP to the index (``--index-url``; default ``$BASTION_INDEX_URL``, else the configured
``$BASTION_PUBLIC_URL``, else ``http://127.0.0.1:8080``), so it runs from any machine. Exit
status: 0 clean, 1 findings remain (ignored ones aside), 2 bad input or the index unreachable. The report goes to stdout, progress
and the summary to stderr.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bastion.advisories.audit import (
    DEFAULT_INDEX_URL,
    RENDERERS,
    AuditInputError,
    Dependency,
    Ignore,
    IndexClient,
    IndexUnavailable,
    Skipped,
    Wanted,
    audit,
    environment_paths,
    expiry_warnings,
    parse_ignore,
    read_environment,
    read_ignore_file,
    read_pylock,
    read_requirements,
    resolve,
    summary_line,
)

err = Console(stderr=True, soft_wrap=True, highlight=False)
NOTES_SHOWN = 5
"""Notes printed on stderr (a file of pins the index does not hold would print one per line)."""


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(2)


@click.command("audit")
@click.argument("pylock", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-r", "--requirement", "requirements", multiple=True, type=click.Path(path_type=Path),
              help="A requirements file (repeatable).")
@click.option("--path", "paths", multiple=True, type=click.Path(path_type=Path),
              help="Audit the distributions installed in this site-packages directory (repeatable).")
@click.option("--python", "python", default=None, help="Audit the environment of this Python interpreter.")
@click.option("--index-url", envvar=["BASTION_INDEX_URL", "BASTION_PUBLIC_URL"], default=DEFAULT_INDEX_URL,
              show_default=True, help="The Bastion index to ask (its root, or its /simple/ URL); default "
              "$BASTION_INDEX_URL, else the index's own $BASTION_PUBLIC_URL.")
@click.option("--no-deps", is_flag=True, help="Audit the listed requirements only, not their dependencies.")
@click.option("-f", "--format", "fmt", type=click.Choice(sorted(RENDERERS)), default="columns", show_default=True)
@click.option("--ignore", "ignore_ids", multiple=True, metavar="ID[:YYYY-MM-DD]",
              help="Do not report this advisory (any of its ids or aliases), until the date if given (repeatable).")
@click.option("--ignore-reason", default="", help="Why the --ignore ids are safe to ignore (shown in the report).")
@click.option("--ignore-file", type=click.Path(path_type=Path), default=None,
              help="A TOML file of [[ignore]] tables: id, reason, expires.")
@click.option("--fix", is_flag=True, help="Print the smallest upgrade of each vulnerable package that clears every finding.")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds to wait for each answer of the index.")
def audit_command(pylock: Path | None, requirements: tuple[Path, ...], paths: tuple[Path, ...], python: str | None,
                  index_url: str, no_deps: bool, fmt: str, ignore_ids: tuple[str, ...], ignore_reason: str,
                  ignore_file: Path | None, fix: bool, timeout: float) -> None:
    """Audit dependencies for known vulnerabilities, with the index's advisories.

    \b
    bastion audit -r requirements.txt      a requirements file (resolved against the index)
    bastion audit pylock.toml              a PEP 751 lock file
    bastion audit                          this interpreter's environment (or --path / --python)
    """
    try:
        if (requirements or pylock) and (paths or python):
            raise AuditInputError("audit either files (-r, pylock.toml) or an environment (--path, --python), not both.")
        if paths and python:
            raise AuditInputError("give --path or --python, not both.")
        ignores: list[Ignore] = [parse_ignore(i, ignore_reason) for i in ignore_ids]
        if ignore_reason and not ignore_ids:
            raise AuditInputError("--ignore-reason explains --ignore ids: give one with --ignore ID.")
        if ignore_file is not None:
            ignores += read_ignore_file(ignore_file)
        wanted: list[Wanted] = []
        fixed: list[Dependency] = []
        skipped: list[Skipped] = []
        for path in requirements:
            found, skips = read_requirements(path)
            wanted += found
            skipped += skips
        if pylock is not None:
            locked, skips = read_pylock(pylock)
            fixed += locked
            skipped += skips
        if not requirements and pylock is None:
            site = [str(p) for p in paths] if paths else (environment_paths(python) if python else None)
            fixed, skipped = read_environment(site)
        client = IndexClient(index_url, timeout=timeout)
    except AuditInputError as exc:
        _fail(str(exc))
        return

    show = err.is_terminal
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    try:
        with Progress(*columns, console=err, transient=True, disable=not show) as bar:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            dependencies: list[Dependency] = list(fixed)
            notes: list[str] = []
            if wanted:
                resolved, skips, notes = resolve(client, wanted, follow_deps=not no_deps, progress=progress)
                known = {d.name for d in dependencies}
                dependencies += [d for d in resolved if d.name not in known]
                skipped += skips
            report = audit(client, dependencies, ignores=ignores, today=date.today(), fix=fix, progress=progress)
    except IndexUnavailable as exc:
        _fail(str(exc))
        return
    report.skipped = skipped
    report.notes = notes
    text = RENDERERS[fmt](report)
    click.echo(text, nl=False)
    for warning in expiry_warnings(report):
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    for note in notes[:NOTES_SHOWN]:
        err.print(f"note: {escape(note)}")
    if len(notes) > NOTES_SHOWN:
        err.print(f"note: ... and {len(notes) - NOTES_SHOWN} more (all of them in -f json's \"notes\")")
    err.print(summary_line(report))
    sys.exit(report.exit_code)
