"""Factorization (CP, CPD-EPC, Tucker-2, SVD) and structured pruning of trained models.

Not implemented yet: the compression issue fills this package (``compress.apply``,
``compress.list_methods``). It exists now so the package layout is installable as documented.
"""
