"""What measures quality: rank metrics and noise ceilings (`metrics`), counterfactual subset
fidelity (`fidelity`), retrained comparisons of selections and mixtures (`comparison`), the
asset checks' logic (`checks`), the end-of-run summary (`summary`) and each selection's
share of labelled dirt and of redundant examples (`dirt`)."""
