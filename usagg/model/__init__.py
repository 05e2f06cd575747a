"""M2DINO: DINOv3 encoder, task-conditioned MoE and one head per task (imports torch)."""
