"""usagg: orchestrate the ultrasound task-aggregation study (TS, CG, AU, AG and the controls)."""

__version__ = "0.1.0"
