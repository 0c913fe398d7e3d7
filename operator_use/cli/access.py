"""`operator-use pairing ...` and `operator-use user ...`: the owner's side of pairing, users and roles.

They change the same files the running agent reads (it picks changes up on the next message).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from .loading import load_or_exit

if TYPE_CHECKING:
    from ..config import Config

T = TypeVar("T")

pairing_app = typer.Typer(no_args_is_help=True, help="Approve or deny people who asked to talk to the agent.")
user_app = typer.Typer(no_args_is_help=True, help="Users, their identities on each platform, and their roles.")


def _config() -> Config:
    return load_or_exit()


def _run(action: Callable[[], T]) -> T:
    """Run a store action; known failures become one clear line on stderr and exit status 1 (2 if corrupt)."""
    from ..security.pairing import PairingError
    from ..security.store import StoreCorrupt
    from ..security.users import UserError

    try:
        return action()
    except (PairingError, UserError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    except StoreCorrupt as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


# --- pairing ---


@pairing_app.command("list")
def pairing_list() -> None:
    """Pending pairing codes and approved identities."""
    from ..security.access import pairing_store

    config = _config()
    store = pairing_store(config.home, config.security)
    pending = _run(store.pending)
    approved = _run(store.approved)
    if not pending and not approved:
        typer.echo("No pairing requests and no approved identities.")
    for r in pending:
        typer.echo(f"pending  {r.code}  {r.channel}:{r.user_id}  {r.user_name or ''}  expires {_when(r.expires_at)}")
    for ident, info in sorted(approved.items()):
        typer.echo(f"approved {ident}  {info.get('user_name') or ''}  since {_when(info.get('approved_at', 0))}")


@pairing_app.command("approve")
def pairing_approve(code: str) -> None:
    """Let the sender of this code talk to the agent."""
    from ..security.access import pairing_store

    config = _config()
    r = _run(lambda: pairing_store(config.home, config.security).approve(code))
    typer.echo(f"Approved {r.channel}:{r.user_id}" + (f" ({r.user_name})" if r.user_name else "") + ".")


@pairing_app.command("deny")
def pairing_deny(code: str) -> None:
    """Drop a pairing request."""
    from ..security.access import pairing_store

    config = _config()
    r = _run(lambda: pairing_store(config.home, config.security).deny(code))
    typer.echo(f"Denied {r.channel}:{r.user_id}.")


@pairing_app.command("revoke")
def pairing_revoke(platform: str, user_id: str) -> None:
    """Take an approved identity's access away."""
    from ..security.access import pairing_store

    config = _config()
    if not _run(lambda: pairing_store(config.home, config.security).revoke(platform, user_id)):
        typer.echo(f"{platform}:{user_id} was not approved.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Revoked {platform}:{user_id}.")


# --- users ---


def _check_role(config: Config, role: str) -> None:
    if role not in config.security.roles:
        typer.echo(f"Error: unknown role {role!r}; configured roles: {', '.join(config.security.roles)}", err=True)
        raise typer.Exit(1)


@user_app.command("add")
def user_add(
    name: str,
    platform: str | None = typer.Argument(None, help="Channel name, e.g. telegram."),
    user_id: str | None = typer.Argument(None, help="The user's id on that platform."),
    role: str = typer.Option("user", "--role", help="A role from security.roles (admin, user, ...)."),
) -> None:
    """Create a user, optionally with a first identity: `user add ada --role admin telegram 12345`."""
    from ..security.access import user_store

    config = _config()
    _check_role(config, role)
    if (platform is None) != (user_id is None):
        typer.echo("Error: give both a platform and a user id, or neither.", err=True)
        raise typer.Exit(1)
    u = _run(lambda: user_store(config.home).add(name, role, platform, user_id))
    typer.echo(f"Added {u.name} ({u.role})" + (f" as {u.identities[0]}" if u.identities else "") + ".")


@user_app.command("link")
def user_link(name: str, platform: str, user_id: str) -> None:
    """Link another platform identity to a user: `user link ada discord 999`."""
    from ..security.access import user_store

    config = _config()
    u = _run(lambda: user_store(config.home).link(name, platform, user_id))
    typer.echo(f"{u.name} is now {', '.join(u.identities)}.")


@user_app.command("unlink")
def user_unlink(name: str, platform: str, user_id: str) -> None:
    """Remove an identity from a user."""
    from ..security.access import user_store

    config = _config()
    u = _run(lambda: user_store(config.home).unlink(name, platform, user_id))
    typer.echo(f"Unlinked {platform}:{user_id} from {u.name}.")


@user_app.command("role")
def user_role(name: str, role: str) -> None:
    """Change a user's role."""
    from ..security.access import user_store

    config = _config()
    _check_role(config, role)
    u = _run(lambda: user_store(config.home).set_role(name, role))
    typer.echo(f"{u.name} is now {u.role}.")


@user_app.command("remove")
def user_remove(name: str) -> None:
    """Delete a user (their identities lose the access the user had)."""
    from ..security.access import user_store

    config = _config()
    _run(lambda: user_store(config.home).remove(name))
    typer.echo(f"Removed {name}.")


@user_app.command("list")
def user_list() -> None:
    """Users, roles and identities."""
    from ..security.access import user_store

    config = _config()
    users = _run(user_store(config.home).list)
    if not users:
        typer.echo("No users. Add one with `operator-use user add NAME --role admin telegram 12345`.")
    for u in users:
        flag = "" if u.role in config.security.roles else "  (role not configured: no access)"
        typer.echo(f"{u.name}\t{u.role}\t{', '.join(u.identities) or '-'}{flag}")
