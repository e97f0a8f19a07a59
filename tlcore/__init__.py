"""TL Lab core: datasets, backbones, transfer methods, cost measurement and MLflow tracking.

Nothing here imports streamlit; the app and the CLI both call :func:`tlcore.experiments.run`.
Importing tlcore registers the methods (built-in, then ``$TLCORE_PLUGINS``), as ``import timm``
registers its models: a spec or a run names its method, and the method's record says the rest.
"""

from tlcore import methods  # noqa: F401  (registers the methods)
from tlcore.version import __version__  # noqa: F401
