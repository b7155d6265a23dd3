"""mdbuild: declarative, cached, verified builds of model-deployment artifacts.

Importing this package must stay cheap: no ML SDK is imported here or by the planner.
"""

__version__ = "0.1.0"
