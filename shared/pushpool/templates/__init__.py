"""Job templates: rendering with Prefect's exact semantics (``render``) and the variables every push template adds
(``common``). The templates themselves live with their provider (``providers/<name>/template.py``)."""

from __future__ import annotations

from pushpool.templates.render import merge_job_variables, render_job_configuration

__all__ = ["merge_job_variables", "render_job_configuration"]
