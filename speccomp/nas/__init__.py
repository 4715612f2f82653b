"""Differentiable architecture search with Gumbel-softmax (GDAS / SNAS), issue #10.

Stable API (additive changes only; the meta-learner, issue #12, builds on it):

    from speccomp.nas import (load_space, init_alpha, Supernet, sample_weights,
                              architecture_probabilities, derive, run_search)

    space = load_space("configs/nas/spectra.yaml")            # NasSpace, validated (ConfigError)
    space.decisions                                            # (Decision(name, options, kind), ...)
    alpha = init_alpha(space)                                  # {decision: (n_options,) zero logits}
    net = Supernet(space, n_bins, n_outputs, generator)        # nn.Module, weights from `generator`
    net.fit_inputs(train_spectra)                              # (N, L): standardize statistics
    w = sample_weights(alpha, tau, hard, generator)            # {decision: (n_options,)} Gumbel-softmax
    y = net(x, w)                                              # (B, L) -> (B, C)
    y = net.sample_forward(x, alpha, tau, hard, generator)     # the two lines above in one
    architecture_probabilities(alpha)                          # {decision: softmax(α)}
    derive(space, alpha)                                       # argmax architecture -> preset dict
                                                               #   (zero left out of the argmax, as DARTS)
    inherit_weights(net, choices, seq_model)                   # supernet weights -> standalone `seq` model
    result = run_search(space, train, val, seed)               # SearchResult: alpha, choices, preset,
                                                               #   alpha_trajectory, history, supernet

`hard=True` is GDAS (one path, straight-through gradient), `hard=False` SNAS (soft mixture).
A derived preset is an ordinary partial config (`training.model_type: seq` plus its layers) that
`main` trains: `load_config(presets=[path])`. α can also be handled as one flat vector
(`flatten_alpha` / `unflatten_alpha`, in decision order) for a posterior over architectures.
What the search asks a domain (rows, supernet, loss, readings) is `speccomp.nas.domain.SearchDomain`;
each domain package registers its own (`register_search_domain`).
"""

from speccomp.nas.derive import (
    choices_of,
    derive,
    inherit_weights,
    one_hot_weights,
    preset_of,
    preset_yaml,
    write_preset,
)
from speccomp.nas.gumbel import (
    architecture_probabilities,
    gumbel_softmax,
    mean_entropy,
    sample_weights,
    temperature,
)
from speccomp.nas.search import (
    SearchResult,
    decision_table,
    gradient_snr,
    metric_names,
    probability_names,
    run_search,
    warmup_iterations,
)
from speccomp.nas.space import (
    Decision,
    NasSpace,
    Op,
    SearchSettings,
    flatten_alpha,
    init_alpha,
    load_space,
    metric_label,
    space_from_dict,
    unflatten_alpha,
)
from speccomp.nas.supernet import Supernet

__all__ = [
    "Decision", "NasSpace", "Op", "SearchResult", "SearchSettings", "Supernet",
    "architecture_probabilities", "choices_of", "derive", "flatten_alpha", "gumbel_softmax", "inherit_weights",
    "init_alpha", "load_space", "mean_entropy", "metric_label", "metric_names", "one_hot_weights", "preset_of",
    "preset_yaml", "probability_names", "run_search", "sample_weights", "space_from_dict", "temperature",
    "unflatten_alpha", "write_preset", "decision_table", "gradient_snr", "warmup_iterations",
]
