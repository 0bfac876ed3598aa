"""core/engine/runtime.py: ONNX export, the checksum gate, the fallback to TensorFlow, inference without
importing TensorFlow, and equivalence with Keras (tiny synthetic model; the shipped model on a real case)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_inference import SPEC, synthetic_case

from core import config
from core.engine.export import export_model_folder, quantize_model_folder
from core.engine.inference import predict_case
from core.engine.model import build_unet, load_model, save_for_inference
from core.engine.runtime import INT8_NAME, ONNX_NAME, quantize_int8, runtime_preference
from core.errors import ModelError


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 4-channel U-Net (32 x 32) saved like a trained model, with a card, exported to ONNX."""
    folder = tmp_path_factory.mktemp("onnx") / "tiny"
    save_for_inference(build_unet(32, 4, 4, 2, seed=3), folder, SPEC)
    (folder / "model_card.json").write_text(json.dumps({"name": "tiny"}))
    (folder / "MODEL_CARD.md").write_text("# Model card: tiny\n\n- Weights: `model.keras`\n\n## Data\n")
    export_model_folder(folder)
    return folder


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_export_records_checksums_in_the_card(exported: Path) -> None:
    card = json.loads((exported / "model_card.json").read_text())
    entry = card["onnx"]
    assert (exported / ONNX_NAME).is_file() and entry["file"] == ONNX_NAME
    assert len(entry["sha256"]) == 64 and len(entry["keras_sha256"]) == 64 and entry["opset"] == 17
    assert entry["export_check_max_abs_diff"] <= 1e-3
    md = (exported / "MODEL_CARD.md").read_text().splitlines()
    runtime_line = [i for i, s in enumerate(md) if s.startswith("- Runtime:")]
    assert len(runtime_line) == 1 and md[runtime_line[0] - 1].startswith("- Weights:")
    assert entry["sha256"] in md[runtime_line[0]]
    export_model_folder(exported)  # exporting again replaces the line instead of adding one
    md = (exported / "MODEL_CARD.md").read_text().splitlines()
    assert sum(s.startswith("- Runtime:") for s in md) == 1


def test_onnx_predictions_match_keras(exported: Path) -> None:
    onnx = load_model(exported)
    keras = load_model(exported, runtime="tensorflow")
    assert onnx.runtime == "onnxruntime" and keras.runtime == "tensorflow"
    assert onnx.sha256 == keras.sha256  # the model's identity is its Keras weights, whatever the runtime
    case = synthetic_case(seed=4)
    a, b = predict_case(onnx, case), predict_case(keras, case)
    np.testing.assert_allclose(a.probabilities.astype(np.float32), b.probabilities.astype(np.float32), atol=1e-3)
    assert np.mean(a.labels == b.labels) >= 0.999
    ta, tb = predict_case(onnx, case, tta=True), predict_case(keras, case, tta=True)
    np.testing.assert_allclose(ta.uncertainty.astype(np.float32), tb.uncertainty.astype(np.float32), atol=1e-3)


def test_stale_or_tampered_export_falls_back_to_tensorflow(exported: Path, tmp_path: Path) -> None:
    # model.keras replaced after the export: the card's keras_sha256 no longer matches
    stale = copy_model(exported, tmp_path / "stale")
    save_for_inference(build_unet(32, 4, 4, 2, seed=99), stale, SPEC)
    assert load_model(stale).runtime == "tensorflow"
    with pytest.raises(ModelError, match="model.onnx exported from these weights"):
        load_model(stale, runtime="onnx")
    # model.onnx altered: its checksum no longer matches the card
    tampered = copy_model(exported, tmp_path / "tampered")
    with open(tampered / ONNX_NAME, "ab") as fh:
        fh.write(b"\0")
    assert load_model(tampered).runtime == "tensorflow"
    # no card entry at all
    bare = copy_model(exported, tmp_path / "bare")
    (bare / "model_card.json").write_text("{}")
    assert load_model(bare).runtime == "tensorflow"


def test_runtime_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRATS_RUNTIME", raising=False)
    assert runtime_preference() == "auto"
    monkeypatch.setenv("BRATS_RUNTIME", "TensorFlow")
    assert runtime_preference() == "tensorflow"
    assert runtime_preference("onnx") == "onnx"
    assert runtime_preference("ONNX-int8") == "onnx-int8"
    with pytest.raises(ModelError, match="expected a runtime among auto, onnx, onnx-int8, tensorflow, got 'cuda'"):
        runtime_preference("cuda")


def test_int8_network_is_opt_in_checksum_gated_and_close_to_fp32(exported: Path, tmp_path: Path) -> None:
    """quantize_model_folder writes model.int8.onnx calibrated on the given cases and records it; only
    runtime "onnx-int8" uses it ("auto" stays fp32); a tampered or stale int8 file is refused. On the tiny
    synthetic model its probabilities stay near the fp32 network's (not a figure: that is the CV table's)."""
    folder = copy_model(exported, tmp_path / "q")
    with pytest.raises(ModelError, match="model.int8.onnx quantised from these weights"):
        load_model(folder, runtime="onnx-int8")
    entry = quantize_model_folder(folder, [synthetic_case(seed=s) for s in (5, 6)], ["s5", "s6"])
    card = json.loads((folder / "model_card.json").read_text())
    assert card["onnx_int8"] == entry and entry["calibration_cases"] == ["s5", "s6"]
    assert entry["onnx_sha256"] == card["onnx"]["sha256"] and entry["calibration_slices"] > 0
    assert load_model(folder).runtime == "onnxruntime"
    q = load_model(folder, runtime="onnx-int8")
    assert q.runtime == "onnxruntime-int8" and q.sha256 == load_model(folder).sha256
    case = synthetic_case(seed=4)
    a, b = predict_case(q, case), predict_case(load_model(folder), case)
    assert a.labels.shape == b.labels.shape
    assert a.model_name == "q (int8 network)" and b.model_name == "q"  # shown on the page and in the PDF
    assert float(np.abs(a.probabilities.astype(np.float32) - b.probabilities.astype(np.float32)).mean()) < 0.05
    with open(folder / INT8_NAME, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="model.int8.onnx"):
        load_model(folder, runtime="onnx-int8")


def test_int8_needs_an_export_and_calibration(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="expected calibration slices"):
        quantize_int8(copy_model(exported, tmp_path / "a"), [])
    bare = tmp_path / "b"
    bare.mkdir()
    with pytest.raises(ModelError, match="expected model.onnx"):
        quantize_int8(bare, [np.zeros((1, 32, 32, 4), np.float32)])


def test_export_of_a_folder_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="expected model.keras"):
        export_model_folder(tmp_path)


def test_onnx_inference_does_not_import_tensorflow(exported: Path) -> None:
    script = (
        "import sys\n"
        "from core.engine.model import load_model\n"
        "from core.engine.inference import predict_case\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_inference import synthetic_case\n"
        f"loaded = load_model({str(exported)!r})\n"
        "pred = predict_case(loaded, synthetic_case())\n"
        "print(loaded.runtime, pred.labels.shape == (24, 24, 6), 'tensorflow' in sys.modules, 'keras' in sys.modules,\n"
        "      'scipy.ndimage' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=config.PROJECT_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # nor scipy.ndimage (0.17 s of import): components come from core.analysis.metrics.label_components
    assert out.stdout.split()[-5:] == ["onnxruntime", "True", "False", "False", "False"], out.stdout


def test_shipped_model_onnx_matches_keras_on_a_real_case(shared_data: Path) -> None:
    """The equivalence the issue asks for: labels identical on >= 99.9% of voxels, probabilities within 1e-3."""
    from core.data.cases import discover_cases, load_case

    model_dir = config.PROJECT_ROOT / "models" / "unet2d_default"
    if not (model_dir / ONNX_NAME).is_file():
        pytest.skip("the shipped model has no model.onnx")
    onnx = load_model(model_dir)
    assert onnx.runtime == "onnxruntime"
    keras = load_model(model_dir, runtime="tensorflow")
    ref = next(r for r in discover_cases(shared_data / "brats" / "train") if r.case_id == "BraTS2021_00000")
    case = load_case(ref)
    a, b = predict_case(onnx, case), predict_case(keras, case)
    assert np.mean(a.labels == b.labels) >= 0.999
    diff = np.abs(a.probabilities.astype(np.float32) - b.probabilities.astype(np.float32))
    assert float(diff.max()) <= 1e-3


def test_export_cli_int8_calibrates_on_the_models_training_cases(exported: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``export MODEL --int8 --data FOLDER --skip-fp32`` finds split.json's training cases in FOLDER; without
    --data, or with none of them there, one error line and status 2."""
    from conftest import make_case_dir

    from core.__main__ import main

    folder = copy_model(exported, tmp_path / "m")
    assert main(["export", str(folder), "--int8"]) == 2
    assert "expected --data FOLDER" in capsys.readouterr().err
    data = tmp_path / "data"
    make_case_dir(data, case_id="BraTS2021_00011")
    (folder / "split.json").write_text(json.dumps({"train": ["BraTS2021_00099"], "val": [], "test": []}))
    assert main(["export", str(folder), "--int8", "--data", str(data), "--skip-fp32"]) == 2
    assert "found none of 1" in capsys.readouterr().err
    (folder / "split.json").write_text(json.dumps({"train": ["BraTS2021_00011"], "val": [], "test": []}))
    assert main(["export", str(folder), "--int8", "--data", str(data), "--skip-fp32"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "onnx" not in out and out["onnx_int8"]["calibration_cases"] == ["BraTS2021_00011"]
    assert load_model(folder, runtime="onnx-int8").runtime == "onnxruntime-int8"
