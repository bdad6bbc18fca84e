"""Base class every config section derives from."""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A frozen, strictly typed block of config.

    Unknown keys are errors (a typo must not silently fall back to a default), and values are not
    coerced across types (``"5"`` is not an int), so a YAML mistake fails before Spark starts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)
