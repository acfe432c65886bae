"""A class whose methods run as jobs: bgrun makes `Mailer()` and calls the method."""

from __future__ import annotations

import time


class Mailer:
    """Pretends to send mail; prints what it does, which lands in the job's log."""

    def send(self, to: str, subject: str = "Hello") -> str:
        print(f"sending {subject!r} to {to}")
        time.sleep(0.2)
        print(f"sent to {to}")
        return f"sent to {to}"

    def send_digest(self, users: list[str], *, day: str = "today") -> dict[str, int]:
        for user in users:
            print(f"digest for {user} ({day})")
        return {"sent": len(users)}
