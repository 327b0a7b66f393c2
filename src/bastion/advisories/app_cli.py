"""``bastion app register|list|show|remove``: registered applications, for the operator (who holds
the data dir and acts as an index admin)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from bastion.advisories import applications as service
from bastion.advisories.audit import printable
from bastion.authz import OPERATOR
from bastion.cli import _run, data_dir_option, err, out


@click.group("app")
def app_group() -> None:
    """Registered applications: their dependency lists and the advisories that affect them."""


def _text(value: str) -> str:
    """Advisory text (from a public database) as plain terminal text: no markup, no control characters."""
    return escape(printable(value))


def _findings_table(detail: service.ApplicationDetail) -> Table:
    table = Table("package", "version", "advisory", "aliases", "fixed in", "summary", title="Vulnerable packages")
    for finding in detail.findings:
        table.add_row(escape(finding.name), escape(finding.version) + ("" if finding.direct else " (transitive)"),
                      _text(finding.advisory.id), _text(", ".join(finding.advisory.aliases)),
                      _text(", ".join(finding.advisory.fixed_in) or "-"), _text(finding.advisory.summary or ""))
    return table


def _counts(detail: service.ApplicationDetail) -> str:
    summary = detail.summary
    return (f"{summary.direct} direct and {summary.transitive} transitive package(s), "
            f"{len({f.name for f in detail.findings})} vulnerable")


@app_group.command("register")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--owner", required=True, help="The user who owns the application (and gets its alerts).")
@click.option("--format", "fmt", type=click.Choice(service.FORMATS), default=None,
              help="The list's format (default: from the file name, then the content).")
@click.option("--webhook", default=None, help="https URL called (signed) on a new advisory; '' removes it.")
@click.option("--email", default=None, help="Where alert mail goes (default: the owner's address); '' resets.")
@click.option("--rotate-secret", is_flag=True, help="Make a new webhook secret (printed once).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@data_dir_option
def register_command(name: str, file: Path, owner: str, fmt: str | None, webhook: str | None, email: str | None,
                     rotate_secret: bool, as_json: bool, data_dir: str | None) -> None:
    """Register (or replace) application NAME's dependency list from FILE: a requirements file,
    a pylock.toml, or a CycloneDX JSON SBOM."""
    content = file.read_bytes()
    detail: service.ApplicationDetail = _run(data_dir, lambda session, bastion: service.register(
        session, bastion, name, content, principal=OPERATOR, fmt=fmt, filename=str(file), owner=owner,
        webhook_url=webhook, contact_email=email, rotate_secret=rotate_secret))
    if as_json:
        click.echo(json.dumps(detail.as_json(), indent=2))
    else:
        out.print(f"{'registered' if detail.created else 'updated'} {escape(name)} "
                  f"({detail.summary.format}): {_counts(detail)}", highlight=False)
        for note in detail.notes:
            err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
        if detail.findings:
            out.print(_findings_table(detail))
        if detail.webhook_secret:
            out.print(f"webhook secret (shown once; the receiver checks X-Bastion-Signature with it):\n"
                      f"{detail.webhook_secret}", highlight=False, soft_wrap=True)


@app_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@data_dir_option
def list_command(as_json: bool, data_dir: str | None) -> None:
    """List registered applications."""
    rows: list[service.ApplicationSummary] = _run(
        data_dir, lambda session, bastion: service.list_applications(session, principal=OPERATOR))
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    if not rows:
        out.print("no applications registered (bastion app register NAME FILE --owner USER)")
        return
    table = Table("name", "owner", "format", "direct", "transitive", "webhook", "updated")
    for row in rows:
        table.add_row(escape(row.name), escape(row.owner or "(deleted)"), row.format, str(row.direct),
                      str(row.transitive), "yes" if row.webhook_url else "-", row.updated.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@app_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@data_dir_option
def show_command(name: str, as_json: bool, data_dir: str | None) -> None:
    """Show application NAME's packages and the advisories affecting them; exit 1 when vulnerable."""
    detail: service.ApplicationDetail = _run(
        data_dir, lambda session, bastion: service.show(session, name, principal=OPERATOR))
    if as_json:
        click.echo(json.dumps(detail.as_json(), indent=2))
    else:
        summary = detail.summary
        out.print(f"{escape(name)} (owner {escape(summary.owner or '(deleted)')}, {summary.format}): "
                  f"{_counts(detail)}", highlight=False)
        vulnerable = {f.name for f in detail.findings}
        table = Table("package", "version", "specifier", "kind", "status")
        for package in detail.packages:
            version = package.version or "-"
            if package.name not in detail.in_index:
                version += " (not in this index)"
            table.add_row(escape(package.name), escape(version),
                          escape(package.specifier), "direct" if package.direct else "transitive",
                          "[red]vulnerable[/]" if package.name in vulnerable else "ok")
        out.print(table)
        if detail.findings:
            out.print(_findings_table(detail))
    if detail.vulnerable:
        sys.exit(1)


@app_group.command("remove")
@click.argument("name")
@data_dir_option
def remove_command(name: str, data_dir: str | None) -> None:
    """Remove application NAME (its list, its alerts and its webhook secret)."""
    _run(data_dir, lambda session, bastion: service.remove(session, bastion, name, principal=OPERATOR))
    out.print(f"removed {escape(name)}", highlight=False)
