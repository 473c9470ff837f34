"""Exports of a trained model to formats other tools load (a Hugging Face model folder: hf.py)."""
