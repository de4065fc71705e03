# pytest runs the plugin natively: the plugin's modules come from this
# directory, the SDK from the copy atoll writes to build/sdk (`atoll plugin
# new` and every `atoll plugin test .` refresh it) unless one is installed.
import pathlib
import sys

here = pathlib.Path(__file__).parent
sys.path.insert(0, str(here))
try:
    import atoll_sdk  # noqa: F401
except ImportError:
    sys.path.insert(0, str(here / "build" / "sdk"))
