"""core/data/roots.py: the allowed data roots and the resolver of user-chosen folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import config
from core.data import roots
from core.errors import BratsViewerError, DataFolderError


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """root/ (allowed, with train/ holding a case folder and a link out), secret/ (outside every root)."""
    root = tmp_path / "root"
    (root / "train" / "case1").mkdir(parents=True)
    (root / "flat").mkdir()
    secret = tmp_path / "secret"
    (secret / "caseX").mkdir(parents=True)
    (root / "train" / "link_out").symlink_to(secret, target_is_directory=True)
    (root / "link_in").symlink_to(root / "train", target_is_directory=True)
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(roots.SERVER_CONFIG_ENV, str(tmp_path / "no-server.toml"))
    monkeypatch.setenv(roots.ROOTS_ENV, str(root))
    return {"root": root.resolve(), "secret": secret.resolve(), "tmp": tmp_path}


def test_defaults_are_the_demo_and_the_start_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(roots.ROOTS_ENV, raising=False)
    monkeypatch.setenv(roots.SERVER_CONFIG_ENV, str(tmp_path / "absent.toml"))
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    assert roots.data_roots() == (config.DEMO_DATA_DIR.resolve(),)
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path))
    assert roots.data_roots() == (config.DEMO_DATA_DIR.resolve(), tmp_path.resolve())
    assert list(roots.picker_folders()) == ["demo", tmp_path.name]  # the start folder's own name


def test_env_and_settings_file_add_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for p in (a, b, c):
        p.mkdir()
    settings = tmp_path / "server.toml"
    settings.write_text(f'data_roots = ["{c}"]\nupload_ttl_minutes = 15\n')
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(roots.ROOTS_ENV, f"{a}{os.pathsep}{b}{os.pathsep}")
    monkeypatch.setenv(roots.SERVER_CONFIG_ENV, str(settings))
    assert roots.data_roots() == (config.DEMO_DATA_DIR.resolve(), a, b, c)
    assert roots.upload_ttl_minutes() == 15.0
    monkeypatch.setenv("BRATS_UPLOAD_TTL_MINUTES", "-3")  # nonsense gives the default
    assert roots.upload_ttl_minutes() == roots.DEFAULT_UPLOAD_TTL_MINUTES


def test_a_folder_inside_a_root_resolves(tree: dict[str, Path]) -> None:
    assert roots.resolve_folder(str(tree["root"] / "train")) == tree["root"] / "train"
    assert roots.resolve_folder(tree["root"]) == tree["root"]
    # a link that stays inside the root is allowed and resolved to its target
    assert roots.resolve_folder(str(tree["root"] / "link_in")) == tree["root"] / "train"


def test_a_symlink_out_of_a_root_is_refused(tree: dict[str, Path]) -> None:
    with pytest.raises(DataFolderError, match="inside the allowed data roots"):
        roots.resolve_folder(str(tree["root"] / "train" / "link_out"))
    with pytest.raises(DataFolderError, match="inside the allowed data roots"):
        roots.resolve_folder(str(tree["root"] / "train" / "link_out" / "caseX"))


@pytest.mark.parametrize("rel", ["../secret", "train/../../secret", "train/../../secret/caseX", ".."])
def test_dot_dot_out_of_a_root_is_refused(tree: dict[str, Path], rel: str) -> None:
    with pytest.raises(DataFolderError, match="inside the allowed data roots"):
        roots.resolve_folder(f"{tree['root']}/{rel}")


def test_dot_dot_that_stays_inside_is_collapsed(tree: dict[str, Path]) -> None:
    assert roots.resolve_folder(f"{tree['root']}/flat/../train") == tree["root"] / "train"


@pytest.mark.parametrize("path", ["/", "/etc", "/tmp", str(Path.home())])
def test_absolute_paths_outside_are_refused(tree: dict[str, Path], path: str) -> None:
    with pytest.raises(DataFolderError):
        roots.resolve_folder(path)


def test_absolute_path_of_the_outside_folder_is_refused(tree: dict[str, Path]) -> None:
    with pytest.raises(DataFolderError, match="inside the allowed data roots"):
        roots.resolve_folder(str(tree["secret"]))


@pytest.mark.parametrize("rel", ["train", "../secret", "~/", "~root", ""])
def test_relative_and_home_paths_are_refused(tree: dict[str, Path], rel: str) -> None:
    with pytest.raises(DataFolderError):
        roots.resolve_folder(rel)


@pytest.mark.parametrize("suffix", [
    "/%2e%2e/secret",  # percent-encoded ..
    "/%2E%2E%2Fsecret",
    "/%252e%252e/secret",  # double-encoded
    "/train%00",  # encoded NUL
    "/train\x00/../../secret",  # raw NUL
    "/..\\..\\secret",  # backslashes
    "/\uff0e\uff0e/secret",  # fullwidth dots (NFKC gives "..")
    "/train\n",  # control character
])
def test_encoded_variants_are_refused(tree: dict[str, Path], suffix: str) -> None:
    with pytest.raises(DataFolderError):
        roots.resolve_folder(f"{tree['root']}{suffix}")


def test_non_text_is_refused(tree: dict[str, Path]) -> None:
    with pytest.raises(DataFolderError, match="got bytes"):
        roots.resolve_folder(os.fsencode(str(tree["root"])))  # type: ignore[arg-type]
    with pytest.raises(DataFolderError, match="folder path"):
        roots.resolve_folder(42)  # type: ignore[arg-type]


def test_a_root_that_does_not_exist_allows_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "gone"
    monkeypatch.setenv(roots.ROOTS_ENV, str(missing))
    monkeypatch.setenv(roots.SERVER_CONFIG_ENV, str(tmp_path / "absent.toml"))
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    assert missing not in roots.data_roots()
    with pytest.raises(DataFolderError):
        roots.resolve_folder(str(missing))
    with pytest.raises(DataFolderError, match="no root|at least one"):
        roots.resolve_folder(str(missing), roots=[missing])
    # a relative root is never allowed either
    assert roots.data_roots(roots=["relative/root"]) == ()


def test_a_missing_folder_inside_a_root(tree: dict[str, Path]) -> None:
    with pytest.raises(DataFolderError, match="existing folder"):
        roots.resolve_folder(str(tree["root"] / "nope"))
    assert roots.resolve_folder(str(tree["root"] / "nope"), must_exist=False) == tree["root"] / "nope"


def test_a_root_that_is_a_symlink_is_its_target(tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    alias = tree["tmp"] / "alias"
    alias.symlink_to(tree["root"], target_is_directory=True)
    monkeypatch.setenv(roots.ROOTS_ENV, str(alias))
    assert roots.resolve_folder(str(alias / "train")) == tree["root"] / "train"
    with pytest.raises(DataFolderError):
        roots.resolve_folder(str(alias / "train" / "link_out"))


def test_errors_are_project_errors(tree: dict[str, Path]) -> None:
    with pytest.raises(BratsViewerError):
        roots.resolve_folder("/etc")
    assert issubclass(DataFolderError, ValueError)


def test_picker_offers_roots_and_collections_never_links_out(tree: dict[str, Path]) -> None:
    options = roots.picker_folders()
    assert options["demo"] == config.DEMO_DATA_DIR.resolve()
    assert options["root"] == tree["root"]
    assert options["root/train"] == tree["root"] / "train"  # holds a case folder
    assert "root/flat" not in options  # no sub-folder: a case folder, not a collection
    assert all(p == tree["root"] or tree["root"] in p.parents or p == options["demo"] for p in options.values())
    assert roots.folder_label(tree["root"] / "train", options) == "root/train"
    assert roots.folder_label(tree["secret"], options) is None


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../x", "%2e%2e", "a\x00b", ".", ""])
def test_resolve_under_refuses_names_that_leave_the_output_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataFolderError):
        roots.resolve_under(tmp_path, name)


def test_resolve_under(tmp_path: Path) -> None:
    assert roots.resolve_under(tmp_path, "run_1") == tmp_path.resolve() / "run_1"
    (tmp_path / "out").symlink_to("/", target_is_directory=True)
    with pytest.raises(DataFolderError):
        roots.resolve_under(tmp_path, "out")
    with pytest.raises(DataFolderError, match="existing output root"):
        roots.resolve_under(tmp_path / "missing", "run")


def test_model_folders_are_confined_to_the_model_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    (models / "m1").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere" / "m2"
    elsewhere.mkdir(parents=True)
    monkeypatch.setattr(config, "MODELS_DIR", models)
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    monkeypatch.delenv(roots.MODEL_ROOTS_ENV, raising=False)
    monkeypatch.setenv(roots.SERVER_CONFIG_ENV, str(tmp_path / "absent.toml"))
    assert roots.resolve_model_folder(str(models / "m1")) == (models / "m1").resolve()
    assert roots.resolve_model_folder(str(models / "not_yet")) == (models / "not_yet").resolve()  # may be missing
    for bad in (str(elsewhere), f"{models}/../elsewhere/m2", "m1", f"{models}/%2e%2e/elsewhere"):
        with pytest.raises(DataFolderError):
            roots.resolve_model_folder(bad)
    monkeypatch.setenv(roots.MODEL_ROOTS_ENV, str(elsewhere.parent))  # the administrator adds a model root
    assert roots.resolve_model_folder(str(elsewhere)) == elsewhere.resolve()


def test_the_example_settings_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """server.toml.example (the recipe of docs/deployment.md) parses, and its keys are the ones roots reads."""
    monkeypatch.setenv(roots.SERVER_CONFIG_ENV, str(config.PROJECT_ROOT / "server.toml.example"))
    monkeypatch.delenv("BRATS_UPLOAD_TTL_MINUTES", raising=False)
    settings = roots.server_settings()
    assert set(settings) == {"data_roots", "model_roots", "upload_ttl_minutes", "root_labels"}
    assert roots.upload_ttl_minutes() == float(settings["upload_ttl_minutes"])
    paths = [p["path"] if isinstance(p, dict) else p for p in settings["data_roots"]]
    assert [str(p) for p in roots.configured_roots()[-len(paths):]] == paths


def test_a_sibling_folder_sharing_the_root_name_as_prefix_is_outside(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Containment is by path parts, not string prefix: /x/brats_secret is not inside the root /x/brats."""
    root, sibling = tmp_path / "brats", tmp_path / "brats_secret"
    (root / "case1").mkdir(parents=True)
    (sibling / "caseX").mkdir(parents=True)
    (root / "link_to_sibling").symlink_to(sibling, target_is_directory=True)
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(roots.SERVER_CONFIG_ENV, str(tmp_path / "no-server.toml"))
    monkeypatch.setenv(roots.ROOTS_ENV, str(root))
    assert roots.resolve_folder(str(root / "case1")) == (root / "case1").resolve()
    for bad in (sibling, sibling / "caseX", root / "link_to_sibling", f"{root}/../brats_secret"):
        with pytest.raises(DataFolderError):
            roots.resolve_folder(str(bad))
    with pytest.raises(DataFolderError):
        roots.resolve_under(root, "link_to_sibling/out.nii.gz")
    assert all("brats_secret" not in str(p) for p in roots.picker_folders().values())
    assert "link_to_sibling" not in roots.subfolders(root)
    models, models_secret = tmp_path / "models", tmp_path / "models_secret"
    (models_secret / "m").mkdir(parents=True)
    models.mkdir()
    monkeypatch.setattr(config, "MODELS_DIR", models)
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    monkeypatch.delenv(roots.MODEL_ROOTS_ENV, raising=False)
    with pytest.raises(DataFolderError):
        roots.resolve_model_folder(str(models_secret / "m"))


def test_error_messages_are_redacted_of_server_paths(tree: dict[str, Path]) -> None:
    """A refusal echoes the path it was given; what a web user sees names the root's label instead."""
    gone = tree["root"] / "train" / "gone"
    with pytest.raises(DataFolderError) as err:
        roots.resolve_folder(str(gone))
    shown = roots.redact_paths(str(err.value))
    assert str(tree["tmp"]) not in shown and "<root>/train/gone" in shown
    assert roots.redact_paths(f"in {config.PROJECT_ROOT}/models") == "in <app>/models"
