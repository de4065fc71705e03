"""The module componentize-py builds: exports the plugin."""

from atoll_sdk.component import export
from plugin import ThePlugin

WitWorld = export(ThePlugin)
