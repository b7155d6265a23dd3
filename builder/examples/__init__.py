"""Small real models for recipes and tests, trained in seconds on data that ships with a package."""
