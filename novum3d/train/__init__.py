"""Correspondences, the contrastive loss and the trainer."""
