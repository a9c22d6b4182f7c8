"""Evaluation: forward helpers, CTC decoding (greedy, beam, LM fusion), the official WER, evaluating a split."""
