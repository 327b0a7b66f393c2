"""``bastion import``: bring the files of a pypiserver directory, a devpi export or any tree in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from bastion.cli import _fail, _open, data_dir_option, err, out

REFUSALS_SHOWN = 20
MAIL_DRAIN_SECONDS = 60


@click.command("import")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--owner", default=None, help="The existing user who owns the projects the import creates (required).")
@click.option("--project-from-filename", is_flag=True,
              help="For a file whose metadata has no usable name (none, or UNKNOWN), take the project name "
                   "from the filename (the file is stored unchanged).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Processes that check and scan files in parallel (the database writes stay in this one).")
@click.option("--json", "json_file", default=None, metavar="FILE",
              help="Also write the report as JSON to FILE ('-': stdout, instead of the table).")
@data_dir_option
def import_command(paths: tuple[Path, ...], owner: str | None, project_from_filename: bool, workers: int,
                   json_file: str | None, data_dir: str | None) -> None:
    """Import distribution files from PATH... : a pypiserver package directory, a devpi export
    (the directory `devpi-export` wrote, with dataindex.json: versions, upload times and yanks
    kept), or any directory tree of .whl, .tar.gz and .zip files.

    Every file is checked as an upload is (lenient mode: pre-PEP 625 and zip sdists, local
    versions...) and scanned; what the scanner holds goes to the review queue. Each file is
    stored in a transaction of its own: re-running an import (also one that was killed) adds
    only what is missing. Other files (.egg, .exe, signatures...) are counted and skipped.

    Exit code: 0 when no file was refused, 1 when some were (the summary and --json say which
    and why), 2 on a usage error (no --owner, a path not found, an unknown owner).
    """
    from bastion.packaging.importer import ImportUsageError, Progress as Step, import_paths

    if not paths:
        _fail("give at least one PATH: a pypiserver directory, a devpi export or a directory of files", 2)
    if not owner:
        _fail("--owner USER is required: the existing user who will own the imported projects", 2)
    assert owner is not None
    for path in paths:
        if not path.exists():
            _fail(f"path not found: {path}", 2)
    to_stdout = json_file == "-"
    bastion = _open(data_dir)
    try:
        bastion.tasks.start()  # the held-for-review notices are mailed from the task queue
        show = sys.stderr.isatty() and not to_stdout
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TransferSpeedColumn(),
                   TextColumn("{task.fields[refused]} refused, {task.fields[held]} held"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True, disable=not show) as bar:
            task = bar.add_task("", total=None, refused=0, held=0)

            def discovered(files: int, size: int) -> None:
                bar.update(task, total=size)

            def step(state: Step) -> None:
                bar.update(task, completed=state.bytes_done, refused=state.refused, held=state.held)

            try:
                report = import_paths(bastion, list(paths), owner, workers=workers,
                                      project_from_filename=project_from_filename, progress=step,
                                      on_discovered=discovered)
            except ImportUsageError as exc:
                _fail(str(exc), 2)
        if not bastion.tasks.drain(MAIL_DRAIN_SECONDS):
            err.print(f"[yellow]warning:[/] notices still being sent after {MAIL_DRAIN_SECONDS} s were cut off")
    finally:
        bastion.close()
    data = report.to_json()
    if json_file is not None:
        text = json.dumps(data, indent=2)
        if to_stdout:
            click.echo(text)
        else:
            Path(json_file).write_text(text + "\n")
    if not to_stdout:
        _print_summary(report, data)
    if report.refused:
        sys.exit(1)


def _print_summary(report, data: dict) -> None:  # type: ignore[no-untyped-def]
    refused = [f for f in report.files if f.outcome == "refused"]
    for item in refused[:REFUSALS_SHOWN]:
        err.print(f"[red]refused[/] {escape(item.path)}: {escape(item.reason)}", highlight=False)
    if len(refused) > REFUSALS_SHOWN:
        err.print(f"... and {len(refused) - REFUSALS_SHOWN} more refused (--json FILE lists them all)")
    table = Table("files", "count", title=f"bastion import ({', '.join(report.kinds)})", title_justify="left")
    table.add_row("accepted", str(data["accepted"]))
    table.add_row("held for review", str(data["held_for_review"]))
    table.add_row("refused", str(data["refused"]))
    for reason, count in data["refused_by_reason"].items():
        table.add_row(f"  {escape(reason)}", str(count))
    table.add_row("skipped: already present", str(data["skipped_already_present"]))
    table.add_row("skipped: not a distribution pip installs", str(data["skipped_not_a_distribution"]))
    Console(width=max(out.width, 120)).print(table)
    rate = f", {data['files_per_second']} files/s" if data["files_per_second"] else ""
    out.print(f"{len(report.projects)} projects ({len(report.created_projects)} created), "
              f"{report.bytes_stored / 1e6:.1f} MB stored in {report.seconds:.1f} s{rate}; TUF: {escape(report.tuf)}",
              highlight=False)
    if report.yanked:
        out.print(f"yanked as on the source index: {escape(', '.join(report.yanked))}", highlight=False)
