"""The run service: what `usagg run` and `usagg.api.run_study` do, as plain functions under the CLI and the API.

A module per job, data flowing one way: a run's options and how messages name them (`options`), its store
(`stores`) and what staged planners read there (`evidence`), the jobs selected (`selection`), the checks before the
first write (`checks`, `datarecords`), whether the plan may be written into the store (`gate`), the job function
executors run (`jobfunction`), one run step by step (`studyrun`), its warnings (`notes`), what it tells its watcher
(`observer`), the one sequence of its steps (`driver`) and what it leaves (`result`). Nothing here prints.
Torch-free at import: the engine, the data check and the executors are imported by the steps that use them.
"""
