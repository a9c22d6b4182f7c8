"""Recipes: orchestration of the library below (which model, which data, which trackers, the Accelerator):
training, the student's distillation setup, soft-target generation, comparison, the overfit check."""
