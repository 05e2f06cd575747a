"""The run service: what `usagg run` and `usagg.api.run_study` do, as plain functions under the CLI and the API.

One module per job, data flowing one way: a run's options (`options`), its store (`stores`) and what staged
planners read there (`evidence`), the jobs selected (`selection`). Torch-free at import: the engine, the data check
and the executors are imported by the steps that use them.
"""
