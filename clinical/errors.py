"""The error types a holoburn user can meet, one table for every layer.

Each type says who can fix the problem and how the command ends:

| type            | meaning                                                      | `holoburn` exit |
|-----------------|--------------------------------------------------------------|-----------------|
| BadInput        | a file, folder, source or model the user named is unusable   | 2               |
| BadConfig       | a config file or option has an unknown key or a bad value    | 2               |
| BackendFailure  | an inference backend is absent or failed to load or run      | 3               |
| BadFrame        | one frame cannot be processed; the pipeline drops that frame | (never reaches the command line: the frame is counted with its reason) |

Modules declare their own narrower types as subclasses (media.video.VideoError is a BadInput),
so a caller catches exactly what it can handle, and the command line maps each to its exit code
and prints its message, never a traceback. Anything else is a defect in holoburn and surfaces as
one, with its traceback.

This module sits in the lowest layer (clinical/ imports nothing of holoburn's) so that every
layer can raise these types.
"""
from __future__ import annotations


class HoloburnError(Exception):
    """Base of every error holoburn raises on purpose."""

    exit_code = 1


class BadInput(HoloburnError):
    """An input the user named cannot be used: the message names it and says what to do."""

    exit_code = 2


class BadConfig(BadInput):
    """A configuration file or option is wrong: the message names the file, the key and the value."""

    exit_code = 2


class BackendFailure(HoloburnError):
    """An inference backend is not installed, does not fit the model, or failed to run."""

    exit_code = 3


class BadFrame(HoloburnError):
    """One frame cannot be processed (no picture, a size the model cannot take, a failed stage).

    `reason` is the short status the frame is counted under in results.jsonl and summary.json.
    """

    exit_code = 1

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason
