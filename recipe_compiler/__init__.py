"""tailor: compress a family of LLMs by cutting and stitching transformer layers.

Data flows one way: text -> parse -> Recipe -> check -> lower -> Plan -> execute.
"""

import os
from pathlib import Path

__version__ = "0.1.0"


def default_cache() -> Path:
    """Where tailor keeps what it can remake (the real model's conversion, the parsed
    grammar): ``$TAILOR_CACHE``, else ``$XDG_CACHE_HOME/tailor``, else ``~/.cache/tailor``."""
    if os.environ.get("TAILOR_CACHE"):
        return Path(os.environ["TAILOR_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tailor"
