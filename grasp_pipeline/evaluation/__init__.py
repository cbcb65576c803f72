"""What measures quality: rank metrics and noise ceilings (`metrics`), counterfactual subset
fidelity (`fidelity`), retrained comparisons of selections and mixtures (`comparison`), the
asset checks' logic (`checks`) and the end-of-run summary (`summary`)."""
