"""The shared notebook-config base and parameter rules (lgl_helpers.config)."""

from dataclasses import dataclass

import pytest

from lgl_helpers.config import NotebookConfig, check_gate, check_n_clusters


@dataclass
class _Cfg(NotebookConfig):
    n_clusters: int = 4
    gate: float = 1.0

    def validate(self) -> None:
        check_n_clusters(self.n_clusters, name=self.name_of("n_clusters"))
        check_gate(self.gate, name=self.name_of("gate"))


def test_from_parameters_takes_the_fields_and_validates_once_built():
    namespace = {"n_clusters": 3, "gate": 2.5, "unrelated": object()}
    assert _Cfg.field_names() == ["n_clusters", "gate"]
    assert _Cfg.from_parameters(namespace) == _Cfg(3, 2.5)
    with pytest.raises(ValueError, match=r"_Cfg.n_clusters=1 must be an integer >= 2"):
        _Cfg.from_parameters({**namespace, "n_clusters": 1})
    with pytest.raises(KeyError, match="gate"):
        _Cfg.from_parameters({"n_clusters": 3})


@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf"), "2", True])
def test_one_gate_rule(value):
    with pytest.raises(ValueError, match=r"^gate=.* must be a finite number >= 0$"):
        check_gate(value)


def test_one_n_clusters_rule_with_the_list_size():
    assert check_n_clusters(5, 5) == 5
    for bad in (0, 1, 2.0, True):
        with pytest.raises(ValueError, match="must be an integer >= 2"):
            check_n_clusters(bad)
    with pytest.raises(ValueError, match=r"^n_clusters=6 is larger than the number of utterances N=5 in a.txt$"):
        check_n_clusters(6, 5, source="a.txt")
