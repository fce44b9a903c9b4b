"""trd's data layer: WebDataset shards in, deterministic distributed batches out.

Every dataset role (``data.source``, ``data.target``, ``data.piggyback.<name>``) is a
node with ``train``/``test`` shard patterns, ``num_classes`` and ``image_size``; see
``role.parse_role`` for the optional keys.
"""

from .embedded import EMBEDDED, ensure_role_shards
from .errors import DataError
from .loader import ShardLoader, build_loader
from .urls import expand_urls
from .writer import write_shards

__all__ = ["DataError", "EMBEDDED", "ShardLoader", "build_loader", "ensure_role_shards", "expand_urls", "write_shards"]
