"""The HTTP service: hypercorn's trio worker serving the starlette app.

A service with a visible lifecycle like the node's others: ``run`` binds (a
bind failure is one ``HttpError`` naming ``http.listen``), reports the bound
URL through ``task_status``, and returns after ``stop()`` once open
connections had ``graceful_timeout`` seconds to finish.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from flocknode.errors import FlockError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

GRACEFUL_SECONDS = 1.0


class HttpError(FlockError):
    exit_code = 2


def hypercorn_config(listen: str) -> Config:
    cfg = Config()
    cfg.bind = [listen]
    cfg.graceful_timeout = GRACEFUL_SECONDS
    cfg.keep_alive_timeout = 5.0
    cfg.include_server_header = False
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")  # through the node's log format
    return cfg


class HttpService:
    def __init__(self, app: Any, listen: str) -> None:
        self.app = app
        self.listen = listen
        self._stop = trio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            config = hypercorn_config(self.listen)
        except Exception as e:  # hypercorn parses the bind string lazily; be safe
            raise HttpError(f"http.listen: {self.listen!r} is not HOST:PORT ({e})") from None

        try:
            await serve(self.app, config, shutdown_trigger=self._stop.wait, task_status=task_status)
        except (OSError, ValueError) as e:
            raise self._bind_error(e) from None
        except BaseExceptionGroup as group:  # hypercorn binds inside its lifespan nursery
            bind, rest = group.split((OSError, ValueError))
            if bind is None or rest is not None:
                raise
            raise self._bind_error(_first_leaf(bind)) from None

    def _bind_error(self, e: BaseException) -> HttpError:
        if isinstance(e, OSError):
            return HttpError(
                f"http.listen: cannot listen on {self.listen} ({e.strerror or e}); set [http] "
                "listen to a free HOST:PORT or enabled = false"
            )
        return HttpError(f"http.listen: {self.listen!r} is not HOST:PORT ({e})")


def _first_leaf(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e
