"""A factory's code is what it imports: its module, the local modules it imports (transitively, by
reading their imports), and the versions of the installed distributions they import."""

import sys
import textwrap

import pytest

from builder.code import factory_code
from builder.errors import MdbuildError
from builder.versions import library_version


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture(autouse=True)
def _own_sys_path(monkeypatch):
    """factory_code puts the work directory first on sys.path, as a build does; here a test's tree
    (one holds a package named `profile`) must not shadow modules for the rest of the session."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def user_tree(tmp_path):
    _write(tmp_path, {
        "mymodels/__init__.py": "",
        "mymodels/lstm.py": """
            import numpy as np
            from sklearn import datasets  # a distribution named unlike its module: scikit-learn
            from .layers import Block

            def build():
                import onnx  # imported where it is used: still code the factory runs
                from mymodels.util import helper
                return Block()
        """,
        "mymodels/layers.py": "import json\nclass Block: pass\n",
        "mymodels/util/__init__.py": "from .deep import helper\n",
        "mymodels/util/deep.py": "def helper(): pass\n",
        "mymodels/unrelated.py": "import yaml\n",
    })
    return tmp_path


def test_a_factory_is_its_module_and_what_it_imports(user_tree):
    code = factory_code("mymodels.lstm.build", user_tree, "model.factory", "factory")
    assert sorted(code.files) == [f"factory code mymodels/{name}" for name in
                                  ("__init__.py", "layers.py", "lstm.py", "util/__init__.py", "util/deep.py")]
    assert code.versions == {name: library_version(name) for name in ("numpy", "onnx", "scikit-learn")}  # json: stdlib


def test_an_unrelated_module_in_the_package_is_not_its_code(user_tree):
    before = factory_code("mymodels.lstm.build", user_tree, "model.factory", "factory")
    (user_tree / "mymodels" / "new_experiment.py").write_text("import torch\n")
    after = factory_code("mymodels.lstm.build", user_tree, "model.factory", "factory")
    assert after == before and "torch" not in after.versions


def test_an_installed_factory_is_its_distribution_version(tmp_path):
    code = factory_code("torchvision.models.resnet18", tmp_path, "model.factory", "factory")
    assert code.files == {} and code.versions == {"torchvision": library_version("torchvision")}


def test_a_missing_module_names_the_key(tmp_path):
    with pytest.raises(MdbuildError) as failure:
        factory_code("nowhere.build", tmp_path, "evaluation.metric", "metric")
    assert failure.value.where == "evaluation.metric" and "cannot find the module of 'nowhere.build'" in failure.value.what


def _library(site, name: str, editable: bool):
    _write(site, {f"{name}/__init__.py": "", f"{name}/models.py": "import numpy\ndef build(): pass\n",
                  f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n"})
    if editable:
        (site / f"{name}-0.1.dist-info" / "direct_url.json").write_text(
            f'{{"url": "file://{site}", "dir_info": {{"editable": true}}}}')


def test_an_editable_library_is_its_files_and_an_installed_one_its_version(tmp_path, monkeypatch):
    site = tmp_path / "src"
    _library(site, "mdb_editable_lib", editable=True)
    _library(site, "mdb_plain_lib", editable=False)
    monkeypatch.syspath_prepend(str(site))
    work = tmp_path / "work"
    work.mkdir()
    editable = factory_code("mdb_editable_lib.models.build", work, "model.factory", "factory")
    assert sorted(editable.files) == ["factory code mdb_editable_lib/__init__.py", "factory code mdb_editable_lib/models.py"]
    assert editable.versions == {"mdb_editable_lib": "0.1", "numpy": library_version("numpy")}
    plain = factory_code("mdb_plain_lib.models.build", work, "model.factory", "factory")
    assert plain.files == {} and plain.versions == {"mdb_plain_lib": "0.1"}


def test_a_local_package_named_like_a_stdlib_module_is_user_code(tmp_path):
    _write(tmp_path, {"profile/__init__.py": "", "profile/models.py": "def build(): pass\n"})  # profile: stdlib
    code = factory_code("profile.models.build", tmp_path, "model.factory", "factory")
    assert sorted(code.files) == ["factory code profile/__init__.py", "factory code profile/models.py"]
    assert factory_code("statistics.fmean", tmp_path, "evaluation.metric", "metric").files == {}  # the real stdlib
