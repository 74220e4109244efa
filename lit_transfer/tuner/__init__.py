"""Learning-rate range tests that keep layer-wise LR ratios, and the Optuna search of ``lit-transfer tune``.

``range_test`` runs the test inside Lightning's fit loop, ``suggest`` holds the suggestion rules, ``result`` the
outcome (:class:`~lit_transfer.tuner.result.LRFinderResult`) and ``finder`` :func:`~lit_transfer.tuner.finder.find_lr`;
the callback form is :class:`~lit_transfer.callbacks.GroupLRFinder`. Both are exported by :mod:`lit_transfer`.

The Optuna search behind ``lit-transfer tune``: ``space`` (the YAML search space), ``search`` (the study and its
trials), ``folds`` (k-fold scoring), ``reporting`` (a trial's metric to Optuna, pruning) and ``study_files`` (the
files a study leaves); the command is :mod:`lit_transfer.cli.tune`.
"""
