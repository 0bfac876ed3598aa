"""Preprocessing, the model, training, inference, post-processing and the quality flag."""
