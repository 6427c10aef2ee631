"""The fine-tuning run behind `scripts/finetune` (run.py) and its task (task.py)."""
