"""The base of every configuration section: a key the section does not define is an error, not ignored.

A misspelt key (`llm.modle`) silently ignored leaves the default in place and the user wondering why their
setting has no effect; config.py turns the error into "unknown setting; did you mean ...". Imports only
pydantic, so every subsystem's config module can use it without an import circle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    # No setting is measured in infinities: `.inf` or `.nan` for a timeout or a rate is a mistake.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FieldProblem(ValueError):
    """Raised by a section's validator about one of its keys: the message then names `section.field`
    rather than the section (a model validator's errors are otherwise placed on the whole section)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
