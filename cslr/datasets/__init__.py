"""Corpora -> WebDataset shards -> streaming batches."""

from .schema import VideoSample, SchemaError  # noqa: F401
from .vocab import Vocabulary, BLANK_ID  # noqa: F401
from .writer import load_manifest, write_shard, shard_name  # noqa: F401
