"""training: offline training jobs, evaluation metrics and reports (`rotorec train`, `rotorec evaluate`)."""
