"""Config: defaults < TOML file < --set, typed, with one-line errors naming the key."""

import pytest

from mpinet.worker.config import (
    Config,
    config_hash,
    load_config,
    model_spec,
    resolved,
    to_toml,
)


def test_defaults_are_the_main_job():
    cfg = load_config()
    assert cfg == Config()
    assert (cfg.model.name, cfg.optim.name, cfg.train.batch_size) == ("simple_cnn", "adam", 100)
    # Unset keys take the book's values, spelled out; init is He (README says why).
    assert model_spec(cfg) == {
        "name": "simple_cnn",
        "init": "he",
        "filters": 30,
        "filter_size": 5,
        "pad": 0,
        "stride": 1,
        "hidden": 100,
        "batchnorm": False,
        "dropout": 0.0,
        "weight_decay": 0.0,
        "input_shape": [1, 28, 28],
        "output_size": 10,
    }


def test_file_then_overrides_win_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nname = "sgd"\nlr = 0.5\n[model]\nname = "mlp"\nhidden = [10]\n')
    cfg = load_config(path, ["optim.lr=0.01", "train.epochs=7", "data.order=global"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.train.epochs) == ("sgd", 0.01, 7)
    assert cfg.data.order == "global"  # a bare word is a string
    assert model_spec(cfg)["hidden"] == [10] and model_spec(cfg)["activation"] == "relu"


def test_resolved_toml_round_trips(tmp_path):
    cfg = load_config(None, ["model.hidden=[50, 50]", "model.name='mlp'", "optim.lr=3"])
    assert cfg.optim.lr == 3.0 and isinstance(cfg.optim.lr, float)  # ints are fine for floats
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == resolved(cfg)  # every model key spelled out in the file
    assert config_hash(load_config(path)) == config_hash(cfg)
    assert config_hash(load_config(None, ["train.seed=1"])) != config_hash(cfg)


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "optim.lerning_rate=1",
            r"config key optim.lerning_rate \(--set\): unknown; expected one "
            r"of optim.name, optim.lr, .*; did you mean optim.lr\?$",
        ),
        (
            "train.epoch=3",
            r"config key train.epoch \(--set\): unknown; .*did you mean train.epochs",
        ),
        ("optim.lr=abc", r"config key optim.lr \(--set\): got 'abc'; expected a number"),
        ("train.epochs=0", r"config key train.epochs: got 0; expected a value > 0"),
        (
            "train.epochs=1.5",
            r"config key train.epochs \(--set\): got 1.5; expected a whole number",
        ),
        ("data.augment=1", r"config key data.augment \(--set\): got 1; expected true or false"),
        (
            "data.order=random",
            r"config key data.order: got 'random'; expected one of 'shard', "
            r"'global'",
        ),
        ("data.prefetch=yes", r"data.prefetch: got 'yes'; expected one of 'auto', true, false"),
        ("foo.bar=1", r"config section \[foo\] \(--set\): unknown; expected one of data, model"),
        ("lr=1", r"--set lr=1: not section.key=value; expected e.g. --set train.epochs=5"),
        ("metrics.port=70000", r"metrics.port"),
        (
            "model.hidden=[100]",
            r"config key model.hidden: got \[100\]; expected for simple_cnn: "
            r"one layer size",
        ),
        (
            "model.dropout=1.5",
            r"config key model.dropout: got 1.5; expected for simple_cnn: a rate",
        ),
        (
            "model.filters=[8, 8]",
            r"config key model.filters: got \[8, 8\]; expected for "
            r"simple_cnn: a filter count",
        ),
        (
            "model.filter_size=40",
            r"config key model.filter_size: got 40 .*expected a convolution "
            r"leaving",
        ),
        (
            "model.init='lecun'",
            r"config key model.init: got 'lecun'; expected for simple_cnn: one "
            r"of relu, he, sigmoid, xavier or a std > 0",
        ),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ValueError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"config file .*missing.toml: no such file; "
        r"expected a .toml file; pass an existing",
    ):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = 1")
    with pytest.raises(
        ValueError,
        match=r"config file .*bad.toml: not valid TOML \(.*\); "
        r"expected sections",
    ):
        load_config(bad)
    bad.write_text("[train]\nepochs = 'three'\n")
    with pytest.raises(
        ValueError,
        match=r"config key train.epochs \(config file .*bad.toml\): "
        r"got 'three'; expected a whole number",
    ):
        load_config(bad)


def test_a_resume_may_change_only_the_resumable_keys():
    # an earlier version's run stored the retired fault-injection keys: they are dropped
    stored = to_toml(load_config(None, ["model.name='mlp'"]))
    stored = stored.replace("[train]\n", '[train]\nfail_step = 3\nfail_kind = "kill"\n')
    base = (stored, "run")
    longer = load_config(None, ["train.epochs=9", "model.name='mlp'"], base=base)
    assert longer.train.epochs == 9 and longer.model.name == "mlp"
    assert not hasattr(longer.train, "fail_step")
    with pytest.raises(
        ValueError,
        match=r"config key optim.lr: 0.5 on resume, the run has "
        r"0.001 \(run\); expected it unchanged: it alters "
        r"the optimizer state; start a new run",
    ):
        load_config(None, ["optim.lr=0.5"], base=base)


def test_srun_without_an_mpi_plugin_is_refused():
    from mpinet.worker.train import check_launcher

    with pytest.raises(ValueError, match=r"Slurm started 4 tasks, but none is an MPI rank"):
        check_launcher({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "1"})
    check_launcher({"SLURM_STEP_NUM_TASKS": "4", "PMI_RANK": "1"})  # srun --mpi=pmi2
    check_launcher({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"})  # the batch script itself
    check_launcher({})
