"""Security notifications: functions that build the messages, one per recipient; nothing is sent here.

Callers commit first, then hand the messages to ``Bastion.send_mail`` (which queues the sending).
Each message goes to one recipient, so that co-maintainers' addresses are not disclosed to each
other. Every body says what happened, when (UTC), who did it, and what to do if it was unexpected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from bastion.accounts.models import User
from bastion.db import utcnow
from bastion.mail.interface import Message
from bastion.packaging.models import Project, Role, RoleName

if TYPE_CHECKING:
    from bastion.advisories.query import AdvisoryView

SUBJECT_PREFIX = "[Bastion] "

PROJECT_ROLES = (RoleName.OWNER.value, RoleName.MAINTAINER.value)

SIGN_OFF = "\n\n-- \nThis is an automatic security notice from your Bastion package index.\n"


def _when(when: datetime | None) -> str:
    return (when or utcnow()).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(text: str) -> str:
    """Text from users (names, descriptions) on one line: it goes into subjects and indented lists."""
    return " ".join(str(text).split())


def _message(to: str, subject: str, body: str) -> Message:
    return Message(to=(to,), subject=SUBJECT_PREFIX + _one_line(subject), body=body.rstrip() + SIGN_OFF)


def _key(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True)
class Person:
    """Who a notice goes to."""

    id: int
    username: str
    email: str


_users = cast(Table, User.__table__)
_roles = cast(Table, Role.__table__)
_PEOPLE = (
    select(_users.c.id, _users.c.username, _users.c.email, _roles.c.project_id)
    .join(_roles, _roles.c.user_id == _users.c.id)
    .where(_roles.c.project_id.in_(bindparam("ids", expanding=True)), _roles.c.role.in_(PROJECT_ROLES),
           _users.c.is_active.is_(True))
    .order_by(_users.c.id, _roles.c.project_id)
)


def _project_people(session: Session, project_ids: Iterable[int]) -> dict[str, tuple[Person, list[int]]]:
    """Active owners and maintainers of the projects, one entry per email address: (a user with that
    address, the ids of the projects among ``project_ids`` on which someone with that address has a
    role). One prepared statement: every upload asks."""
    ids = sorted(set(project_ids))
    people: dict[str, tuple[Person, list[int]]] = {}
    if not ids:
        return people
    for user_id, username, email, project_id in session.execute(_PEOPLE, {"ids": ids}):
        if not email.strip():
            continue
        entry = people.setdefault(_key(email), (Person(user_id, username, email), []))
        if project_id not in entry[1]:
            entry[1].append(project_id)
    return people


def _project_names(session: Session, project_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(project_ids))
    if not ids:
        return {}
    return {project_id: name for project_id, name in session.execute(_NAMES, {"ids": ids})}


_projects = cast(Table, Project.__table__)
_NAMES = select(_projects.c.id, _projects.c.name).where(_projects.c.id.in_(bindparam("ids", expanding=True)))


def _user_by_name(session: Session, name: str) -> User | None:
    return session.execute(select(User).where(User.username_key == name.lower())).scalar_one_or_none()


def release_files_uploaded(
    session: Session, project_id: int, files: Sequence[tuple[str, str, datetime]], actor: str
) -> list[Message]:
    """To every owner and maintainer of the project: ``actor`` uploaded ``files`` ((filename,
    version, when) each, in upload order). One message per person for all of them: a release's
    wheels arrive together, and one notice per file would bury the one that matters."""
    if not files:
        return []
    project = _project_names(session, [project_id]).get(project_id, f"#{project_id}")
    versions = list(dict.fromkeys(version for _, version, _ in files))
    if len(files) == 1:
        filename, version, at = files[0]
        subject = f"{filename} uploaded to {project} {version}"
        listing = f"""  Project:     {project}
  Version:     {version}
  File:        {filename}
  Uploaded by: {actor}
  When:        {_when(at)}"""
        intro = f"A file was uploaded to the project {project}, on which you have a role."
    else:
        subject = f"{len(files)} files uploaded to {project} {', '.join(versions)}"
        width = max(len(version) for _, version, _ in files)
        rows = "\n".join(f"  {_when(at)}  {version:<{width}}  {filename}" for filename, version, at in files)
        listing = f"""  Project:     {project}
  Uploaded by: {actor}
  Files ({len(files)}, in the order they arrived):
{rows}"""
        intro = f"{len(files)} files were uploaded to the project {project}, on which you have a role."
    yank = versions[0] if len(versions) == 1 else "VERSION"
    messages = []
    for email, (user, _) in _project_people(session, [project_id]).items():
        body = f"""Hello {user.username},

{intro}

{listing}

If you expected this upload, there is nothing to do.

If you did not: the account or an API token of {actor} may be compromised. Yank the release
(`bastion project yank {project} {yank}`, or ask an administrator of this index), have
{actor} change their password and revoke their API tokens, and tell the other owners.
"""
        messages.append(_message(email, subject, body))
    return messages


def role_changed(
    session: Session, project_id: int, actor: str, user: str, role: str, granted: bool, *, when: datetime | None = None
) -> list[Message]:
    """To every owner and maintainer of the project (after the change) and to ``user`` itself:
    ``actor`` gave ``user`` the role ``role`` (``granted``) or took it away."""
    project = _project_names(session, [project_id]).get(project_id, f"#{project_id}")
    at = _when(when)
    people = {email: person for email, (person, _) in _project_people(session, [project_id]).items()}
    affected = _user_by_name(session, user)
    if affected is not None and affected.email.strip():
        people.setdefault(_key(affected.email), Person(affected.id, affected.username, affected.email))
    if granted:
        what = f"{actor} gave {user} the role {role} on the project {project}."
        subject = f"{user} is now {role} of {project}"
    else:
        what = f"{actor} removed the role {role} of {user} on the project {project}."
        subject = f"{user} is no longer {role} of {project}"
    messages = []
    for email, person in people.items():
        body = f"""Hello {person.username},

{what}

  Project:    {project}
  User:       {user}
  Role:       {role} ({"granted" if granted else "removed"})
  Changed by: {actor}
  When:       {at}

If you expected this change, there is nothing to do.

If you did not: the account of {actor} may be compromised. Tell the other owners of {project} and an
administrator of this index; an owner can undo the change (`bastion project add-role` /
`remove-role`), and {actor} should change their password and revoke their API tokens.
"""
        messages.append(_message(email, subject, body))
    return messages


def token_created_for_project(
    session: Session, project_ids: Iterable[int], actor: str, token_description: str, *, when: datetime | None = None
) -> list[Message]:
    """To every owner and maintainer of the projects: ``actor`` made an API token that can upload to them.
    Each recipient's message lists the projects, among these, on which they have a role."""
    ids = sorted(set(project_ids))
    names = _project_names(session, ids)
    at = _when(when)
    description = _one_line(token_description)[:200] or "(no description)"
    messages = []
    for email, (user, theirs) in _project_people(session, ids).items():
        listed = sorted(names.get(pid, f"#{pid}") for pid in theirs)
        lines = "\n".join(f"  - {name}" for name in listed)
        body = f"""Hello {user.username},

{actor} created an API token that can upload to these projects, on which you have a role:

{lines}

  Token description: {description}
  Created by:        {actor}
  When:              {at}

If you expected this, there is nothing to do.

If you did not: the account of {actor} may be compromised. Ask {actor} or an administrator of this
index to revoke the token (`bastion token list {actor}`, then `bastion token revoke ID`), and tell the
other owners.
"""
        subject = f"New API token for {listed[0]}" + (f" and {len(listed) - 1} more" if len(listed) > 1 else "")
        messages.append(_message(email, subject, body))
    return messages


def maintainer_disabled_2fa(session: Session, user_id: int, *, when: datetime | None = None) -> list[Message]:
    """To the owners and maintainers of every project ``user_id`` has a role on (the user included):
    that user no longer has two-factor authentication."""
    user = session.get(User, user_id)
    if user is None:
        return []
    project_ids = session.execute(select(Role.project_id).where(Role.user_id == user_id)).scalars().all()
    names = _project_names(session, project_ids)
    at = _when(when)
    messages = []
    for email, (person, theirs) in _project_people(session, project_ids).items():
        listed = sorted(names.get(pid, f"#{pid}") for pid in theirs)
        lines = "\n".join(f"  - {name}" for name in listed)
        you = person.id == user_id
        who = "You" if you else user.username
        if you:
            advice = "Change your password, turn two-factor authentication back on and revoke your API tokens."
        else:
            advice = (f"Tell {user.username} and an administrator of this index; an owner can remove "
                      "their role until it is resolved.")
        body = f"""Hello {person.username},

{who} turned off two-factor authentication: the account {user.username} can now sign in with a
password alone. It has a role on these projects{"" if you else ", on which you have a role too"}:

{lines}

  Account: {user.username}
  When:    {at}

If this was expected, consider turning two-factor authentication back on soon: an account that can
publish to these projects is a target.

If it was not: the account {user.username} may be compromised. {advice}
"""
        messages.append(_message(email, f"{user.username} turned off two-factor authentication", body))
    return messages


def _personal(user: User, subject: str, what: str, unexpected: str, when: datetime | None) -> list[Message]:
    if not user.email.strip():
        return []
    body = f"""Hello {user.username},

{what}

  Account: {user.username}
  When:    {_when(when)}

{unexpected}
"""
    return [_message(user.email, subject, body)]


def recovery_code_used(user: User, *, when: datetime | None = None) -> list[Message]:
    """To the user: a recovery code was used to sign in to their account."""
    return _personal(
        user,
        "A recovery code was used to sign in",
        "A recovery code was used to sign in to your account. That code cannot be used again.",
        "If it was you, check how many recovery codes you have left and make new ones if needed.\n\n"
        "If it was not you, someone has your password and a recovery code: change your password, make\n"
        "new recovery codes (the old ones stop working), revoke your API tokens, and tell an\n"
        "administrator of this index.",
        when,
    )


def verify_email(user: User, link: str, *, when: datetime | None = None) -> list[Message]:
    """To the user's address: the link that proves they own it (the body is a secret)."""
    return _personal(
        user,
        "Verify your email address",
        f"Someone asked to use this address for the Bastion account {user.username}. To confirm that\n"
        f"it is yours, open this link:\n\n  {link}\n\nDo not share this link.",
        "If you did not ask for this, ignore this message: the address will not be verified.",
        when,
    )


def password_reset(user: User, link: str, *, when: datetime | None = None) -> list[Message]:
    """To the user: the link that sets a new password (the body is a secret)."""
    return _personal(
        user,
        "Reset your password",
        f"Someone asked to reset the password of your account. To choose a new password, open this link:\n\n"
        f"  {link}\n\nIt works once. Do not share it.",
        "If you did not ask for this, ignore this message: your password stays as it is. If it keeps\n"
        "happening, tell an administrator of this index.",
        when,
    )


def password_changed(user: User, *, when: datetime | None = None) -> list[Message]:
    """To the user: their password was changed."""
    return _personal(
        user,
        "Your password was changed",
        "The password of your account was changed.",
        "If it was you, there is nothing to do.\n\n"
        "If it was not you, someone has access to your account: reset your password at once, check\n"
        "your second factors and API tokens, and tell an administrator of this index.",
        when,
    )


def held_for_review(
    session: Session, project_id: int, what: str, reasons: list[str], *, when: datetime | None = None
) -> list[Message]:
    """To every owner and maintainer: ``what`` (a file, or the whole project) is held for review,
    with the scanner's or reporters' reasons."""
    project = _project_names(session, [project_id]).get(project_id, f"#{project_id}")
    at = _when(when)
    listed = "\n".join(f"  - {_one_line(reason)}" for reason in reasons[:10]) or "  - (no detail recorded)"
    messages = []
    for email, (user, _) in _project_people(session, [project_id]).items():
        body = f"""Hello {user.username},

{what} of the project {project}, on which you have a role, is held for review by the
administrators of this index. Until they release it, it is not shown on the index and cannot be
downloaded or installed.

  Project: {project}
  When:    {at}
  Why:
{listed}

If this is a mistake (a false positive), reply to the index administrators with what the flagged
code does; they will release it. If you did not upload it, your account or an API token may be
compromised: change your password, revoke your API tokens and tell the administrators.
"""
        messages.append(_message(email, f"{project}: {what} held for review", body))
    return messages


def review_decided(
    session: Session, project_id: int, what: str, decision: str, note: str | None, *, when: datetime | None = None
) -> list[Message]:
    """To every owner and maintainer: an admin decided on held ``what`` (released or removed)."""
    project = _project_names(session, [project_id]).get(project_id, f"#{project_id}")
    messages = []
    for email, (user, _) in _project_people(session, [project_id]).items():
        body = f"""Hello {user.username},

An administrator of this index reviewed {what} of the project {project}: {decision}.

  When: {_when(when)}
  Note: {_one_line(note or '(none)')}
"""
        messages.append(_message(email, f"{project}: {what} {decision}", body))
    return messages


def _advisory_lines(advisory: AdvisoryView) -> str:
    aliases = ", ".join(advisory.aliases) or "(none)"
    fixed = ", ".join(advisory.fixed_in) or "no fixed version listed yet"
    return (f"  {advisory.id}: {_one_line(advisory.summary or 'no summary')}\n"
            f"    Also known as: {aliases}\n"
            f"    Fixed in:      {fixed}\n"
            f"    Details:       {advisory.link}")


def advisory_on_latest_release(
    session: Session, project_id: int, version: str, advisories: Sequence[AdvisoryView], *,
    when: datetime | None = None,
) -> list[Message]:
    """To every owner and maintainer: newly published advisories affect the project's latest release."""
    project = _project_names(session, [project_id]).get(project_id, f"#{project_id}")
    if not advisories:
        return []
    listed = "\n\n".join(_advisory_lines(a) for a in advisories)
    count = "A vulnerability advisory" if len(advisories) == 1 else f"{len(advisories)} vulnerability advisories"
    subject = f"{project} {version}: {advisories[0].id}" + (
        f" and {len(advisories) - 1} more advisories" if len(advisories) > 1 else " affects your latest release")
    messages = []
    for email, (user, _) in _project_people(session, [project_id]).items():
        body = f"""Hello {user.username},

{count} published just now affect{"s" if len(advisories) == 1 else ""} the latest release of the project
{project}, on which you have a role. Installers and auditors (pip-audit) now report it.

  Project: {project}
  Release: {version}
  When:    {_when(when)}

{listed}

What to do: publish a release with the fix and tell your users; if the release is not affected
(a wrong range in the advisory), ask its source (the PyPA advisory database or GitHub) to correct
it. If you did not expect this project to have a role for you, tell the other owners.
"""
        messages.append(_message(email, subject, body))
    return messages


def application_advisory(
    to: str, application: str,
    advisories: Sequence[tuple[AdvisoryView, Sequence[tuple[str, str, Sequence[str]]]]], *,
    when: datetime | None = None,
) -> list[Message]:
    """To an application's contact (or owner): new advisories affect packages it uses. One mail
    lists every advisory decided together, each with the packages (name, version, fixed in) it affects."""
    if not advisories:
        return []
    sections = []
    for advisory, packages in advisories:
        lines = "\n".join(
            f"    - {name} {version} (fixed in {', '.join(fixed) or 'no fixed version listed yet'})"
            for name, version, fixed in packages
        )
        sections.append(f"{_advisory_lines(advisory)}\n    Affects:\n{lines}")
    listed = "\n\n".join(sections)
    first, packages = advisories[0]
    if len(advisories) == 1:
        subject = f"{application}: {first.id} affects " + (
            f"{packages[0][0]} {packages[0][1]}" if packages else "a package it uses")
        count = "A new vulnerability advisory affects"
    else:
        subject = f"{application}: {len(advisories)} new advisories affect its packages"
        count = f"{len(advisories)} new vulnerability advisories affect"
    body = f"""Hello,

{count} the registered application {application}: it uses packages at
affected versions.

  Application: {application}
  When:        {_when(when)}

{listed}

What to do: upgrade each package to a fixed version, then register the new list
(`bastion app register {application} FILE`, or PUT /api/applications/{application}). If this
application is not yours, or no longer in use, remove it (`bastion app remove {application}`).
"""
    return [_message(to, subject, body)]
