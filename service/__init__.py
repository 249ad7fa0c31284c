"""The scoring service: a FastAPI app over a trained run (`rotorec serve`)."""
