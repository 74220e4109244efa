"""Learning-rate range tests that keep layer-wise LR ratios.

``range_test`` runs the test inside Lightning's fit loop, ``suggest`` holds the suggestion rules, ``result`` the
outcome (:class:`~lit_transfer.tuner.result.LRFinderResult`) and ``finder`` :func:`~lit_transfer.tuner.finder.find_lr`;
the callback form is :class:`~lit_transfer.callbacks.GroupLRFinder`. Both are exported by :mod:`lit_transfer`.
"""
