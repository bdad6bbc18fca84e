import pytest

from sparkrec.config import ConfigError, config_reference, load_config, parse_overrides


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides_are_typed(tmp_path):
    cfg = load_config(write(tmp_path, "lake: /data/lake\ngenerate:\n  num_rows: 10\n"),
                      ["generate.num_rows=20", "input.columns.rating=null", "spark.conf.spark.x=1"])
    assert cfg.lake == "/data/lake"
    assert cfg.generate.num_rows == 20
    assert cfg.input.columns.rating is None
    assert cfg.spark.conf == {"spark.x": 1}


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "generate:\n  num_rowz: 10\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*unknown key 'generate\.num_rowz'"):
        load_config(path)


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, "generate:\n  num_rows: ten\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*'generate\.num_rows'.*'ten'"):
        load_config(path)


def test_bad_choice_and_range_rejected():
    with pytest.raises(ConfigError, match="input.format"):
        load_config(None, ["input.format=xml"])
    with pytest.raises(ConfigError, match="generate.dirt_rate"):
        load_config(None, ["generate.dirt_rate=0.9"])
    with pytest.raises(ConfigError, match="split=validation needs source=model"):
        load_config(None, ["evaluate.split=validation", "evaluate.source=scores"])


def test_text_keys_take_the_text_as_written():
    cfg = load_config(None, ["name=0123", "lake=no", "input.columns.user=1", "input.path=2024",
                             "input.columns.rating=null", "train.amp=off", "content.path='007'"])
    assert (cfg.name, cfg.lake, cfg.input.columns.user, cfg.input.path) == ("0123", "no", "1", "2024")
    assert cfg.input.columns.rating is None and cfg.train.amp == "off" and cfg.content.path == "007"
    # Other keys still parse as YAML, and a bad value still names its key.
    assert load_config(None, ["train.epochs=5", "evaluate.k=[5, 10]"]).evaluate.k == [5, 10]
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=five"])


def test_one_value_for_a_list_key_is_a_list_of_one():
    cfg = load_config(None, ["evaluate.k=10", "evaluate.baselines=ease", "explain.users=0123"])
    assert (cfg.evaluate.k, cfg.evaluate.baselines, cfg.explain.users) == ([10], ["ease"], ["0123"])
    assert load_config(None, ["explain.users=null"]).explain.users is None


def test_exponent_floats_read_as_yaml_1_2_does(tmp_path):
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001
    cfg = load_config(write(tmp_path, "train:\n  lr: 5E-4\n  weight_decay: 1e-6\n"))
    assert (cfg.train.lr, cfg.train.weight_decay) == (0.0005, 1e-6)


def test_off_means_off_although_yaml_reads_it_as_false(tmp_path):
    assert load_config(write(tmp_path, "train:\n  amp: off\n")).train.amp == "off"
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(None, ["train.amp=true"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_overrides(["generate.num_rows"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("/no/such/file.yaml")


def test_every_key_documented():
    ref = config_reference()
    for line in ref.splitlines():
        if line.startswith("- `"):
            assert line.split("): ", 1)[1].strip(), f"undocumented key: {line}"


@pytest.mark.parametrize("name", ["demo", "movielens-explicit", "movielens-implicit"])
def test_the_shipped_configs_load(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / f"{name}.yaml")
    if name == "movielens-implicit":  # what bench/README.md's fifth test read measured
        t = cfg.train
        assert (t.model, t.epochs, t.average_half_life, t.refit, cfg.sequence.members) == ("sequence", 20, 2.0, True, 3)
