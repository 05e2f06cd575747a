"""usagg: orchestrate the ultrasound task-aggregation study (TS / CG / AU)."""

__version__ = "0.1.0"
