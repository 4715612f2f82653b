"""The Bayesian meta-learner (issue #12): a posterior over the NAS supernet's architectures learned
across compositional tasks (pairs of components), then adapted to unseen pairs.

    settings.py   the six settings (flags > environment > .env > config file > defaults), with sources
    config.py     the meta config file (configs/meta/*.yaml): the meta-learner's own hyper-parameters
    domain.py     what the meta-learner asks a domain (`MetaDomain`): tasks, data, scores, floor, rows
    bank.py       the task bank of a domain whose tasks have splits of their own (`SplitBank`)
    tasks.py      task names and the task draw (disjoint meta-train / meta-test tasks)
    posterior.py  mean-field Gaussian q(α), prior N(0, s²), closed-form KL
    metatrain.py  meta-training: α ~ q, Gumbel-softmax path, inner loop, query loss, ELBO, REPTILE
    adapt.py      stage two per meta-test pair and the baselines, at equal step budget
    compare.py    the paired comparison (Wilcoxon signed-rank) and the two figures
    run.py        a whole run without I/O (`plan_meta`, `run_meta`)
"""
