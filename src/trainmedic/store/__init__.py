"""The run store: one directory per run, SQLite inside, numpy arrays out."""

from .reader import LayerSeries, RunReader, Series, open_run
from .schema import DB_NAME, SCHEMA_VERSION
from .writer import RunWriter

__all__ = ["DB_NAME", "SCHEMA_VERSION", "LayerSeries", "RunReader", "RunWriter", "Series", "open_run"]
