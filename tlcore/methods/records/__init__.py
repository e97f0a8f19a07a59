"""The built-in methods' records (:class:`~tlcore.methods.base.Method`), kept apart from the methods' code so
that listing methods, drawing the Run page's form or labelling a results table never imports torch."""

from tlcore.methods.records import feature_extraction, fine_tuning, quanta, ranking  # noqa: F401  (each registers)
