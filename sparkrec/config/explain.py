"""Explanation job settings (`explain.*`): Captum attributions for (user, recommended item)."""
from sparkrec.config.base import Section


class ExplainConfig(Section):
    pass
