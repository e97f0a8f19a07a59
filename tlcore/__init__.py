"""TL Lab core: datasets, backbones, transfer methods, cost measurement and MLflow tracking.

Nothing here imports streamlit; the app and the CLI both call :func:`tlcore.experiments.run`.
"""

__version__ = "0.1.0"
