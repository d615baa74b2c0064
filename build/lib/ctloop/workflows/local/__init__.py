"""The embedded executor: `LocalEngine` walks the WorkflowTemplate that `ctloop.workflows.template` defines.

Public: `LocalEngine`. The other modules (run store, memo cache, mutexes, retries, the Argo expression
evaluator) are its parts.
"""
