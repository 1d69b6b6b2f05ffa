"""Model directories (``model.safetensors`` + ``model_card.json``) and the registry of bundled models."""
