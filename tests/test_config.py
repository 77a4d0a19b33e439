"""Configs are typed and frozen; every mistake names the key."""
import dataclasses
from pathlib import Path

import pytest

from ssgan.config import Config, flatten, from_dict, load_config, parse_override, replace
from ssgan.errors import ConfigError


def test_defaults_and_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mode: supervised\ntrain:\n  epochs: 3\n  lr: 1e-4\nmodel:\n  d_hidden: [8, 4]\n")
    cfg = load_config(path)
    assert cfg.mode == "supervised" and cfg.train.epochs == 3
    assert cfg.train.lr == 1e-4  # PyYAML reads 1e-4 as a string; a float key accepts it
    assert cfg.model.d_hidden == (8, 4)
    assert cfg.train.batch_size == Config().train.batch_size


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.epochs = 5  # type: ignore[misc]


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(None, ["train.epochs=7", "data.labels=null", "tracking.uri=http://x:1", "data.download=true"])
    assert cfg.train.epochs == 7 and cfg.data.labels is None
    assert cfg.tracking.uri == "http://x:1" and cfg.data.download is True


def test_unknown_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as e:
        from_dict({"train": {"epoch": 3}})
    assert "train.epoch" in str(e.value) and "epochs" in str(e.value) and "batch_size" in str(e.value)
    with pytest.raises(ConfigError, match="'optimizer'"):
        from_dict({"optimizer": {}})


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"data": {"download": "yes"}}, "data.download"),
        ({"data": {"name": "imagenet"}}, "data.name"),
        ({"mode": "gan"}, "mode"),
        ({"model": {"d_hidden": 5}}, "model.d_hidden"),
        ({"train": 3}, "train"),
    ],
)
def test_wrong_type_names_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(raw)


@pytest.mark.parametrize(
    "key,value",
    [("train.epochs", 0), ("train.lr", 0.0), ("data.labels", 0), ("train.ema_decay", 1.0),
     ("train.device", "tpu"), ("data.test_fraction", 1.5), ("model.d_hidden", [])],
)
def test_out_of_range_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        replace(Config(), **{key: value})


def test_set_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/c.yaml")


def test_flatten_gives_dotted_keys():
    flat = flatten(Config())
    assert flat["train.epochs"] == Config().train.epochs
    assert flat["model.d_hidden"] == list(Config().model.d_hidden)


def test_shipped_configs_load():
    shipped = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(shipped) >= 10
    for path in shipped:  # every shipped config
        load_config(path)
    mnist = load_config("configs/mnist-100.yaml")
    assert (mnist.data.labels, mnist.train.batch_size, mnist.train.lr, mnist.train.epochs) == (100, 100, 3e-3, 300)
    assert mnist.train.gen_loss == "feature_matching"


def test_default_learning_rate_depends_on_the_architecture():
    assert load_config(None, ["model.arch=conv"]).train.lr == 1e-4
    assert load_config(None, ["model.arch=mlp"]).train.lr == 3e-3
    assert load_config(None, ["model.arch=conv", "train.lr=0.002"]).train.lr == 0.002
    resolved = flatten(load_config(None, ["model.arch=conv"]))
    assert resolved["train.lr"] == 1e-4  # what MLflow records is the value used



@pytest.mark.parametrize("text,message", [
    ("train:\n  epochs: 3\n  lr: [0.1, 0.2\ndata:\n  labels: 20\n", "line 4, column 5: expected ',' or ']', but got ':'"),
    ("mode: ssgan\ntrain: epochs: 3\n", "line 2, column 14: mapping values are not allowed here"),
])
def test_invalid_yaml_names_the_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"config file {str(path)!r} is not valid YAML: {message}"  # line and column from 1
