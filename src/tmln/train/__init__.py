"""Training: datasets (patch sampling from annotations), augmentation, stain normalisation, shared
loop utilities (seeding, AMP, DDP, checkpoints, logging) and the training loops of both models."""
