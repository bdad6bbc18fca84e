"""Item content settings (`content.*`): item text tokenised in Spark, the text-CNN tower, the hybrid model and cold-start items."""
from sparkrec.config.base import Section


class ContentConfig(Section):
    pass
