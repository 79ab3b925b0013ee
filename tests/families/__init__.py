"""The family conformance suite: one tiny random checkpoint per registered family, and one module of checks
(`test_conformance.py`) that every family passes.

A family's test fixture is a `base.Case` (its module here: the tiny HF config saved with `save_pretrained`, the
jaxprune model loaded from it, how to make prompts with one image, several images or none, and the transformers
forward), built once per test run by the session fixture `<family>_case` in tests/conftest.py. A family in the
registry without one fails the suite.
"""
