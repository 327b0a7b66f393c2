"""The ``bastion`` command: serve, and the operator's account and project commands.

Every operator command takes ``--data-dir`` (default ``./bastion-data`` or ``BASTION_DATA_DIR``),
works while the server runs (it writes the same database and signals the change), prints errors
to stderr and exits non-zero on failure. The TUF client commands (``verify-proxy``, ``download``)
take ``--index`` instead: they talk to an index over HTTP.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.authz import OPERATOR
from bastion.errors import ServiceError
from bastion.settings import SettingsError, load_settings, parse_duration

err = Console(stderr=True, soft_wrap=True)  # messages unbroken: paths and commands stay copyable
out = Console()

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default: $BASTION_DATA_DIR or ./bastion-data).",
)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    sys.exit(code)


def _open(data_dir: str | None):  # type: ignore[no-untyped-def]
    from bastion.services import Bastion

    try:
        return Bastion(load_settings(data_dir))
    except SettingsError as exc:
        _fail(str(exc), 2)
    except Exception as exc:  # database unreachable, unwritable data dir... (as `serve` reports them)
        _fail(f"cannot open the data dir or database: {exc}", 2)


def _run(data_dir: str | None, action: Callable[[Any, Any], Any]) -> Any:
    """Run ``action(session, bastion)`` in one write transaction; report ServiceErrors cleanly."""
    bastion = _open(data_dir)
    try:
        with bastion.db.write() as session:
            result = action(session, bastion)
        if isinstance(result, int) and not isinstance(result, bool):
            bastion.notify_change(result)
        return result
    except ServiceError as exc:
        _fail(exc.message)
    finally:
        bastion.close()


class LazyGroup(click.Group):
    """A group whose subcommands named in ``lazy`` ("module:attribute") are imported when used:
    ``bastion audit`` does not pay for importing every other command's domain (about 1 s)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bastion-index")
def main() -> None:
    """Bastion: a self-hostable Python package index built for supply-chain security."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="Worker processes (default 1).")
@data_dir_option
def serve(host: str, port: int, workers: int | None, data_dir: str | None) -> None:
    """Start the index; the data dir is created and migrated on first start."""
    import uvicorn

    from bastion.db import migrate
    from bastion.settings import ensure_data_dir

    try:
        settings = load_settings(data_dir, workers=workers)
        ensure_data_dir(settings)
        migrate(settings.effective_database_url)
    except SettingsError as exc:
        _fail(str(exc), 2)
    except Exception as exc:  # database unreachable, unwritable data dir...
        _fail(f"cannot prepare the data dir or database: {exc}", 2)
    _prepare_tuf(settings)
    os.environ["BASTION_DATA_DIR"] = str(settings.data_dir)
    if settings.workers > 1 and settings.rate_limit_storage.startswith("memory://"):
        err.print(
            f"[yellow]warning:[/] {settings.workers} workers each count failed sign-in and 2FA attempts on their "
            "own (BASTION_RATE_LIMIT_STORAGE=memory://): set it to redis://HOST:6379 to share the limits",
            highlight=False,
        )
    err.print(
        f"Bastion serving http://{host}:{port}/simple/  (data dir {settings.data_dir.resolve()}, "
        f"database {settings.effective_database_url.split('@')[-1]})",
        highlight=False,
    )
    uvicorn.run(
        "bastion.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=settings.workers,
        http="bastion.server:ReasonPhraseProtocol",
        loop="uvloop",
        lifespan="on",  # starts the background tasks: mail, download counts, critical projects
        access_log=False,
        server_header=False,
        log_level="warning",
    )


def _prepare_tuf(settings: Any) -> None:
    """Open (or create, with a development key set) the TUF repository and check the online
    signer before serving: a server whose signing is configured but broken does not start."""
    from bastion.services import Bastion
    from bastion.tuf.keys import TufError
    from bastion.tuf.service import DEVELOPMENT_WARNING, prepare

    bastion = Bastion(settings, run_migrations=False)
    try:
        signer = prepare(bastion, announce=False)
        if signer is not None:
            with bastion.db.read() as session:
                from bastion.tuf.repository import repository_row

                repo = repository_row(session)
                development = bool(repo and repo.development_keys)
            if development:
                err.print(f"[bold yellow]warning:[/] {escape(DEVELOPMENT_WARNING.format(keys=settings.tuf_keys_dir))}",
                          highlight=False)
    except TufError as exc:
        _fail(f"TUF signing is configured but cannot work: {exc}", 2)
    finally:
        bastion.db.dispose()


@main.group()
def user() -> None:
    """Manage user accounts."""


@user.command("create")
@click.argument("name")
@click.option("--email", required=True, help="The user's email address.")
@data_dir_option
def user_create(name: str, email: str, data_dir: str | None) -> None:
    """Create a user; the password is read from stdin (or prompted for on a terminal)."""
    from bastion.accounts import service

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    _run(data_dir, lambda s, b: service.create_user(s, name, email, password, principal=OPERATOR, secret=b.secret))
    out.print(f"created user {name}", highlight=False)


@user.command("set-admin")
@click.argument("name")
@data_dir_option
def user_set_admin(name: str, data_dir: str | None) -> None:
    """Make NAME an index admin."""
    from bastion.accounts import service

    _run(data_dir, lambda s, b: service.set_admin(s, name, principal=OPERATOR, secret=b.secret))
    out.print(f"{name} is now an index admin", highlight=False)


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.option("--user", "user_name", required=True, help="The user the token acts as.")
@click.option("--project", "projects", multiple=True, help="Limit the token to this project (repeatable).")
@click.option("--expires", default=None, help="Lifetime, e.g. 30d, 12h, or 'never' (default from settings: 90d).")
@click.option("--description", default="", help="A note to recognise the token by.")
@data_dir_option
def token_create(user_name: str, projects: tuple[str, ...], expires: str | None, description: str,
                 data_dir: str | None) -> None:
    """Create an API token and print it once (it is not stored and cannot be shown again)."""
    from bastion.accounts import service

    try:
        settings = load_settings(data_dir)
        if expires is None:
            expires_in = settings.token_expiry
        elif expires.strip().lower() == "never":
            expires_in = None
        else:
            expires_in = parse_duration(expires, what="--expires")
    except SettingsError as exc:
        _fail(str(exc), 2)
    new = _run(data_dir, lambda s, b: service.create_token(
        s, b.secret, user_name, projects=list(projects) or None, expires_in=expires_in,
        description=description, principal=OPERATOR))
    scope = ", ".join(new.projects) if new.projects else "all projects of the user"
    when = new.expires.strftime("%Y-%m-%d %H:%M UTC") if new.expires else "never"
    err.print(f"token {new.token_id} for {user_name}: scope {scope}; expires {when}", highlight=False)
    click.echo(new.token)


@token.command("list")
@click.option("--user", "user_name", required=True)
@data_dir_option
def token_list(user_name: str, data_dir: str | None) -> None:
    """List a user's tokens (never the secrets)."""
    from bastion.accounts import service

    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:
            rows = service.list_tokens(session, user_name, principal=OPERATOR)
    except ServiceError as exc:
        _fail(exc.message)
    table = Table("id", "projects", "created", "expires", "last used", "revoked")
    for r in rows:
        table.add_row(r.id, ", ".join(r.projects) if r.projects else "(all)", f"{r.created:%Y-%m-%d}",
                      f"{r.expires:%Y-%m-%d}" if r.expires else "never",
                      f"{r.last_used:%Y-%m-%d %H:%M}" if r.last_used else "-",
                      f"{r.revoked:%Y-%m-%d %H:%M}" if r.revoked else "-")
    # Never shortened to the terminal's (or a pipe's 80) columns: `token revoke` needs the whole id.
    Console(width=max(out.width, 200)).print(table)


@token.command("revoke")
@click.argument("token_id")
@data_dir_option
def token_revoke(token_id: str, data_dir: str | None) -> None:
    """Revoke a token at once."""
    from bastion.accounts import service

    _run(data_dir, lambda s, b: service.revoke_token(s, token_id, principal=OPERATOR, secret=b.secret))
    out.print(f"revoked {token_id}", highlight=False)


@main.group(cls=LazyGroup)
def project() -> None:
    """Manage projects."""


def _send_now(bastion: Any, messages: list[Any]) -> None:
    """Send notices synchronously (the CLI runs no background worker); a failure is reported, and
    does not undo the change already committed."""
    from bastion.mail import MailError

    for message in messages:
        try:
            bastion.mailer.send(message)
        except MailError as exc:
            err.print(f"[yellow]warning:[/] notice to {escape(', '.join(message.to))} not sent: {escape(str(exc))}",
                      highlight=False)


def _run_and_notify(data_dir: str | None, action: Callable[[Any, Any], tuple[Any, list[Any]]]) -> Any:
    """Like ``_run``, for an action returning (result, notices): the notices are sent after commit."""
    bastion = _open(data_dir)
    try:
        with bastion.db.write() as session:
            result, messages = action(session, bastion)
        if isinstance(result, int) and not isinstance(result, bool):
            bastion.notify_change(result)
        _send_now(bastion, messages)
        return result
    except ServiceError as exc:
        _fail(exc.message)
    finally:
        bastion.close()


@project.command("add-role")
@click.argument("project_name", metavar="PROJECT")
@click.argument("user_name", metavar="USER")
@click.argument("role", type=click.Choice(["owner", "maintainer"]))
@data_dir_option
def project_add_role(project_name: str, user_name: str, role: str, data_dir: str | None) -> None:
    """Give USER the role owner or maintainer on PROJECT (its people are notified)."""
    from bastion.packaging import service

    def action(s, b):  # type: ignore[no-untyped-def]
        serial = service.add_role(s, project_name, user_name, role, principal=OPERATOR, secret=b.secret)
        return serial, service.role_notifications(s, project_name, OPERATOR.username, user_name, role, granted=True)

    _run_and_notify(data_dir, action)
    out.print(f"{user_name} is now {role} of {project_name}", highlight=False)


@project.command("remove-role")
@click.argument("project_name", metavar="PROJECT")
@click.argument("user_name", metavar="USER")
@data_dir_option
def project_remove_role(project_name: str, user_name: str, data_dir: str | None) -> None:
    """Remove USER's role on PROJECT (its people and USER are notified)."""
    from bastion.packaging import service

    def action(s, b):  # type: ignore[no-untyped-def]
        role = service.role_of_user(s, project_name, user_name)
        serial = service.remove_role(s, project_name, user_name, principal=OPERATOR, secret=b.secret)
        return serial, service.role_notifications(s, project_name, OPERATOR.username, user_name, role or "",
                                                  granted=False)

    _run_and_notify(data_dir, action)
    out.print(f"removed {user_name} from {project_name}", highlight=False)


@project.command("yank")
@click.argument("project_name", metavar="PROJECT")
@click.argument("version")
@click.option("--reason", default=None, help="Shown to installers (PEP 592).")
@click.option("--undo", is_flag=True, help="Un-yank the release instead.")
@data_dir_option
def project_yank(project_name: str, version: str, reason: str | None, undo: bool, data_dir: str | None) -> None:
    """Yank a release: pip skips it unless pinned exactly; files stay downloadable."""
    from bastion.packaging import service

    _run(data_dir, lambda s, b: service.set_yanked(s, project_name, version, yanked=not undo, reason=reason,
                                                   principal=OPERATOR, secret=b.secret))
    out.print(f"{'un-yanked' if undo else 'yanked'} {project_name} {version}", highlight=False)


@project.command("delete")
@click.argument("project_name", metavar="PROJECT")
@click.option("--yes", is_flag=True, help="Confirm: delete every release and file of PROJECT for good.")
@data_dir_option
def project_delete(project_name: str, yes: bool, data_dir: str | None) -> None:
    """Delete PROJECT: releases, files, roles, pages. Its filenames can never be uploaded again; the
    name can be registered anew."""
    from bastion.packaging import service

    if not yes:
        _fail(f"this deletes {project_name} with every release and file, for good: "
              f"run `bastion project delete {project_name} --yes` to confirm", 2)
    bastion = _open(data_dir)
    try:
        with bastion.db.write() as session:
            deletion = service.delete_project(session, bastion, project_name, principal=OPERATOR)
        failed = service.delete_blobs(bastion, deletion.blob_paths)  # after commit
        bastion.notify_change(deletion.serial)
    except ServiceError as exc:
        _fail(exc.message)
    finally:
        bastion.close()
    out.print(f"deleted {deletion.name}: {len(deletion.releases)} releases, {len(deletion.filenames)} files",
              highlight=False)
    if failed:
        _fail(f"{len(failed)} blobs could not be removed from the blob store (see the log): {', '.join(failed[:5])}")


@project.command("require-2fa")
@click.argument("project_name", metavar="PROJECT")
@click.option("--off", is_flag=True, help="Stop requiring it (the index policy may still require it).")
@data_dir_option
def project_require_2fa(project_name: str, off: bool, data_dir: str | None) -> None:
    """Require two-factor authentication of every owner and maintainer of PROJECT."""
    from bastion.packaging import service

    blocked = _run(data_dir, lambda s, b: service.set_project_mfa_required(
        s, project_name, not off, principal=OPERATOR, secret=b.secret))
    if off:
        out.print(f"{project_name} no longer requires 2FA of its owners and maintainers", highlight=False)
        return
    out.print(f"{project_name} now requires 2FA of its owners and maintainers", highlight=False)
    if blocked:
        err.print(f"without 2FA, refused until they enable it: {', '.join(blocked)}", highlight=False)


@main.group()
def events() -> None:
    """The hash-chained audit log (its events: who did what, when)."""


@events.command("verify")
@click.option("--anchor", default=None, metavar="ID:HASH",
              help="An event id and hash noted earlier (bastion events head): also catches removal of the newest events.")
@data_dir_option
def events_verify(anchor: str | None, data_dir: str | None) -> None:
    """Recompute the audit chain; exit 1 naming the first event altered or removed."""
    from bastion.events import verify_chain

    anchored: tuple[int, str] | None = None
    if anchor is not None:
        ident, sep, digest = anchor.partition(":")
        if not sep or not ident.isdigit() or len(digest) != 64:
            _fail(f"invalid --anchor {anchor!r}: use ID:HASH as printed by `bastion events head`", 2)
        anchored = (int(ident), digest)

    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:  # a read transaction: uploads go on meanwhile
            report = verify_chain(session, anchor=anchored)
    finally:
        bastion.close()
    if report.ok:
        click.echo(f"audit chain verified: {report.checked} events, head {report.head_id}:{report.head_hash}")
        return
    _fail(f"audit chain broken at event {report.first_problem_id}: {report.problem}", 1)


@events.command("head")
@data_dir_option
def events_head(data_dir: str | None) -> None:
    """Print the newest event's ID:HASH, to keep somewhere else as an anchor."""
    from sqlalchemy import select

    from bastion.events import Event

    def action(session, bastion):  # type: ignore[no-untyped-def]
        return session.execute(select(Event.id, Event.hash).order_by(Event.id.desc()).limit(1)).first()

    row = _run(data_dir, action)
    if row is None:
        _fail("the audit log is empty", 1)
    click.echo(f"{row[0]}:{row[1]}")


@main.group()
def policy() -> None:
    """Index-wide policy (the 2FA mandate)."""


@policy.command("show")
@data_dir_option
def policy_show(data_dir: str | None) -> None:
    """Print the 2FA policy in force."""
    from bastion.accounts.policy import default_mfa_policy, mfa_policy

    def action(session, bastion):  # type: ignore[no-untyped-def]
        return mfa_policy(session), default_mfa_policy(session)

    current, default = _run(data_dir, action)
    click.echo(f"mfa: {current} (configured default: {default})")


@policy.command("set")
@click.argument("value", type=click.Choice(["off", "critical", "all-uploaders", "everyone", "default"]))
@data_dir_option
def policy_set(value: str, data_dir: str | None) -> None:
    """Set the 2FA policy: off, critical, all-uploaders, everyone; 'default' returns to the setting."""
    from bastion.accounts.policy import set_mfa_policy

    def action(session, bastion):  # type: ignore[no-untyped-def]
        return set_mfa_policy(session, None if value == "default" else value, principal=OPERATOR,
                              secret=bastion.secret)

    click.echo(f"mfa policy now: {_run(data_dir, action)}")


@main.group()
def insights() -> None:
    """Download insights: critical projects and the 2FA figures."""


@insights.command("recompute")
@data_dir_option
def insights_recompute(data_dir: str | None) -> None:
    """Mark critical projects and take today's 2FA snapshot now (what the server does daily).

    Ranks the download counts already in the database: a running server writes the counts it
    buffers every BASTION_DOWNLOAD_FLUSH_INTERVAL.
    """
    from datetime import UTC

    from bastion.db import utcnow
    from bastion.insights.critical import recompute_critical
    from bastion.insights.mfa_stats import take_snapshot

    def action(session, bastion):  # type: ignore[no-untyped-def]
        now = utcnow()
        marked = recompute_critical(session, percent=bastion.settings.critical_percent,
                                    window=bastion.settings.duration("critical_window"), now=now,
                                    secret=bastion.secret)
        take_snapshot(session, now.astimezone(UTC).date())
        return marked

    marked = _run(data_dir, action)
    click.echo(f"newly critical: {', '.join(marked)}" if marked else "no project newly critical")


def _register_commands() -> None:
    """Commands that live with the domain they operate on, imported when used."""
    assert isinstance(main, LazyGroup) and isinstance(project, LazyGroup)
    main.lazy.update({
        "tuf": "bastion.tuf.cli:tuf",
        "review": "bastion.scanning.admin_cli:review_group",
        "names": "bastion.scanning.admin_cli:names_group",
        "verify-proxy": "bastion.tuf.client.cli:verify_proxy",
        "download": "bastion.tuf.client.cli:download",
        "scan": "bastion.scanning.cli:scan_command",
        "advisories": "bastion.advisories.cli:advisories_group",
        "audit": "bastion.advisories.audit_cli:audit_command",
        "app": "bastion.advisories.app_cli:app_group",
        "import": "bastion.packaging.import_cli:import_command",
    })
    project.lazy["security"] = "bastion.insights.security_cli:project_security"


_register_commands()


if __name__ == "__main__":
    main()
