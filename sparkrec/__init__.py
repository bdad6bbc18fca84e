"""sparkrec: deep-learning recommendation training at data-lake scale on Apache Spark."""
__version__ = "0.1.0"
