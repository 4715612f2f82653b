"""The spectra's splits used to live here; they are `speccomp.spectra.data` now.

Kept only as an alias while code outside the core's control still imports this path
(`speccomp/meta/`, being rewritten; `tracking/pipeline.py`, `speccomp/spectra/figures.py` and
`benchmarks/`): new code imports `speccomp.spectra.data`. It is the one import of a domain by the
core, allowed by name in `tests/test_codebase.py`; delete the file when nothing imports it.
"""

from speccomp.spectra.data import (  # noqa: F401
    SplitData,
    generate_datasets,
    generate_split,
    load_datasets,
    save_datasets,
    tensor_digest,
)
