"""A factory's code is what it imports: its module, the local modules it imports (transitively, by
reading their imports), and the versions of the installed distributions they import."""

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
