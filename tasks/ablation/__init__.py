"""Data ablations: the pieces that make variants of the data comparable on one yardstick (a shared
reference set, kept out of every variant's training data), the controls that calibrate them, and
the verdicts that say whether a variant's model is better beyond run-to-run noise."""
