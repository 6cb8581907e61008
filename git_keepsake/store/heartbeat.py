"""Running/stopped status: a heartbeat file per running experiment, kept fresh by a thread."""

from __future__ import annotations

import threading

from .. import metadata
from ..errors import KeepsakeError
from ..runtime import tell_once
from .layout import Repository

INTERVAL_SECONDS = 5.0


class Heartbeat:
    """Keeps the heartbeats of this process's running experiments fresh in one repository."""

    def __init__(self, repository: Repository, interval: float = INTERVAL_SECONDS):
        self.repository = repository
        self.interval = interval
        self._ids: set[str] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, experiment_id: str) -> None:
        with self._wake:
            self._ids.add(experiment_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="git-keepsake-heartbeat", daemon=True
                )
                self._thread.start()
            self._wake.notify_all()

    def remove(self, experiment_id: str) -> None:
        """Stop beating and delete the file, so the experiment shows stopped at once."""
        with self._wake:
            self._ids.discard(experiment_id)
            # Under the lock: a beat in flight can't re-create the file after we delete it.
            try:
                self.repository.delete_heartbeat(experiment_id)
            except (OSError, KeepsakeError):
                pass  # it goes stale in 30 s anyway

    def _run(self) -> None:
        beaten: set[str] = set()
        failures = 0
        with self._wake:
            while True:
                for experiment_id in list(self._ids):
                    beaten.add(experiment_id)  # tried: the next try is `interval` away
                    try:
                        self.repository.write_heartbeat(experiment_id, metadata.now())
                        failures = 0
                    except (OSError, KeepsakeError) as e:
                        # Told from the second failure in a row: by then the writer has
                        # told the same refusal (with what stays staged), if it met it.
                        failures += 1
                        if failures > 1:
                            message = f"heartbeat failed ({e}); training goes on"
                            tell_once(e, message, self.repository.url)
                # New experiments get their first beat at once, the rest every `interval`.
                self._wake.wait(self.interval if self._ids <= beaten else 0)
                beaten &= self._ids
