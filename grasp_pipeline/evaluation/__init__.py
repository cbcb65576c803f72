"""What measures quality: counterfactual subset fidelity (`fidelity`, on the rank metrics and noise
ceilings of `grasp_pipeline.stats`), retrained comparisons of selections and mixtures (`comparison`), the
asset checks' logic (`checks`), the end-of-run summary (`summary`) and each selection's
share of labelled dirt and of redundant examples (`dirt`)."""
