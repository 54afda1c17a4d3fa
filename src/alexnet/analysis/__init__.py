"""Using and looking inside a trained net: loading it back, predicting on image files."""

from .predict import LoadedModel, Prediction, image_files, load_model

__all__ = ["LoadedModel", "Prediction", "image_files", "load_model"]
