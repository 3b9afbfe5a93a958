"""The vendored torchtune tests (``vendor/``) run in their own pytest session, started by
``test_torchtune_compat.py``: collected here they would import torchtune's ``tests`` package
under tuner's ``tests`` folder."""

collect_ignore = ["vendor"]
