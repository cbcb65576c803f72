"""Training engines the stages call: the subset plan, retraining of the proxy model, and the closed loop."""
