"""What a training run is asked to do (``TrainConfig``, saved as ``config.json`` in its output folder)."""

from __future__ import annotations

from dataclasses import dataclass

from core.engine.preprocess import ORIGINAL_SPEC, PreprocessSpec


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` in the output folder)."""

    data_dir: str
    out_dir: str
    channels: tuple[str, ...] = ORIGINAL_SPEC.channels  # preprocessing defaults: the original design's spec
    input_size: int = ORIGINAL_SPEC.input_size
    normalisation: str = ORIGINAL_SPEC.normalisation
    crop: str = ORIGINAL_SPEC.crop
    base_filters: int = 32
    depth: int = 4
    dropout: float = 0.2
    epochs: int = 25
    batch_size: int = 2
    learning_rate: float = 1e-3
    loss: str = "ce"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    val_cases: tuple[str, ...] = ()
    test_cases: tuple[str, ...] = ()
    exclude_cases: tuple[str, ...] = ()
    seed: int = 42
    augment: bool = True
    tumour_repeat: int = 1
    bias_field: float = 0.0
    early_stopping_patience: int = 6
    max_minutes: float = 0.0
    resume: bool = False
    steps_per_epoch: int = 0
    cache_dir: str = ""  # slice cache folder (default: <out_dir>/cache); several runs may share one
    context: int = 0  # neighbouring slices on each side as extra channels (2.5-D)
    modality_dropout: float = 0.0  # per-sample probability of zero-filling some modalities
    strong_augment: bool = False  # gamma, contrast, noise, blur and low-resolution augmentation
    postprocess: str = ""  # post-processing saved with the model (core.engine.postprocess.parse_variant), "" for none
    export_onnx: bool = True  # write model.onnx at the end (core.engine.runtime): inference without TensorFlow

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(channels=tuple(self.channels), input_size=self.input_size,
                              normalisation=self.normalisation, crop=self.crop, context=self.context,
                              modality_dropout=self.modality_dropout)
