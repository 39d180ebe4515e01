"""Low-rank factorization of conv and linear layers into chains of standard layers.

One module per decomposition, each with its :class:`~compress.factorize.factorization.Factorization` row:
``svd`` (Linear and 1x1 convs), ``tucker2`` and ``cp`` (k x k convs; ``cp`` also holds CPD-EPC). They share
``algebra`` (weight unfoldings, errors, conv builders) and ``rank`` (weight-only rank selection); ``engine``
replaces a model's layers by their rows, ``budget`` picks per-layer ranks for a MAC or parameter budget.
Inside the package imports run one way: ``algebra``, ``rank`` -> ``factorization`` -> ``svd``, ``tucker2``, ``cp``
and ``budget`` -> ``engine``.
"""
