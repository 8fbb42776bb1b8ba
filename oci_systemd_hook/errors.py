"""The two ways the hook fails, each reported as one line and an exit status."""

from __future__ import annotations

#: Exit statuses, documented in the man page.
EXIT_OK = 0
EXIT_FAILURE = 1  # the host or the kernel refused a step
EXIT_BAD_INPUT = 2  # state, config, arguments or image are unusable


class HookError(Exception):
    """A failure the hook reports as a single line, never as a traceback."""

    code = EXIT_FAILURE

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InputError(HookError):
    """The runtime, the user or the image gave us something we cannot use."""

    code = EXIT_BAD_INPUT


class ReadOnlyImage(InputError):
    """A mount point the image lacks cannot be created: the image's filesystem is read-only."""
