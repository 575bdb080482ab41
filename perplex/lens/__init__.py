"""The logit lens and its relatives: per-head lens, trajectories, activation patching."""
