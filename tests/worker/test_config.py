"""Config: defaults < TOML file < --set, typed, with one-line errors naming the key."""

import pytest

from mpinet.worker.config import Config, config_hash, load_config, model_spec, to_toml


def test_defaults_are_the_main_job():
    cfg = load_config()
    assert cfg == Config()
    assert (cfg.model.name, cfg.optim.name, cfg.train.batch_size) == ("simple_cnn", "adam", 100)
    assert model_spec(cfg) == {"name": "simple_cnn", "init": "he"}  # None = the book's default


def test_file_then_overrides_win_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nname = "sgd"\nlr = 0.5\n[model]\nname = "mlp"\nhidden = [10]\n')
    cfg = load_config(path, ["optim.lr=0.01", "train.epochs=7", "data.order=global"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.train.epochs) == ("sgd", 0.01, 7)
    assert cfg.data.order == "global"  # a bare word is a string
    assert model_spec(cfg) == {"name": "mlp", "init": "he", "hidden": [10]}


def test_resolved_toml_round_trips(tmp_path):
    cfg = load_config(None, ["model.hidden=[50, 50]", "model.name='mlp'", "optim.lr=3"])
    assert cfg.optim.lr == 3.0 and isinstance(cfg.optim.lr, float)  # ints are fine for floats
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg
    assert config_hash(load_config(path)) == config_hash(cfg)
    assert config_hash(load_config(None, ["train.seed=1"])) != config_hash(cfg)


@pytest.mark.parametrize("override,message", [
    ("optim.lerning_rate=1", r"unknown config key 'optim.lerning_rate' in --set; valid keys: "
                             r"optim.name, optim.lr"),
    ("optim.lr=abc", r"config key 'optim.lr' must be float, got 'abc'"),
    ("train.epochs=0", r"config key 'train.epochs' must be > 0, got 0"),
    ("train.epochs=1.5", r"config key 'train.epochs' must be int, got 1.5"),
    ("data.augment=1", r"config key 'data.augment' must be bool, got 1"),
    ("data.order=random", r"config key 'data.order' must be one of 'shard', 'global'"),
    ("foo.bar=1", r"unknown config section \[foo\] in --set; valid sections: data, model"),
    ("lr=1", r"--set expects section.key=value, got 'lr=1'"),
    ("metrics.port=70000", r"metrics.port"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ValueError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.toml does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = 1")
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        load_config(bad)
    bad.write_text("[train]\nepochs = 'three'\n")
    with pytest.raises(ValueError, match=r"'train.epochs' must be int, got 'three'"):
        load_config(bad)


def test_srun_without_an_mpi_plugin_is_refused():
    from mpinet.worker.train import check_launcher

    with pytest.raises(ValueError, match=r"Slurm started 4 tasks, but none is an MPI rank"):
        check_launcher({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "1"})
    check_launcher({"SLURM_STEP_NUM_TASKS": "4", "PMI_RANK": "1"})  # srun --mpi=pmi2
    check_launcher({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"})  # the batch script itself
    check_launcher({})
