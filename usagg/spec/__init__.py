"""The study spec: pydantic models (models.py), YAML loading and overrides (load.py)."""
