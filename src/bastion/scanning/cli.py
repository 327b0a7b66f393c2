"""``bastion scan PATH...``: scan distribution files offline and print the findings.

``scan_paths`` does the offline work (collect files, scan, print, exit status) ; ``--rescan``
re-scans the index's stored files through ``scanning.review.rescan``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bastion.cli import data_dir_option
from bastion.scanning.result import ScanPolicy, ScanResult, Verdict
from bastion.scanning.scanner import Scanner

DIST_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".whl", ".tar.bz2")
PROGRESS_AT = 5
"""Show a progress bar (on stderr) from this many files on, when stdout is a terminal."""

_VERDICT_STYLE = {Verdict.ALLOW: "green", Verdict.QUARANTINE: "yellow", Verdict.REJECT: "bold red"}


def collect(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories searched recursively for distribution files (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(DIST_SUFFIXES)))
        else:
            found.append(path)
    return found


def _results(files: list[Path], scanner: Scanner, progress: bool) -> Iterator[ScanResult]:
    if not progress:
        for path in files:
            yield scanner.scan(path)
        return
    columns = (TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=len(files))
        for path in files:
            bar.update(task, description=escape(path.name))
            yield scanner.scan(path)
            bar.advance(task)


def print_table(result: ScanResult, console: Console) -> None:
    style = _VERDICT_STYLE[result.verdict]
    title = f"{escape(result.filename)}  [{style}]{result.verdict.value}[/{style}]  score {result.score}"
    if result.error:
        console.print(f"{title}\n  [red]error:[/red] {escape(result.error)}")
        return
    if not result.findings:
        console.print(f"{title}  (no findings)")
        return
    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    table.add_column("rule", style="cyan", no_wrap=True)
    table.add_column("where", overflow="fold")
    table.add_column("sev", justify="right")
    table.add_column("excerpt", overflow="fold", max_width=60)
    table.add_column("why", overflow="fold", max_width=60)
    for finding in result.findings:
        where = finding.file + (f":{finding.line}" if finding.line else "")
        table.add_row(finding.rule, escape(where), f"{finding.severity:.1f}", escape(finding.excerpt),
                      escape(finding.why))
    console.print(table)


def scan_paths(paths: Iterable[Path], scanner: Scanner, as_json: bool, *, console: Console | None = None) -> int:
    """Scan files (directories recursively) and print each result; 1 if any is not allowed, else 0."""
    files = collect(paths)
    out = console or Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    progress = len(files) >= PROGRESS_AT and sys.stdout.isatty() and not as_json
    status = 0
    for result in _results(files, scanner, progress):
        if result.verdict != Verdict.ALLOW:
            status = 1
        if as_json:
            click.echo(json.dumps(result.to_json(), ensure_ascii=False))
        else:
            print_table(result, out)
    return status


def rescan_index(data_dir: str | None, everything: bool) -> int:
    """``--rescan``: re-scan the index's published files; 1 when new hits were queued for review."""
    from bastion.cli import _fail, _open
    from bastion.errors import ServiceError
    from bastion.scanning.review import rescan

    bastion = _open(data_dir)
    try:
        columns = (TextColumn("rescanning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True,
                      disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("", total=None)
            summary = rescan(bastion, everything=everything,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    except ServiceError as exc:
        _fail(exc.message)
    finally:
        bastion.close()
    click.echo(f"rescanned {summary.scanned} files with rules {bastion.scanner.rules_version} "
               f"({summary.up_to_date} already scanned with them, {summary.missing} missing from storage); "
               f"{summary.new_hits} new hits")
    if summary.cases:
        click.echo("queued for review: " + ", ".join(f"case #{case}" for case in summary.cases)
                   + " (see `bastion review list`)")
    return 1 if summary.new_hits else 0


@click.command("scan")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
@click.option("--quarantine-score", type=click.FloatRange(0, 10), default=None,
              help=f"Score from which a file is quarantined (default {ScanPolicy().quarantine_at}).")
@click.option("--reject-score", type=click.FloatRange(0, 10), default=None,
              help=f"Score from which a file is rejected (default {ScanPolicy().reject_at}).")
@click.option("--rescan", is_flag=True,
              help="Re-scan the index's published files whose last scan used other rules; new hits open "
                   "review cases (nothing is hidden or removed). Takes no PATH.")
@click.option("--all", "everything", is_flag=True, help="With --rescan: every published file.")
@data_dir_option
def scan_command(paths: tuple[Path, ...], as_json: bool, quarantine_score: float | None,
                 reject_score: float | None, rescan: bool, everything: bool, data_dir: str | None) -> None:
    """Scan distribution files (or directories of them) for malicious code; nothing is run.

    Exit status: 0 when every file is allowed, 1 when any is quarantined or rejected, 2 on usage errors.
    With --rescan (and --data-dir): 1 when new hits were queued for review.
    """
    if rescan:
        if paths:
            click.echo("Error: --rescan scans the index's files and takes no PATH.", err=True)
            sys.exit(2)
        sys.exit(rescan_index(data_dir, everything))
    if everything:
        click.echo("Error: --all goes with --rescan.", err=True)
        sys.exit(2)
    if not paths:
        click.echo("Error: give at least one PATH (a file or directory), or --rescan.", err=True)
        sys.exit(2)
    missing = [path for path in paths if not path.exists()]
    if missing:
        click.echo(f"Error: {missing[0]}: no such file or directory.", err=True)
        sys.exit(2)
    defaults = ScanPolicy()
    policy = ScanPolicy(quarantine_at=defaults.quarantine_at if quarantine_score is None else quarantine_score,
                        reject_at=defaults.reject_at if reject_score is None else reject_score)
    if policy.quarantine_at > policy.reject_at:
        click.echo("Error: --quarantine-score must not be above --reject-score.", err=True)
        sys.exit(2)
    sys.exit(scan_paths(paths, Scanner(policy), as_json))
