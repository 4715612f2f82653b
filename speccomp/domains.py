"""The domains of this project, declared to the core's registry without importing them.

The core knows no domain (`speccomp.core.registry`): this list, which `speccomp/__init__.py`
imports before anything else, names the module whose import registers each domain's task, the
module that registers its object for the search and the meta-learner, and the model names each
domain defines, so that a config naming them validates before the module is imported. Nothing here
imports torch or a domain: the task module is imported the first time the core looks a domain up
(`speccomp.core.task.get_task`, `task_for_dir`, ...), the search module the first time
`speccomp.nas.domain.search_domain` does.

A new domain adds one `declare_domain` line here (and its models), or registers its task itself
(`speccomp.core.task.register_task`) when its package is imported; see docs/layout.md.
"""

from __future__ import annotations

from speccomp.core.registry import declare_domain, register_model_module

declare_domain("spectra", "speccomp.spectra.task", search="speccomp.spectra.search")
declare_domain("matrices", "speccomp.matrices.task", search="speccomp.matrices.search")

for _model in ("raven_mlp", "raven_wren", "raven_candidates", "raven_seq"):
    register_model_module(_model, "speccomp.matrices.models", domain="matrices")
