"""Jinja2 rendering for generated files: StrictUndefined, and values enter code through `pyrepr`."""

from __future__ import annotations

from typing import Any

from builder.resources import resource_dir


def render(template: str, **values: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pyrepr"] = repr
    return env.get_template(template).render(**values)
