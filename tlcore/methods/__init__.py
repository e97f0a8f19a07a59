"""Transfer methods. Each module registers its :class:`~tlcore.methods.base.Method` record on import;
modules named in ``$TLCORE_PLUGINS`` register theirs after the built-in ones."""

from tlcore.methods import records  # noqa: F401  (the built-in methods register their records)
from tlcore.methods.base import load_plugins

load_plugins()
