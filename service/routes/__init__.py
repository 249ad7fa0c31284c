"""The service's HTTP routes, one router per concern; service/app.py mounts them, and the Open
Inference Protocol's router lives in service/inference_protocol.py."""
