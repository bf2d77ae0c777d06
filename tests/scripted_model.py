"""Base of the scripted lmms-eval models the CLI tests register under a ``--model`` name: a simple model that only
answers ``generate_until`` (the stand-in modules the tests write import it; the tests folder is on PYTHONPATH)."""

from lmms_eval.api.model import lmms


class ScriptedModel(lmms):
    is_simple = True

    def __init__(self, **kwargs):
        super().__init__()

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError
