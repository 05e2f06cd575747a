"""usagg: orchestrate the ultrasound task-aggregation study (TS, CG, AU, AG and the controls)."""

__version__ = "0.1.0"

#: What a job trains to under its id. Bump it in any commit that changes the numbers a job of the same settings and
#: data trains or evaluates to (the engine, a model, a loss, augmentation, sampling, selection, a task type's metric),
#: never for a refactor, a message or the analysis (it recomputes from the predictions). Each job records it
#: (metrics.json `training.versions["numerics"]`) and `usagg run` warns of done jobs of another value: job ids hash
#: settings, never code, and `__version__` has not changed with such commits (docs/internals.md, "The registry
#: contract"). tests/test_code_provenance.py pins it.
NUMERICS_VERSION = 1
