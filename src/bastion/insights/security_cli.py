"""``bastion project security PROJECT``: a project's security commitments, and the owners'
declarations made by the operator (who holds the data dir and acts as an index admin).

Without an option it prints the seven commitments (``--json``: the page's JSON twin). With
``--contact``, ``--clear-contact``, ``--confirm-roles``, ``--reaffirm`` or ``--codehost-2fa yes|no``
it records those declarations, in one transaction, each with its audit event.
"""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from bastion.advisories.audit import printable
from bastion.authz import OPERATOR
from bastion.cli import _fail, _open, _run, data_dir_option, out
from bastion.errors import ServiceError
from bastion.insights import commitments

STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "unknown": "dim"}


@click.command("security")
@click.argument("project_name", metavar="PROJECT")
@click.option("--contact", default=None, metavar="EMAIL|URL",
              help="Set the security contact: an email address or the https:// URL of the security policy.")
@click.option("--clear-contact", is_flag=True, help="Remove the security contact.")
@click.option("--confirm-roles", is_flag=True, help="Confirm the list of owners and maintainers now.")
@click.option("--reaffirm", is_flag=True, help="Reaffirm now that the project is maintained.")
@click.option("--codehost-2fa", "codehost", type=click.Choice(["yes", "no"]), default=None,
              help="Report (yes) or withdraw (no) that the code host requires 2FA of every committer.")
@click.option("--json", "as_json", is_flag=True, help="Print the security report as JSON (no declaration).")
@data_dir_option
def project_security(project_name: str, contact: str | None, clear_contact: bool, confirm_roles: bool,
                     reaffirm: bool, codehost: str | None, as_json: bool, data_dir: str | None) -> None:
    """Show PROJECT's security commitments, or record the owners' declarations."""
    declarations = []
    if contact is not None and clear_contact:
        _fail("--contact and --clear-contact contradict each other: use one of them", 2)
    if contact is not None:
        declarations.append(commitments.Declaration("contact", contact))
    if clear_contact:
        declarations.append(commitments.Declaration("clear-contact"))
    if confirm_roles:
        declarations.append(commitments.Declaration("confirm-roles"))
    if reaffirm:
        declarations.append(commitments.Declaration("reaffirm"))
    if codehost is not None:
        declarations.append(commitments.Declaration("codehost-2fa" if codehost == "yes" else "codehost-2fa-withdraw"))
    if declarations and as_json:
        _fail("--json prints the report: run it without declarations", 2)
    if declarations:
        done = _run(data_dir, lambda session, bastion: commitments.declare(
            session, project_name, declarations, principal=OPERATOR, secret=bastion.secret))
        for line in done:
            out.print(escape(line), highlight=False)
        return
    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:
            report = commitments.project_report(session, project_name)
    except ServiceError as exc:
        _fail(exc.message)
        raise  # unreachable: _fail exits
    finally:
        bastion.close()
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        return
    if report.quarantined:
        out.print(f"{escape(report.name)} is quarantined pending review: no security report until the review ends",
                  highlight=False)
        return
    table = Table(title=f"{report.name} {report.latest_version or '(no release)'}: security commitments")
    table.add_column("#", justify="right")
    table.add_column("Commitment")
    table.add_column("Status")
    table.add_column("Evidence")
    for item in report.commitments:
        style = STATUS_STYLE[item.status]
        table.add_row(str(item.number), escape(item.title), f"[{style}]{item.status}[/]",
                      escape(printable("\n".join(item.evidence))))
    out.print(table)
    open_ids = [v.id for v in report.vulnerabilities if v.open_on_latest]
    if open_ids:
        out.print(f"open advisories on {report.latest_version}: {escape(', '.join(open_ids))}", highlight=False)
