"""Shipping a study's model: its deployable files, checked, with a model card (``run_bench.py export``)."""
