"""speccomp: the science, as sub-packages. `core/` defines the interfaces and knows no domain;
`spectra/` and `matrices/` are the domains, declared to the core by `speccomp/domains.py` (imported
here, so that every entry into the package sees them); `nas/` and `meta/` search and meta-learn
through the domain interface."""

from speccomp import domains as _domains  # noqa: F401  (declares the domains; imports neither)
