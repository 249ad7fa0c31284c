"""features: event logs -> validated, featurized, split user sequences (`rotorec synth`, `rotorec prepare`)."""
