"""The module componentize-py builds: exports the cache plugin."""

from atoll_sdk.component import export
from cache import Cache

WitWorld = export(Cache)
