"""``bastion review ...`` and ``bastion names ...``: the review queue and the name rules, for the
operator (who holds the data dir and acts as an index admin)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from bastion.authz import OPERATOR
from bastion.cli import _fail, _open, _run, _send_now, data_dir_option, err, out
from bastion.errors import ServiceError
from bastion.scanning import review


def _apply(data_dir: str | None, action: Callable[[Any, Any], review.Outcome]) -> review.Outcome:
    """Run ``action(session, bastion)`` in one write transaction and finish its outcome after
    commit (blobs, change marker, notices sent at once); report ServiceErrors cleanly."""
    bastion = _open(data_dir)
    try:
        with bastion.db.write() as session:
            outcome = action(session, bastion)
        review.finish(bastion, outcome, send=lambda messages: _send_now(bastion, messages))
        return outcome
    except ServiceError as exc:
        _fail(exc.message)
        raise  # unreachable: _fail exits
    finally:
        bastion.close()


def _decide(data_dir: str | None, case_id: int, action: str, note: str) -> None:
    outcome = _apply(data_dir, lambda session, bastion: review.decide_case(session, bastion, case_id, action,
                                                                           OPERATOR, note))
    out.print(f"case #{case_id}: {escape(outcome.summary)}", highlight=False)


@click.group("review")
def review_group() -> None:
    """The review queue: uploads the scanner held, reported projects, flagged names."""


@review_group.command("list")
@click.option("--state", type=click.Choice(["open", "decided", "all"]), default="open", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per case.")
@data_dir_option
def review_list(state: str, as_json: bool, data_dir: str | None) -> None:
    """List review cases (open ones oldest first)."""
    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:
            cases = review.list_cases(session, OPERATOR, state=state)
    except ServiceError as exc:
        _fail(exc.message)
    finally:
        bastion.close()
    if as_json:
        for case in cases:
            click.echo(json.dumps(_case_json(case)))
        return
    if not cases:
        out.print(f"no {state} cases" if state != "all" else "no cases")
        return
    table = Table("case", "project", "file", "source", "state", "score", "opened", "summary")
    for case in cases:
        table.add_row(f"#{case.id}", escape(case.project_name), escape(case.filename or "(project)"), case.source,
                      case.state + (" · hidden" if case.hidden and case.state == "open" else ""),
                      "" if case.score is None else f"{case.score:.1f}", case.opened.strftime("%Y-%m-%d %H:%M"),
                      escape(case.summary[:80]))
    out.print(table)


def _case_json(case: Any) -> dict[str, Any]:
    return {"id": case.id, "kind": case.kind, "source": case.source, "state": case.state, "hidden": case.hidden,
            "project": case.project_name, "file": case.filename, "summary": case.summary, "score": case.score,
            "reports": case.reports, "opened": case.opened.isoformat(),
            "decided": case.decided.isoformat() if case.decided else None, "decided_by": case.decided_by,
            "note": case.decision_note}


@review_group.command("show")
@click.argument("case_id", type=int)
@data_dir_option
def review_show(case_id: int, data_dir: str | None) -> None:
    """A case with its findings (rule, file:line, excerpt, why) and reports."""
    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:
            details = review.case_details(session, OPERATOR, case_id)
    except ServiceError as exc:
        _fail(exc.message)
    finally:
        bastion.close()
    case = details.case
    out.print(f"[bold]case #{case.id}[/]: {escape(case.kind)} {escape(case.filename or case.project_name)} "
              f"({case.source}, {case.state})", highlight=False)
    out.print(f"  {escape(case.summary)}", highlight=False)
    if details.findings:
        table = Table("severity", "rule", "where", "excerpt", "why")
        for f in details.findings:
            table.add_row(f"{f.severity:.1f}", escape(f.rule), escape(f"{f.file}{f':{f.line}' if f.line else ''}"),
                          escape(f.excerpt), escape(f.why))
        out.print(table)
    for report in details.reports:
        out.print(f"  report by {escape(report.reporter)}{' (trusted)' if report.trusted else ''}: "
                  f"{escape(report.reason)}", highlight=False)


def _decision_command(action: str, doc: str) -> None:
    @review_group.command(action, help=doc)
    @click.argument("case_id", type=int)
    @click.option("--note", default="", help="Why (kept on record, shown to the maintainers).")
    @data_dir_option
    def command(case_id: int, note: str, data_dir: str | None) -> None:
        _decide(data_dir, case_id, action, note)


_decision_command("release", "Publish what the case holds, as if just uploaded.")
_decision_command("remove", "Delete the held file (or the project of a project case).")
_decision_command("remove-project", "Delete the whole project and freeze its owners' and maintainers' accounts.")
_decision_command("dismiss", "Close a case that hid nothing (a rescan hit or report that did not hold up).")


@review_group.command("quarantine")
@click.argument("project_name", metavar="PROJECT")
@click.option("--reason", required=True, help="Why (kept on record, sent to the maintainers).")
@data_dir_option
def review_quarantine(project_name: str, reason: str, data_dir: str | None) -> None:
    """Hide a whole project at once (PEP 792 quarantined) and open a case for it."""
    from bastion.packaging.service import get_project

    def quarantine(session: Any, bastion: Any) -> review.Outcome:
        review.require_reviewer(OPERATOR)
        return review.quarantine_project(session, bastion, get_project(session, project_name), source="admin",
                                         summary=reason, principal=OPERATOR, context=review.CLI_CONTEXT)

    out.print(escape(_apply(data_dir, quarantine).summary), highlight=False)


@review_group.command("trust")
@click.argument("user_name", metavar="USER")
@click.option("--off", is_flag=True, help="Take the trusted-reporter role away.")
@data_dir_option
def review_trust(user_name: str, off: bool, data_dir: str | None) -> None:
    """Make USER a trusted reporter: their reports can quarantine a project on their own."""
    _run(data_dir, lambda session, bastion: review.set_trusted_reporter(session, bastion, user_name, not off,
                                                                        OPERATOR))
    out.print(f"{escape(user_name)} is {'no longer ' if off else ''}a trusted reporter", highlight=False)


@click.group("names")
def names_group() -> None:
    """Project-name rules: the ban list, exceptions to the typosquat check, and the check itself."""


def _name_rule(data_dir: str | None, name: str, rule: str | None, reason: str) -> None:
    _run(data_dir, lambda session, bastion: review.set_name_rule(session, bastion, name, rule, OPERATOR, reason))


@names_group.command("ban")
@click.argument("name")
@click.option("--reason", default="", help="Kept on record.")
@data_dir_option
def names_ban(name: str, reason: str, data_dir: str | None) -> None:
    """Nobody may register NAME (in any spelling PEP 503 folds together)."""
    _name_rule(data_dir, name, "ban", reason)
    out.print(f"banned: {escape(name)}", highlight=False)


@names_group.command("allow")
@click.argument("name")
@click.option("--reason", default="", help="Kept on record.")
@data_dir_option
def names_allow(name: str, reason: str, data_dir: str | None) -> None:
    """Let NAME be registered although it resembles another project (an exception)."""
    _name_rule(data_dir, name, "allow", reason)
    out.print(f"allowed: {escape(name)}", highlight=False)


@names_group.command("clear")
@click.argument("name")
@data_dir_option
def names_clear(name: str, data_dir: str | None) -> None:
    """Remove the ban or exception of NAME."""
    _name_rule(data_dir, name, None, "")
    out.print(f"no rule for {escape(name)} any more", highlight=False)


@names_group.command("list")
@data_dir_option
def names_list(data_dir: str | None) -> None:
    """Every ban and exception."""
    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:
            rules = review.list_name_rules(session)
            rows = [(r.normalized_name, r.rule, r.reason, r.created_by or "") for r in rules]
    finally:
        bastion.close()
    table = Table("name", "rule", "reason", "by")
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row))
    out.print(table if rows else "no name rules")


@names_group.command("check")
@click.argument("names", nargs=-1, required=True)
@data_dir_option
def names_check(names: tuple[str, ...], data_dir: str | None) -> None:
    """Would NAME be refused as a new project? Exit 1 if any would."""
    from bastion.packaging.service import new_project_refusal
    from bastion.scanning.service import banned_names

    bastion = _open(data_dir)
    refused = 0
    try:
        with bastion.db.read() as session:
            for name in names:
                prohibited = frozenset(bastion.settings.prohibited_names) | banned_names(session, name)
                refusal = new_project_refusal(session, name, prohibited)
                resemblance = None if refusal else bastion.name_guard.check(session, name)
                if refusal or resemblance:
                    refused += 1
                    out.print(f"{escape(name)}: {escape(refusal or resemblance.message(name))}",  # type: ignore[union-attr]
                              soft_wrap=True,
                              highlight=False)
                else:
                    out.print(f"{escape(name)}: ok", highlight=False)
    finally:
        bastion.close()
    if refused:
        err.print(f"{refused} of {len(names)} names would be refused or flagged")
        raise SystemExit(1)
