"""The task's ``process_results``: the registered ``lenient`` verifier's verdict."""

from srlm_harness_plugins.lm_eval.task_functions import verifier_results

results = verifier_results("lenient")
