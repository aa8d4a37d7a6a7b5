"""The two training stages (Stage I contrastive + AAT, Stage II cluster → train → re-cluster) and their shared state."""
