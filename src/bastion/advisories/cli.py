"""``bastion advisories import|list|show|rematch``: the operator's advisory commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bastion.advisories.audit import printable
from bastion.cli import _fail, _open, data_dir_option, err, out

PROBLEMS_SHOWN = 20
ALERT_DRAIN_SECONDS = 120


def _text(value: str) -> str:
    """Advisory text (from a public database) as plain terminal text: no rich markup, no control characters."""
    return escape(printable(value))


@click.group("advisories")
def advisories_group() -> None:
    """Vulnerability advisories (OSV): import them, list and show what matched."""


@advisories_group.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@data_dir_option
def import_command(path: Path, as_json: bool, data_dir: str | None) -> None:
    """Import OSV advisories from PATH and match them to every release.

    PATH: a checkout of the PyPA advisory database (vulns/<project>/<ID>.yaml), a directory or zip
    of OSV JSON (osv.dev's export), or one record file. Re-import is incremental (by id and
    modified). Malformed records are reported and skipped; exit 1 when any was skipped.
    """
    from bastion.advisories.ingest import ImportError_, import_path

    bastion = _open(data_dir)
    try:
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        show = sys.stderr.isatty() and not as_json
        with Progress(*columns, console=Console(stderr=True), transient=True, disable=not show) as bar:
            task = bar.add_task("", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            try:
                summary = import_path(bastion, path, progress=progress)
            except ImportError_ as exc:
                _fail(str(exc), 2)
        if not bastion.tasks.drain(ALERT_DRAIN_SECONDS):  # the alerts' mail and webhook calls
            err.print(f"[yellow]warning:[/] alerts still being sent after {ALERT_DRAIN_SECONDS} s were cut off")
    finally:
        bastion.close()
    if as_json:
        click.echo(json.dumps({"source": summary.source, **summary.counts(), "seconds": round(summary.seconds, 3),
                               "problems": [{"path": p.path, "reason": p.reason} for p in summary.problems]},
                              indent=2))
    else:
        for problem in summary.problems[:PROBLEMS_SHOWN]:
            err.print(f"[yellow]skipped[/] {escape(problem.path)}: {escape(problem.reason)}", highlight=False)
        if len(summary.problems) > PROBLEMS_SHOWN:
            err.print(f"... and {len(summary.problems) - PROBLEMS_SHOWN} more skipped (--json lists them all)")
        click.echo(f"{summary.source}: {summary.line()}")
    if summary.skipped:
        sys.exit(1)


@advisories_group.command("list")
@click.option("--project", default=None, help="Only advisories naming this project.")
@click.option("--vulnerable", is_flag=True, help="Only advisories that match a release of this index.")
@data_dir_option
def list_command(project: str | None, vulnerable: bool, data_dir: str | None) -> None:
    """List stored advisories (id, aliases, projects, releases matched here)."""
    from packaging.utils import canonicalize_name
    from sqlalchemy import func, select

    from bastion.advisories.models import Advisory, AdvisoryPackage, VulnerabilityMatch

    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:
            query = select(Advisory.id, Advisory.aliases, Advisory.withdrawn, Advisory.modified).order_by(Advisory.id)
            if project:
                query = query.where(Advisory.id.in_(select(AdvisoryPackage.advisory_id).where(
                    AdvisoryPackage.normalized_name == canonicalize_name(project))))
            rows = session.execute(query).all()
            names: dict[str, list[str]] = {}
            for advisory_id, name in session.execute(select(AdvisoryPackage.advisory_id, AdvisoryPackage.normalized_name)):
                names.setdefault(advisory_id, []).append(name)
            counts = dict(session.execute(
                select(VulnerabilityMatch.advisory_id, func.count()).group_by(VulnerabilityMatch.advisory_id)
            ).all())
    finally:
        bastion.close()
    table = Table("ID", "Aliases", "Projects", "Releases here", "Modified", "Status")
    shown = 0
    for row in rows:
        matched = counts.get(row.id, 0)
        if vulnerable and not matched:
            continue
        shown += 1
        table.add_row(_text(row.id), _text(", ".join(row.aliases or [])), ", ".join(sorted(names.get(row.id, []))),
                      str(matched),
                      row.modified.date().isoformat(), "withdrawn" if row.withdrawn else "")
    out.print(table)
    out.print(f"{shown} advisories")


@advisories_group.command("show")
@click.argument("advisory_id")
@data_dir_option
def show_command(advisory_id: str, data_dir: str | None) -> None:
    """Show one advisory: its record's summary, the affected ranges, the releases it matches here."""
    from sqlalchemy import select

    from bastion.advisories.match import Matcher
    from bastion.advisories.models import Advisory, AdvisoryPackage, VulnerabilityMatch
    from bastion.packaging.models import Project, Release

    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:
            advisory = session.get(Advisory, advisory_id)
            if advisory is None:
                advisory = session.execute(select(Advisory).where(Advisory.id.ilike(advisory_id))).scalars().first()
            if advisory is None:
                _fail(f"no advisory {advisory_id!r} is stored: import advisories first (bastion advisories import PATH), "
                      "or list them (bastion advisories list)")
            assert advisory is not None
            entries = session.execute(select(AdvisoryPackage).where(AdvisoryPackage.advisory_id == advisory.id)).scalars().all()
            matched = session.execute(
                select(Project.name, Release.version).select_from(VulnerabilityMatch)
                .join(Release, Release.id == VulnerabilityMatch.release_id)
                .join(Project, Project.id == Release.project_id).where(VulnerabilityMatch.advisory_id == advisory.id)
                .order_by(Project.name, Release.id)
            ).all()
    finally:
        bastion.close()
    out.print(f"[bold]{_text(advisory.id)}[/]" + (f"  (aliases: {_text(', '.join(advisory.aliases))})" if advisory.aliases else ""))
    if advisory.withdrawn:
        out.print(f"[yellow]withdrawn {advisory.withdrawn.isoformat()}[/]")
    out.print(_text(advisory.summary or advisory.details[:300]), highlight=False)
    out.print(f"modified {advisory.modified.isoformat()}  from {escape(advisory.origin)}", highlight=False)
    for entry in entries:
        matcher = Matcher(entry.ranges, entry.versions)
        ranges = "; ".join(
            f"{r['type']}: " + ", ".join(f"{k} {v}" for e in r["events"] for k, v in e.items()) for r in entry.ranges
        )
        out.print(f"  {entry.normalized_name}: {escape(ranges) or 'listed versions only'}"
                  f" ({len(entry.versions)} versions listed; fixed in {', '.join(matcher.fixed_in()) or 'no release'})",
                  highlight=False)
    if matched:
        out.print("matches here: " + ", ".join(f"{name} {version}" for name, version in matched), highlight=False)
    else:
        out.print("matches no release of this index")


@advisories_group.command("rematch")
@data_dir_option
def rematch_command(data_dir: str | None) -> None:
    """Recompute every stored match and re-render the pages of projects whose matches changed."""
    from bastion.advisories.ingest import refresh_projects, rematch_all

    bastion = _open(data_dir)
    try:
        with bastion.db.write() as session:
            added, removed, projects = rematch_all(session)
            serial = refresh_projects(session, projects, "advisories re-matched")
        if serial:
            bastion.notify_change(serial)
    finally:
        bastion.close()
    out.print(f"matches: +{added} -{removed} across {len(projects)} project(s)")
