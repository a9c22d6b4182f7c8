"""Training: the Accelerate loop, losses, optimizer and schedule, checkpoints, trackers, decoding and WER."""
