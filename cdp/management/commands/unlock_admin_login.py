"""Lift an admin login lockout before its window ends (cdp.login_throttle)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdp.audit import audit_record
from cdp.login_throttle import login_unlock


class Command(BaseCommand):
    help = "Clear the failed-login count of a username and/or a client address."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="")
        parser.add_argument("--ip", default="", help="the client address that is locked out")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["username"] and not options["ip"]:
            raise CommandError("name a --username, an --ip, or both")
        login_unlock(username=options["username"], ip=options["ip"])
        audit_record(
            actor="cli",
            action="admin.login.unlocked",
            object_type="auth.user",
            details={"username": bool(options["username"]), "ip": bool(options["ip"])},
        )
        self.stdout.write("lockout lifted")
